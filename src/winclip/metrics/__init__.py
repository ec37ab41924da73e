"""Evaluation metrics (docs/method.md §5): pure functions over numpy arrays plus a bounded-memory pixel accumulator.

Higher score = more anomalous; labels and masks are boolean or 0/1; results are fractions in [0, 1].
"""

from winclip.metrics.image import aupr, auroc, f1_max, f1_max_threshold, image_metrics
from winclip.metrics.pixel import PixelMetricAccumulator, pixel_metrics, pro

__all__ = [
    "PixelMetricAccumulator",
    "aupr",
    "auroc",
    "f1_max",
    "f1_max_threshold",
    "image_metrics",
    "pixel_metrics",
    "pro",
]
