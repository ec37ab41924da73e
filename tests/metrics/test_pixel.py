"""Pixel-level metrics (winclip.metrics.pixel): PRO against a reference, exact accumulation in bounded memory."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from winclip.metrics import PixelMetricAccumulator, pixel_metrics, pro


def _sklearn_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.zeros_like(precision)
    np.divide(2 * precision * recall, precision + recall, out=f1, where=precision + recall > 0)
    return float(f1.max())


def _reference_pro(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float = 0.3) -> float:
    """PRO straight from its definition: every distinct threshold, each region's overlap, the FPR."""
    regions = []  # (image index, boolean region)
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    n_normal = sum(int((~m).sum()) for m in masks)
    fprs, pros = [0.0], [0.0]  # threshold above every score
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        predicted = [m >= t for m in maps]
        pros.append(np.mean([(predicted[i] & r).sum() / r.sum() for i, r in regions]))
        fprs.append(sum(int((p & ~m).sum()) for p, m in zip(predicted, masks, strict=True)) / n_normal)
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(zip(fprs, pros, strict=True)):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def _blob_masks(rng: np.random.Generator, shape: tuple[int, int, int], density: float) -> np.ndarray:
    return rng.random(shape) < density


def test_pro_hand_cases() -> None:
    # one region of 1 pixel, 2 normal pixels; the tie at 0.5 jumps to (FPR 0.5, PRO 1):
    # the curve (0,0)-(0.5,1)-(1,1) is 0.6 at FPR 0.3, area 0.3 * 0.6 / 2 = 0.09, / 0.3 = 0.3
    maps, masks = np.array([[[0.5, 0.5, 0.1]]]), np.array([[[1, 0, 0]]])
    assert pro(maps, masks) == pytest.approx(0.3)
    assert pro(maps, masks, max_fpr=1.0) == pytest.approx(0.25 + 0.5)
    # 8-connectivity: the mask is ONE region of 3 pixels (1/3 found at FPR 0); 4-connectivity would give 1/2
    maps = np.array([[[0.9, 0.5, 0.5], [0.5, 0.05, 0.05]]])
    masks = np.array([[[1, 0, 0], [0, 1, 1]]], dtype=bool)
    assert ndimage.label(masks[0], structure=np.ones((3, 3)))[1] == 1
    assert pro(maps, masks) == pytest.approx(1 / 3)
    assert _reference_pro(list(maps), list(masks)) == pytest.approx(1 / 3)


def _pro_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    one = np.zeros((1, 9, 9), dtype=bool)
    one[0, 2:5, 3:7] = True
    many = _blob_masks(rng, (1, 12, 12), 0.2)
    several = _blob_masks(rng, (4, 10, 10), 0.12)
    several[1] = False  # an all-normal image
    diagonal = np.zeros((2, 6, 6), dtype=bool)
    diagonal[0, 1, 1] = diagonal[0, 2, 2] = diagonal[1, 3, 4] = diagonal[1, 4, 3] = True
    whole = _blob_masks(rng, (3, 7, 7), 0.15)
    whole[0] = True  # an image without normal pixels
    masks = {"one": one, "many": many, "several": several, "diagonal": diagonal, "whole": whole}
    cases = {}
    for name, mask in masks.items():
        maps = (rng.random(mask.shape) + 0.5 * mask).astype(np.float32)
        cases[name] = (maps, mask)
        cases[name + "-ties"] = (np.round(maps, 1), mask)
    return cases


@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
@pytest.mark.parametrize("case", sorted(_pro_cases()))
def test_pro_matches_reference(case: str, max_fpr: float) -> None:
    maps, masks = _pro_cases()[case]
    assert sum(ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks) >= 1
    assert pro(maps, masks, max_fpr=max_fpr) == pytest.approx(
        _reference_pro(list(maps), list(masks), max_fpr), abs=1e-12
    )


def test_pro_errors() -> None:
    maps = np.random.default_rng(6).random((2, 4, 4))
    with pytest.raises(ValueError, match="no anomalous"):
        pro(maps, np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="no normal"):
        pro(maps, np.ones((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="max_fpr"):
        pro(maps, maps > 0.5, max_fpr=0.0)
    with pytest.raises(ValueError, match="max_fpr"):
        pro(maps, maps > 0.5, max_fpr=1.5)
    with pytest.raises(ValueError, match="equal shape"):
        pro(maps, np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="0/1"):
        pro(maps, np.full((2, 4, 4), 2))
    with pytest.raises(ValueError, match="NaN"):
        pro(np.full((2, 4, 4), np.nan), maps > 0.5)


@pytest.mark.parametrize("ties", [False, True])
def test_pixel_metrics_match_sklearn(ties: bool) -> None:
    rng = np.random.default_rng(7)
    masks = _blob_masks(rng, (6, 16, 16), 0.1)
    maps = (rng.random(masks.shape) + 0.3 * masks).astype(np.float32)
    if ties:
        maps = np.round(maps, 2)
    result = pixel_metrics(maps, masks)
    assert set(result) == {"pixel_auroc", "pixel_pro", "pixel_f1max"}
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert result["pixel_f1max"] == pytest.approx(_sklearn_f1_max(maps.ravel(), masks.ravel()), abs=1e-12)
    assert result["pixel_pro"] == pytest.approx(_reference_pro(list(maps), list(masks)), abs=1e-12)


def test_accumulator_equals_all_at_once() -> None:
    rng = np.random.default_rng(8)
    masks = _blob_masks(rng, (9, 12, 12), 0.1)
    maps = np.round(rng.random(masks.shape) + 0.3 * masks, 2)
    acc = PixelMetricAccumulator()
    for batch in np.array_split(np.arange(9), [2, 3, 7]):
        acc.update(maps[batch], masks[batch])
    expected = pixel_metrics(maps, masks)
    assert acc.compute() == expected
    assert acc.compute() == expected  # compute does not consume the state


def test_accumulator_differing_sizes_small_chunks_and_blocks() -> None:
    # sweep chunks of 7 pixels split the many tie groups of rounded scores; batches span storage blocks of 50
    rng = np.random.default_rng(9)
    batches = [(2, 8, 8), (3, 5, 7), (1, 10, 4)]
    maps = [np.round(rng.random(s), 1) for s in batches]
    masks = [_blob_masks(rng, s, 0.15) for s in batches]
    acc = PixelMetricAccumulator(max_fpr=0.2, chunk=7, block=50)
    for m, k in zip(maps, masks, strict=True):
        acc.update(m, k)
    images = [image for m in maps for image in m]
    image_masks = [image for k in masks for image in k]
    flat_maps = np.concatenate([m.ravel() for m in maps])
    flat_masks = np.concatenate([k.ravel() for k in masks])
    result = acc.compute()
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)
    assert result["pixel_f1max"] == pytest.approx(_sklearn_f1_max(flat_maps, flat_masks), abs=1e-12)
    assert result["pixel_pro"] == pytest.approx(_reference_pro(images, image_masks, 0.2), abs=1e-12)
    # updating after compute keeps accumulating
    extra_map, extra_mask = np.round(rng.random((1, 6, 6)), 1), _blob_masks(rng, (1, 6, 6), 0.2)
    acc.update(extra_map, extra_mask)
    assert acc.compute()["pixel_pro"] == pytest.approx(
        _reference_pro(images + list(extra_map), image_masks + list(extra_mask), 0.2), abs=1e-12
    )
