"""What prediction returns: `Prediction` (a batch: scores and maps) and `ImageResult` (one streamed image).

Scores and maps are CPU torch tensors; `Prediction.numpy()` gives numpy arrays (so does `np.asarray`
on any of the tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import ImageError


@dataclass(frozen=True)
class Prediction:
    """Per image: scores `(N,)` in [0, 1], zero_shot `(N,)` = ascore0(F^I), maps: one `(H, W)` float32 map each.

    Tensors on the CPU; `numpy()` gives the same as numpy arrays (as does `np.asarray` on any of them).
    """

    scores: torch.Tensor
    zero_shot: torch.Tensor
    maps: list[torch.Tensor]

    def numpy(self) -> PredictionArrays:
        """The same results as numpy arrays (float32 maps at each image's size)."""
        maps = [np.asarray(m.detach().cpu()) for m in self.maps]
        return PredictionArrays(np.asarray(self.scores.cpu()), np.asarray(self.zero_shot.cpu()), maps)


@dataclass(frozen=True)
class PredictionArrays:
    """`Prediction.numpy()`: scores `(N,)`, zero_shot `(N,)` and one `(H, W)` float32 map per image, in numpy."""

    scores: np.ndarray
    zero_shot: np.ndarray
    maps: list[np.ndarray]


@dataclass(frozen=True)
class ImageResult:
    """One image of a streamed prediction: the decoded image, a score and a map, or the error that stopped it."""

    index: int
    source: str
    score: float | None = None
    zero_shot: float | None = None
    map: torch.Tensor | None = None
    image: Image.Image | None = None
    error: ImageError | None = None
