"""Decision rules of an inspection, pure functions of a score and a map (numpy).

- label: "anomalous" if score >= threshold; "review" if review_threshold <= score < threshold;
  else "normal".
- confidence (that the image is anomalous): `1 / (1 + exp(-(score - threshold) / scale))`, so
  exactly 0.5 at the threshold and strictly increasing in the score.
- ROI: the mask (nonzero = inside) is resized to the image with nearest neighbour; the map is
  set to 0 outside it; the image score becomes `s * max_ROI(M) / max(M)` (s = model score,
  M = model map; the ratio is 1 when M is all zero). It lies in [0, s] ⊆ [0, 1], equals s
  exactly when the ROI covers the map's peak (so always when it covers everything), and for
  a given model score raising map values outside the ROI can only lower it.
- regions: 8-connected components (`scipy.ndimage.label`) of `map >= threshold`, each with its
  bounding box (x, y, width, height), area in pixels and peak map value; components smaller
  than `min_area` pixels are dropped; sorted by peak, highest first.
- note: an anomalous label without any region says why (`region_note`): the image score reached
  the threshold but the map's peak did not (the image-level and the pixel-level evidence differ),
  or every region was smaller than `min_area`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

LABELS = ("normal", "review", "anomalous")
DEFAULT_THRESHOLD = 0.5  # until calibrated
DEFAULT_CONFIDENCE_SCALE = 0.05  # the logistic's scale until calibrated


@dataclass(frozen=True)
class Region:
    """One connected component of the mask: bounding box (x, y, width, height) in pixels, area, peak."""

    x: int
    y: int
    width: int
    height: int
    area: int
    peak: float

    def as_dict(self) -> dict[str, int | float]:
        """{x, y, width, height, area, peak}."""
        return dataclasses.asdict(self)


def label_of(score: float, threshold: float, review_threshold: float | None = None) -> str:
    """ "anomalous" if score >= threshold, "review" if review_threshold <= score < threshold, else "normal"."""
    if score >= threshold:
        return "anomalous"
    if review_threshold is not None and score >= review_threshold:
        return "review"
    return "normal"


def confidence(score: float, threshold: float, scale: float) -> float:
    """Logistic confidence that the image is anomalous: 0.5 at the threshold, increasing in the score."""
    z = (score - threshold) / scale
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def roi_for(roi: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bool ROI `(h, w)` resized to `size` = (H, W) with nearest neighbour."""
    if roi.shape == size:
        return roi
    img = Image.fromarray(roi.astype(np.uint8) * 255).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 0


def apply_roi(score: float, score_map: np.ndarray, roi: np.ndarray | None) -> tuple[float, np.ndarray]:
    """Confine a result to the ROI: map 0 outside, score s·max_ROI(M)/max(M) (module docstring)."""
    if roi is None:
        return score, score_map
    inside = roi_for(roi, score_map.shape)
    masked = np.where(inside, score_map, np.float32(0.0)).astype(np.float32)
    peak = float(score_map.max())
    ratio = 1.0 if peak <= 0.0 else float(masked.max()) / peak
    return score * ratio, masked


def region_note(label: str, regions: tuple[Region, ...], peak: float, threshold: float, min_area: int = 0) -> str:
    """Why an anomalous label has no region ("" when it has one, or is not anomalous)."""
    if label != "anomalous" or regions:
        return ""
    if peak >= threshold:
        return f"no region of at least {min_area} pixels (--min-area) above the threshold"
    return f"no region above the threshold: the image score reaches it, the map's peak ({peak:.4f}) does not"


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 0) -> tuple[Region, ...]:
    """8-connected components of `score_map >= threshold` with area >= min_area, highest peak first."""
    mask = score_map >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ()
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(mask, labels, index)
    peaks = ndimage.maximum(score_map, labels, index)
    regions = [
        Region(sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start, int(a), float(p))
        for sl, a, p in zip(ndimage.find_objects(labels), areas, peaks, strict=True)
        if a >= min_area
    ]
    return tuple(sorted(regions, key=lambda r: (-r.peak, r.y, r.x)))
