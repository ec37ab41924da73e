"""Thresholds from held-out scores (winclip.inspection.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from winclip.inspection.calibration import f1_best_threshold, fpr_threshold


def test_fpr_threshold_is_numpys_quantile_and_hits_the_target_rate():
    rng = np.random.default_rng(1)
    good = rng.beta(2, 5, size=20_000)
    for target in (0.01, 0.05, 0.2):
        t = fpr_threshold(good, target)
        assert t == float(np.quantile(good, 1 - target))
        assert abs((good >= t).mean() - target) <= 1 / len(good)
        fresh = rng.beta(2, 5, size=200_000)
        assert abs((fresh >= t).mean() - target) < 0.25 * target
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        fpr_threshold(good, 0.0)
    with pytest.raises(ValueError, match="at least one good"):
        fpr_threshold([], 0.1)


def test_f1_best_threshold_against_brute_force():
    rng = np.random.default_rng(2)
    good, bad = rng.random(40) * 0.7, rng.random(15) * 0.6 + 0.4
    t, f1 = f1_best_threshold(good, bad)
    scores = np.concatenate([good, bad])
    truth = np.r_[np.zeros(40), np.ones(15)]
    best = max((2 * ((scores >= c) & (truth == 1)).sum() / ((scores >= c).sum() + 15), c) for c in np.unique(scores))
    assert f1 == pytest.approx(best[0]) and t == best[1]
