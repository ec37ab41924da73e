"""Curve points of the metrics (report.html's plots) against scikit-learn and a brute-force sweep; their areas
are the metrics, exactly when every point is kept and within the stated bound when thinned."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from winclip.metrics import PixelMetricAccumulator, aupr, auroc, pixel_metrics
from winclip.metrics.curves import PLOT_CELLS, CurveThinner
from winclip.metrics.image import pr_curve, roc_curve
from winclip.metrics.pixel import PRO_MAX_FPR


def _scores(rng: np.random.Generator, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.random(n) < 0.3
    labels[:2] = (True, False)
    scores = rng.normal(size=n) + labels
    return (scores.round(1) if ties else scores), labels


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2)


@pytest.mark.parametrize("ties", [False, True])
def test_image_curves_equal_sklearn_and_integrate_to_the_metrics(ties):
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores, labels = _scores(rng, int(rng.integers(5, 200)), ties)
        roc = roc_curve(scores, labels)
        fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(roc.x, fpr, rtol=0, atol=1e-15)
        np.testing.assert_allclose(roc.y, tpr, rtol=0, atol=1e-15)
        assert _trapezoid(roc.x, roc.y) == pytest.approx(auroc(scores, labels), abs=1e-12)

        pr = pr_curve(scores, labels)
        precision, recall, _ = precision_recall_curve(labels, scores)
        n = recall.size  # every point in newer scikit-learn; older ones stop at the first of full recall
        assert n == pr.x.size or recall[0] == 1.0
        np.testing.assert_allclose(pr.x[:n], recall[::-1], rtol=0, atol=1e-15)
        np.testing.assert_allclose(pr.y[:n], precision[::-1], rtol=0, atol=1e-15)
        step_area = float(np.sum(np.diff(pr.x) * pr.y[1:]))  # drawstyle steps-pre
        assert step_area == pytest.approx(aupr(scores, labels), abs=1e-12)
        assert step_area == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_image_curves_need_both_labels():
    with pytest.raises(ValueError, match="ROC curve: no anomalous samples"):
        roc_curve(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="precision-recall curve: no anomalous samples"):
        pr_curve(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="ROC curve: no normal samples"):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 1]))


def _brute_pixel_curves(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and mean region overlap at every distinct threshold, from (0, 0), by brute force."""
    regions = []
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    fpr, tpr, overlap = [0.0], [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        fpr.append((predicted & ~masks).sum() / (~masks).sum())
        tpr.append((predicted & masks).sum() / masks.sum())
        overlap.append(np.mean([(predicted[i] & r).sum() / r.sum() for i, r in regions]))
    return np.array(fpr), np.array(tpr), np.array(overlap)


def _pixels(rng: np.random.Generator, n: int, size: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    masks = np.zeros((n, size, size), dtype=bool)
    masks[0, 2:6, 3:8] = True
    masks[1, 9:, :4] = True
    masks[1, 1:3, 10:13] = True
    maps = rng.random((n, size, size)).astype(np.float32) + 0.4 * masks
    if levels is not None:
        maps = (np.round(maps * levels) / levels).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("levels", [None, 12])
@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_pixel_curves_equal_brute_force_at_every_threshold(levels, chunk):
    rng = np.random.default_rng(5)
    maps, masks = _pixels(rng, 3, 14, levels)
    acc = PixelMetricAccumulator(chunk=chunk)
    acc.update(maps[:2], masks[:2])
    acc.update(maps[2:], masks[2:])
    curves = acc.compute_curves(cells=None)
    assert curves.metrics == acc.compute()
    assert curves.metrics == pytest.approx(pixel_metrics(maps, masks), abs=1e-12)
    fpr, tpr, overlap = _brute_pixel_curves(maps, masks)
    np.testing.assert_allclose(curves.roc.x, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curves.roc.y, tpr, rtol=0, atol=1e-12)
    inside = fpr <= PRO_MAX_FPR
    assert 3 < inside.sum() < fpr.size
    np.testing.assert_allclose(curves.pro.x[:-1], fpr[inside], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curves.pro.y[:-1], overlap[inside], rtol=0, atol=1e-12)
    k = int(inside.sum())  # the last point: the segment crossing max_fpr, cut there
    cut = overlap[k - 1] + (overlap[k] - overlap[k - 1]) * (PRO_MAX_FPR - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
    assert (curves.pro.x[-1], curves.pro.y[-1]) == (pytest.approx(PRO_MAX_FPR, abs=1e-15), pytest.approx(cut))
    assert _trapezoid(curves.roc.x, curves.roc.y) == pytest.approx(curves.metrics["pixel_auroc"], abs=1e-12)
    assert _trapezoid(curves.pro.x, curves.pro.y) / PRO_MAX_FPR == pytest.approx(curves.metrics["pixel_pro"], abs=1e-12)


@pytest.mark.parametrize("cells", [5, 50, PLOT_CELLS])
def test_thinned_pixel_curves_stay_within_the_bound(cells):
    rng = np.random.default_rng(11)
    maps, masks = _pixels(rng, 40, 64, None)  # 163,840 pixels, nearly all distinct scores
    acc = PixelMetricAccumulator(chunk=30_000)
    acc.update(maps, masks)
    exact = acc.compute()
    curves = acc.compute_curves(cells=cells)
    assert curves.metrics == exact  # the metrics never come from thinned points
    chunks = -(-maps.size // 30_000)
    for curve, x_max, area, metric in (
        (curves.roc, 1.0, _trapezoid(curves.roc.x, curves.roc.y), exact["pixel_auroc"]),
        (curves.pro, PRO_MAX_FPR, _trapezoid(curves.pro.x, curves.pro.y) / PRO_MAX_FPR, exact["pixel_pro"]),
    ):
        assert 10 < curve.x.size <= 2 * (2 * cells + 1) + chunks + 2
        assert (curve.x[0], curve.y[0]) == (0.0, 0.0)
        assert curve.x[-1] == pytest.approx(x_max)
        assert np.all(np.diff(curve.x) >= 0) and np.all(np.diff(curve.y) >= 0)
        assert abs(area - metric) <= 1.0 / cells
    assert (curves.roc.x[-1], curves.roc.y[-1]) == (1.0, 1.0)


def test_thinner_keeps_each_runs_ends_and_rejects_bad_cells():
    thinner = CurveThinner(cells=2)
    thinner.feed(np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8]), np.array([0.1, 0.1, 0.2, 0.2, 0.3, 0.3]))
    thinner.feed(np.array([0.9, 1.0]), np.array([0.9, 1.0]))
    curve = thinner.curve()
    # cells (floor(2x) + floor(2y)) from the start (0, 0): 0 | 0 0 0 1 1 1 | 2 4; kept: the first and last
    # point of each run, and each piece's last point
    np.testing.assert_array_equal(curve.x, [0.0, 0.3, 0.6, 0.8, 0.9, 1.0])
    np.testing.assert_array_equal(curve.y, [0.0, 0.2, 0.2, 0.3, 0.9, 1.0])
    with pytest.raises(ValueError, match="cells must be >= 1"):
        CurveThinner(cells=0)
