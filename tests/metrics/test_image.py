"""Image-level metrics (winclip.metrics.image) against sklearn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from winclip.metrics import aupr, auroc, f1_max, image_metrics, pixel_metrics


def _random_scores(rng: np.random.Generator, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + labels
    return (scores.round(1) if ties else scores), labels


def _brute_f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    return max(f1_score(labels, scores >= t) for t in np.unique(scores))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_aupr_match_sklearn(seed: int, ties: bool) -> None:
    scores, labels = _random_scores(np.random.default_rng(seed), 500, ties)
    if ties:
        assert np.unique(scores).size < 100
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert aupr(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_f1_max_matches_brute_force(ties: bool) -> None:
    scores, labels = _random_scores(np.random.default_rng(3), 80, ties)
    assert f1_max(scores, labels) == pytest.approx(_brute_f1_max(scores, labels), abs=1e-12)


def test_image_hand_cases() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert aupr(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert f1_max(scores, labels) == pytest.approx(0.8)  # t = 0.35: TP 2, FP 1
    tied, tied_labels = np.array([0.5, 0.5]), np.array([False, True])
    assert image_metrics(tied, tied_labels) == pytest.approx(
        {"image_auroc": 0.5, "image_aupr": 0.5, "image_f1max": 2 / 3}
    )
    assert f1_max(np.array([0.2, 0.7]), np.array([1, 1])) == 1.0


def test_image_metrics_equal_the_single_functions() -> None:
    scores, labels = _random_scores(np.random.default_rng(4), 200, ties=True)
    assert image_metrics(scores, labels) == {
        "image_auroc": auroc(scores, labels),
        "image_aupr": aupr(scores, labels),
        "image_f1max": f1_max(scores, labels),
    }


@pytest.mark.parametrize("fn", [auroc, aupr, image_metrics])
def test_image_metrics_need_both_classes(fn) -> None:
    scores = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no anomalous"):
        fn(scores, np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="no normal"):
        fn(scores, np.ones(3, dtype=bool))


def test_image_input_errors() -> None:
    with pytest.raises(ValueError, match="no anomalous"):
        f1_max(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="0/1"):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="equal length"):
        auroc(np.array([0.1, 0.2]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([np.nan, 0.2]), np.array([0, 1]))


def test_signed_zeros_tie() -> None:
    maps = np.array([[[-0.0, 0.0, 1.0, 0.0]]])
    masks = np.array([[[1, 0, 1, 0]]])
    assert pixel_metrics(maps, masks)["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
