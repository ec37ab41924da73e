"""Image-level metrics: AUROC, AUPR (average precision) and F1-max (docs/method.md §5).

All three are read off one descending sort of the scores. Tied scores form one
threshold step, as in scikit-learn's ``roc_curve`` / ``precision_recall_curve``;
a sample is predicted anomalous when ``score >= t``.
"""

from __future__ import annotations

import numpy as np

from winclip.metrics.curves import Curve


class CurveSweep:
    """Running ROC and precision-recall summaries over a descending-score stream.

    Fed the cumulative true / false positive counts at the end of each tie
    group, in order, possibly over several calls (so a stream too large to hold
    whole can be fed in chunks). Nothing of the stream's length is kept.
    """

    def __init__(self, n_pos: int, n_neg: int) -> None:
        self.n_pos = n_pos
        self.n_neg = n_neg
        self._tp = 0  # the last curve point; the curve starts at (0, 0)
        self._fp = 0
        self._area2 = 0  # 2 * P * N * AUROC, an exact integer
        self._ap = 0.0  # sum of recall steps times precision
        self._f1 = 0.0

    def feed(self, tp: np.ndarray, fp: np.ndarray) -> None:
        """Add curve points; ``tp``, ``fp`` (G,) int64 cumulative counts at G group ends."""
        if tp.size == 0:
            return
        tp_prev = np.concatenate(([self._tp], tp[:-1]))
        fp_prev = np.concatenate(([self._fp], fp[:-1]))
        # ROC trapezoids: sum (FP_i - FP_{i-1}) (TP_i + TP_{i-1}) fits int64 (<= 2PN)
        self._area2 += int(np.sum((fp - fp_prev) * (tp + tp_prev)))
        # AP = sum_n (R_n - R_{n-1}) P_n  (sklearn.metrics.average_precision_score)
        self._ap += float(np.sum((tp - tp_prev) * (tp / (tp + fp))))
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P)
        self._f1 = max(self._f1, float(np.max(2 * tp / (tp + fp + self.n_pos))))
        self._tp = int(tp[-1])
        self._fp = int(fp[-1])

    @property
    def auroc(self) -> float:
        return self._area2 / (2 * self.n_pos * self.n_neg)

    @property
    def aupr(self) -> float:
        return self._ap / self.n_pos

    @property
    def f1max(self) -> float:
        return self._f1


def check_counts(n_pos: int, n_neg: int, what: str, need_neg: bool = True) -> None:
    """Raise ValueError when the metric is undefined for these class counts."""
    if n_pos == 0:
        raise ValueError(f"{what}: no anomalous samples (all labels are 0); the metric is undefined")
    if need_neg and n_neg == 0:
        raise ValueError(f"{what}: no normal samples (all labels are 1); the metric is undefined")


def _curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One descending sort: the distinct scores (G,) and the cumulative TP and FP counts (G,) at each.

    scores (N,) float, labels (N,) bool or 0/1; a sample counts as anomalous when ``score >= t``.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be boolean or 0/1")
    scores = scores.astype(np.float64, copy=False)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    positive = labels.astype(bool)[order]
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    tp = np.cumsum(positive, dtype=np.int64)[ends]
    return scores[ends], tp, ends + 1 - tp


def _sweep(scores: np.ndarray, labels: np.ndarray) -> CurveSweep:
    """Sort once and feed every tie group; scores (N,) float, labels (N,) bool or 0/1."""
    _, tp, fp = _curve(scores, labels)
    n_pos = int(tp[-1]) if tp.size else 0
    sweep = CurveSweep(n_pos, int(fp[-1]) if fp.size else 0)
    if n_pos:
        sweep.feed(tp, fp)
    return sweep


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; scores (N,), labels (N,). Equals sklearn's roc_auc_score."""
    sweep = _sweep(scores, labels)
    check_counts(sweep.n_pos, sweep.n_neg, "AUROC")
    return sweep.auroc


def aupr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision; scores (N,), labels (N,).

    Equals sklearn's average_precision_score; raises when either class is absent.
    """
    sweep = _sweep(scores, labels)
    check_counts(sweep.n_pos, sweep.n_neg, "AUPR")
    return sweep.aupr


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best F1 over the thresholds ``score >= t``, t every distinct score; scores (N,), labels (N,).

    Needs at least one anomalous label; all-anomalous labels give 1.0.
    """
    sweep = _sweep(scores, labels)
    check_counts(sweep.n_pos, sweep.n_neg, "F1-max", need_neg=False)
    return sweep.f1max


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC, AUPR and F1-max (fractions in [0, 1]) from one sort; scores (N,), labels (N,)."""
    sweep = _sweep(scores, labels)
    check_counts(sweep.n_pos, sweep.n_neg, "image metrics")
    return {"image_auroc": sweep.auroc, "image_aupr": sweep.aupr, "image_f1max": sweep.f1max}


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> Curve:
    """ROC points (FPR, TPR) from (0, 0), one per distinct score, descending; scores (N,), labels (N,).

    The curve ``auroc`` integrates: trapezoids under these points equal it.
    """
    _, tp, fp = _curve(scores, labels)
    n_pos, n_neg = (int(tp[-1]), int(fp[-1])) if tp.size else (0, 0)
    check_counts(n_pos, n_neg, "ROC curve")
    return Curve(np.concatenate(([0.0], fp / n_neg)), np.concatenate(([0.0], tp / n_pos)))


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> Curve:
    """Precision-recall points (recall, precision) from (0, 1), one per distinct score, descending.

    The step curve ``aupr`` sums: each recall step (R_{n-1}, R_n] at precision P_n (a plot's
    ``drawstyle="steps-pre"``), so sum(diff(x) * y[1:]) equals it. scores (N,), labels (N,).
    """
    _, tp, fp = _curve(scores, labels)
    n_pos = int(tp[-1]) if tp.size else 0
    check_counts(n_pos, int(fp[-1]) if fp.size else 0, "precision-recall curve")
    return Curve(np.concatenate(([0.0], tp / n_pos)), np.concatenate(([1.0], tp / (tp + fp))))


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The score t maximising F1 of ``score >= t`` (the highest t on ties) and that F1; scores (N,), labels (N,)."""
    thresholds, tp, fp = _curve(scores, labels)
    n_pos = int(tp[-1]) if tp.size else 0
    check_counts(n_pos, int(fp[-1]) if fp.size else 0, "F1-max threshold", need_neg=False)
    f1 = 2 * tp / (tp + fp + n_pos)
    best = int(np.argmax(f1))  # the first maximum in descending order: the highest threshold
    return float(thresholds[best]), float(f1[best])
