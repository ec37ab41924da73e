"""Calibration: thresholds from the scores of held-out good (and bad) images. Pure functions (numpy).

- threshold = `numpy.quantile(good_scores, 1 - target_fpr)` (numpy's default linear
  interpolation), kept in (0, 1]; the review threshold likewise at `1 - review_fpr`.
- confidence scale = the robust spread of the good scores, IQR / 1.349 (at least 1e-4).
- With bad images: the F1-best threshold (over all observed scores, `score >= t` = anomalous)
  and the recall and false-positive rate at the chosen threshold are reported.
- Too few good images: n good scores cannot measure a rate below 1/n. When n · rate < 1 the
  quantile still sits between the two highest good scores (numpy interpolates), so one or more
  held-out good images score above the threshold; `note` says so, with how many images the rate
  needs (`support_note`), and the report and `winclip profile calibrate` print it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import f1_max_threshold
from ..progress import plural

IQR_TO_SIGMA = 1.349  # IQR of a normal distribution in units of its standard deviation
MIN_CONFIDENCE_SCALE = 1e-4
HISTOGRAM_BINS = 20
HISTOGRAM_WIDTH = 40


@dataclass(frozen=True)
class CalibrationImage:
    """One held-out image: its name, sha256 and final score."""

    name: str
    sha256: str
    score: float


@dataclass(frozen=True)
class Calibration:
    """Held-out scores and the thresholds chosen from them (see the module docstring)."""

    target_fpr: float
    review_fpr: float | None
    good: tuple[CalibrationImage, ...]
    bad: tuple[CalibrationImage, ...]
    skipped: tuple[tuple[str, str, str], ...]  # ("good" | "bad", name, reason) of images not scored
    threshold: float
    review_threshold: float | None
    fpr: float  # fraction of good scores >= threshold
    recall: float | None  # fraction of bad scores >= threshold
    f1_threshold: float | None
    f1: float | None
    note: str = ""  # the rates the good images cannot support, and what the thresholds are instead

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        """The inverse of `dataclasses.asdict` (profile.json's "calibration")."""
        return cls(
            **{
                **data,
                "good": tuple(CalibrationImage(**c) for c in data["good"]),
                "bad": tuple(CalibrationImage(**c) for c in data["bad"]),
                "skipped": tuple(tuple(s) for s in data["skipped"]),
            }
        )

    def report(self, bins: int = HISTOGRAM_BINS, width: int = HISTOGRAM_WIDTH) -> str:
        """A text report: thresholds, rates and a histogram of good (#) and bad (x) scores."""
        good = np.array([g.score for g in self.good])
        bad = np.array([b.score for b in self.bad])
        lines = [
            f"calibration: {len(good)} good, {len(bad)} bad, {len(self.skipped)} skipped",
            f"threshold {self.threshold:.6f} = quantile(good, 1 - {self.target_fpr:g}); "
            f"false alarms on the good images: {self.fpr:.2%}",
        ]
        if self.review_threshold is not None:
            lines.append(f"review threshold {self.review_threshold:.6f} = quantile(good, 1 - {self.review_fpr:g})")
        if self.recall is not None:
            lines.append(f"recall at the threshold: {self.recall:.2%}")
        if self.f1_threshold is not None:
            lines.append(f"F1-best threshold {self.f1_threshold:.6f} (F1 {self.f1:.3f})")
        for kind, name, reason in self.skipped:
            lines.append(f"skipped {kind} image {name}: {reason}")
        if self.note:
            lines.append(f"warning: {self.note}")
        lines.append(score_histogram(good, bad, self.threshold, self.review_threshold, bins=bins, width=width))
        return "\n".join(lines)


def fpr_threshold(good_scores: Sequence[float] | np.ndarray, target_fpr: float) -> float:
    """Threshold at the (1 − target_fpr) quantile of good scores (numpy linear interpolation)."""
    check_rates(target_fpr, None)
    scores = np.asarray(good_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("calibration needs at least one good image that could be scored")
    return float(np.quantile(scores, 1.0 - target_fpr))


def f1_best_threshold(good_scores: np.ndarray, bad_scores: np.ndarray) -> tuple[float, float]:
    """The observed score t maximising F1 of `score >= t` = anomalous (highest t on ties): (t, F1)."""
    scores = np.concatenate([good_scores, bad_scores])
    labels = np.concatenate([np.zeros(len(good_scores), dtype=bool), np.ones(len(bad_scores), dtype=bool)])
    return f1_max_threshold(scores, labels)


def support_note(good: np.ndarray, rate: float, threshold: float, what: str = "threshold") -> str:
    """ "" when len(good) · rate >= 1; else what so few good scores mean for a `rate` quantile (module docstring)."""
    n = len(good)
    if n * rate >= 1.0:
        return ""
    needed = int(np.ceil(1.0 / rate - 1e-9))
    above = int((good >= threshold).sum())
    return (
        f"{plural(n, 'good image')} cannot support a false-alarm rate of {rate:.2%} (that needs at least {needed}): "
        f"the {what} {threshold:.6f} is numpy's quantile at {1 - rate:g}, interpolated between the highest good "
        f"scores, and {above} of the {n} score at or above it; add held-out good images"
    )


def robust_scale(good_scores: np.ndarray) -> float:
    """IQR / 1.349 of the good scores, at least MIN_CONFIDENCE_SCALE: the confidence's logistic scale."""
    q75, q25 = np.quantile(good_scores, [0.75, 0.25])
    return max(float(q75 - q25) / IQR_TO_SIGMA, MIN_CONFIDENCE_SCALE)


def calibrate(
    good: Sequence[CalibrationImage],
    bad: Sequence[CalibrationImage],
    skipped: Sequence[tuple[str, str, str]],
    target_fpr: float,
    review_fpr: float | None,
) -> Calibration:
    """Thresholds and rates from scored held-out images (module docstring)."""
    check_rates(target_fpr, review_fpr)
    g = np.array([c.score for c in good])
    b = np.array([c.score for c in bad])
    threshold = min(max(fpr_threshold(g, target_fpr), np.nextafter(0.0, 1.0)), 1.0)
    review = None
    notes = [support_note(g, target_fpr, threshold)]
    if review_fpr is not None:
        review = fpr_threshold(g, review_fpr)
        notes.append(support_note(g, review_fpr, review, "review threshold"))
    f1_t, f1 = f1_best_threshold(g, b) if len(b) else (None, None)
    return Calibration(
        target_fpr=float(target_fpr),
        review_fpr=None if review_fpr is None else float(review_fpr),
        good=tuple(good),
        bad=tuple(bad),
        skipped=tuple(skipped),
        threshold=threshold,
        review_threshold=review,
        fpr=float((g >= threshold).mean()),
        recall=float((b >= threshold).mean()) if len(b) else None,
        f1_threshold=f1_t,
        f1=f1,
        note="; ".join(n for n in notes if n),
    )


def check_rates(target_fpr: float, review_fpr: float | None) -> None:
    """ValueError unless 0 < target_fpr < review_fpr < 1 (review optional)."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    if review_fpr is not None and not target_fpr < review_fpr < 1.0:
        raise ValueError(f"review FPR {review_fpr} must lie between the target FPR {target_fpr} and 1")


def score_histogram(
    good: np.ndarray,
    bad: np.ndarray,
    threshold: float,
    review_threshold: float | None = None,
    bins: int = HISTOGRAM_BINS,
    width: int = HISTOGRAM_WIDTH,
) -> str:
    """Text histogram of good (#) and bad (x) scores; the bins holding the thresholds are marked."""
    values = np.concatenate([good, bad, [threshold] + ([review_threshold] if review_threshold is not None else [])])
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 1e-6, hi + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    g, _ = np.histogram(good, edges)
    b, _ = np.histogram(bad, edges)
    peak = max(1, int(g.max(initial=0)), int(b.max(initial=0)))
    lines = ["score range          good  bad"]
    for i in range(bins):
        marks = []
        for name, t in (("threshold", threshold), ("review", review_threshold)):
            if t is not None and (edges[i] <= t < edges[i + 1] or (i == bins - 1 and t == edges[-1])):
                marks.append(f"<-- {name} {t:.4f}")
        bar = "#" * round(width * g[i] / peak) + "x" * round(width * b[i] / peak)
        lines.append(f"[{edges[i]:.4f}, {edges[i + 1]:.4f}) {g[i]:4d} {b[i]:4d} {bar} {' '.join(marks)}".rstrip())
    return "\n".join(lines)
