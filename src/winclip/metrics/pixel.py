"""Pixel-level metrics: pixel AUROC, PRO and pixel F1-max (docs/method.md §5), exact and bounded in memory.

Every pixel is stored as one uint64 key: the upper 32 bits order the float32
score descending, the lower 32 bits hold its global ground-truth region id
(0 = normal pixel). One in-place sort of the keys gives the ROC, F1 and PRO
curves together; the sweep over it runs in chunks, so the peak is about
8 bytes per pixel plus a few chunk-sized temporaries. Scores are compared as
float32: float64 maps that differ only below float32 precision tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from winclip.metrics.curves import PLOT_CELLS, Curve, CurveThinner
from winclip.metrics.image import CurveSweep, check_counts

PRO_MAX_FPR = 0.3  # PRO integrates the per-region overlap up to this false-positive rate (docs/method.md §5)
_SHIFT = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
_SIGN = np.uint32(0x80000000)
# 8-connected components of each image separately: a 3x3 structure in the (H, W) plane only
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def _descending_key(maps: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the descending order of the float32 scores."""
    bits = (maps.astype(np.float32) + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0
    ascending = np.where(bits & _SIGN, ~bits, bits | _SIGN)  # IEEE-754 total order for non-NaN
    return ~ascending


def _as_batch(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arrays (B, H, W) of equal shape, or ValueError."""
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"maps and masks must be (B, H, W) of equal shape, got {maps.shape} and {masks.shape}")
    return maps, masks


class _ProSweep:
    """Running integral of the per-region-overlap curve over FPR in [0, max_fpr]; its points go to ``points``."""

    def __init__(self, n_neg: int, max_fpr: float, points: CurveThinner | None = None) -> None:
        self.n_neg = n_neg
        self.max_fpr = max_fpr
        self.points = points
        self._fpr = 0.0  # the last curve point; the curve starts at (0, 0)
        self._pro = 0.0
        self._area = 0.0
        self._done = False

    def feed(self, fp: np.ndarray, overlap: np.ndarray) -> None:
        """Add curve points; ``fp`` (G,) cumulative false positives, ``overlap`` (G,) mean region overlap."""
        if self._done or fp.size == 0:
            return
        x = np.concatenate(([self._fpr], fp / self.n_neg))
        y = np.concatenate(([self._pro], overlap))
        inside = int(np.searchsorted(x, self.max_fpr, side="right"))  # points with FPR <= max_fpr
        self._area += float(np.sum(np.diff(x[:inside]) * (y[1:inside] + y[: inside - 1]))) / 2
        if self.points is not None:
            self.points.feed(x[1:inside], y[1:inside])
        if inside == x.size:
            self._fpr, self._pro = float(x[-1]), float(y[-1])
            return
        # the segment that crosses max_fpr: linear interpolation at exactly max_fpr
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_cut = y0 + (y1 - y0) * (self.max_fpr - x0) / (x1 - x0)
        self._area += float((self.max_fpr - x0) * (y0 + y_cut)) / 2
        if self.points is not None:
            self.points.feed(np.array([self.max_fpr]), np.array([y_cut]))
        self._done = True

    @property
    def pro(self) -> float:
        return self._area / self.max_fpr


@dataclass(frozen=True)
class PixelCurves:
    """The pixel metrics and the curves they integrate, thinned for plotting (``winclip.metrics.curves``).

    roc: (FPR, TPR) from (0, 0) to (1, 1); pro: (FPR, mean region overlap) from (0, 0) up to FPR = max_fpr.
    """

    metrics: dict[str, float]
    roc: Curve
    pro: Curve


class PixelMetricAccumulator:
    """Pixel AUROC, PRO and F1-max accumulated batch by batch, exact (torchmetrics style).

    ``update`` stores 8 bytes per pixel in blocks of ``block`` keys (default
    64 MiB, above glibc's largest mmap threshold, so a freed block goes back to
    the OS); ``compute`` merges the blocks into one array, freeing each as it is
    copied, sorts it in place and sweeps it in chunks of ``chunk`` pixels. Peak
    is about 9 bytes per pixel (``benchmarks/metrics_memory.py``). ``compute``
    does not reset; further updates may follow.
    """

    def __init__(self, max_fpr: float = PRO_MAX_FPR, chunk: int = 1 << 20, block: int = 1 << 23) -> None:
        if not 0.0 < max_fpr <= 1.0:
            raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
        self.max_fpr = max_fpr
        self.chunk = chunk
        self.block = block
        self._blocks: list[np.ndarray] = []  # keys; only the last block may have unused room
        self._filled = 0  # keys in the last block
        self._region_sizes: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # index 0 = normal
        self._n_regions = 0
        self._n_pos = 0
        self._n_neg = 0

    def update(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Add a batch; maps (B, H, W) float scores, masks (B, H, W) bool or 0/1. H, W may vary between calls."""
        maps, masks = _as_batch(maps, masks)
        if np.isnan(maps).any():
            raise ValueError("anomaly maps contain NaN")
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean or 0/1")
        regions, n_new = ndimage.label(masks.astype(bool), structure=_STRUCTURE)
        if self._n_regions + n_new > np.iinfo(np.uint32).max:
            raise ValueError("more than 2**32 - 1 ground-truth regions")
        sizes = np.bincount(regions.ravel(), minlength=n_new + 1)
        key = _descending_key(maps).astype(np.uint64).ravel() << _SHIFT
        key |= np.where(regions > 0, regions.astype(np.uint64) + np.uint64(self._n_regions), np.uint64(0)).ravel()
        self._store(key)
        self._region_sizes.append(sizes[1:].astype(np.int64))
        self._n_regions += n_new
        self._n_pos += int(regions.size - sizes[0])
        self._n_neg += int(sizes[0])

    def _store(self, key: np.ndarray) -> None:
        """Append keys (K,) uint64 to the last block, opening new ones as it fills."""
        done = 0
        while done < key.size:
            if not self._blocks or self._filled == self._blocks[-1].size:
                self._blocks.append(np.empty(self.block, dtype=np.uint64))  # untouched pages cost no memory
                self._filled = 0
            n = min(key.size - done, self.block - self._filled)
            self._blocks[-1][self._filled : self._filled + n] = key[done : done + n]
            self._filled += n
            done += n

    def _merged(self) -> np.ndarray:
        """All keys as one sorted array (total,) uint64; each block is freed as soon as it is copied."""
        total = self._n_pos + self._n_neg
        if len(self._blocks) > 1 or self._filled < self._blocks[0].size:
            merged = np.empty(total, dtype=np.uint64)
            start = 0
            while self._blocks:
                n = min(self._blocks[0].size, total - start)
                merged[start : start + n] = self._blocks.pop(0)[:n]
                start += n
            self._blocks = [merged]
            self._filled = total
        merged = self._blocks[0]
        merged.sort()  # in place; order within a tie group does not matter
        return merged

    def compute(self) -> dict[str, float]:
        """Return {"pixel_auroc", "pixel_pro", "pixel_f1max"} as fractions in [0, 1].

        Raises ValueError without anomalous pixels (no regions) or without normal pixels.
        """
        return self._sweep(None, None)

    def compute_curves(self, cells: int | None = PLOT_CELLS) -> PixelCurves:
        """The metrics of ``compute`` and, from the same sweep, the ROC and PRO curves for plots.

        The curves keep the first and last point of each run in a ``cells`` × ``cells`` grid
        (``CurveThinner``; None keeps every point): their trapezoid areas are within
        ``1 / cells`` of pixel AUROC and PRO, which stay exact.
        """
        roc, pro_points = CurveThinner(cells), CurveThinner(cells, x_max=self.max_fpr)
        metrics = self._sweep(roc, pro_points)
        return PixelCurves(metrics, roc.curve(), pro_points.curve())

    def _sweep(self, roc_points: CurveThinner | None, pro_points: CurveThinner | None) -> dict[str, float]:
        """One sweep over the sorted keys: the metrics, feeding the curves' points where asked."""
        check_counts(self._n_pos, self._n_neg, "pixel metrics")
        keys = self._merged()
        sizes = np.concatenate(self._region_sizes)
        weight = np.zeros(sizes.size)
        weight[1:] = 1.0 / (self._n_regions * sizes[1:])  # PRO(t) = mean_r |pred ∩ r| / |r|
        roc = CurveSweep(self._n_pos, self._n_neg)
        pro_sweep = _ProSweep(self._n_neg, self.max_fpr, pro_points)
        tp0, pro0 = 0, 0.0  # running sums up to the chunk start
        for start in range(0, keys.size, self.chunk):
            stop = min(start + self.chunk, keys.size)
            score = keys[start : stop + 1] >> _SHIFT  # one look-ahead key to close the last group
            ends = np.flatnonzero(score[:-1] != score[1:])
            if stop == keys.size:
                ends = np.append(ends, stop - start - 1)
            del score
            region = keys[start:stop] & _LOW
            tp = np.cumsum(region != 0, dtype=np.int64)
            overlap = np.cumsum(weight[region])
            del region
            roc_tp = tp[ends] + tp0
            roc_fp = start + ends + 1 - roc_tp
            roc.feed(roc_tp, roc_fp)
            if roc_points is not None:
                roc_points.feed(roc_fp / self._n_neg, roc_tp / self._n_pos)
            pro_sweep.feed(roc_fp, overlap[ends] + pro0)
            tp0 += int(tp[-1])
            pro0 += float(overlap[-1])
        return {"pixel_auroc": roc.auroc, "pixel_pro": pro_sweep.pro, "pixel_f1max": roc.f1max}


def pixel_metrics(maps: np.ndarray, masks: np.ndarray, max_fpr: float = PRO_MAX_FPR) -> dict[str, float]:
    """Pixel AUROC, PRO up to ``max_fpr`` and pixel F1-max; maps (N, H, W) float, masks (N, H, W) bool.

    Fed to a PixelMetricAccumulator a few images at a time, so temporaries stay chunk-sized.
    """
    maps, masks = _as_batch(maps, masks)
    acc = PixelMetricAccumulator(max_fpr=max_fpr)
    step = max(1, acc.chunk // max(1, maps.shape[1] * maps.shape[2]))
    for start in range(0, len(maps), step):
        acc.update(maps[start : start + step], masks[start : start + step])
    return acc.compute()


def pro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = PRO_MAX_FPR) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr``; maps (N, H, W), masks (N, H, W).

    Regions are the 8-connected components of each image's mask; PRO(t) is the
    mean over all regions of the fraction of the region at ``score >= t`` and
    FPR(t) the fraction of normal pixels at ``score >= t``. The curve, from
    (0, 0) through every distinct score, is integrated with trapezoids up to
    ``max_fpr`` (interpolated there) and divided by ``max_fpr``. Images without
    anomaly add only to the FPR; an all-anomalous image is fine if others have
    normal pixels. Raises ValueError without any region or normal pixel.
    """
    return pixel_metrics(maps, masks, max_fpr=max_fpr)["pixel_pro"]
