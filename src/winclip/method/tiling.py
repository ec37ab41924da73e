"""Square tiles of a non-square image (docs/method.md §2, the paper's VisA protocol). Pure geometry."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """A square crop of an image: top-left corner and side, in pixels."""

    top: int
    left: int
    side: int


def square_tiles(height: int, width: int, overlap: float = 0.25) -> list[Tile]:
    """Overlapping squares of side min(H, W) covering the whole image; one tile when square.

    Tiles along the long side start evenly spaced from 0 to L−S, with at least
    `overlap`·S pixels shared by neighbours.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
    side, long = min(height, width), max(height, width)
    stride = side * (1.0 - overlap)
    n = 1 if long == side else math.ceil((long - side) / stride) + 1
    starts = [round(i * (long - side) / (n - 1)) for i in range(n)] if n > 1 else [0]
    if height >= width:
        return [Tile(s, 0, side) for s in starts]
    return [Tile(0, s, side) for s in starts]
