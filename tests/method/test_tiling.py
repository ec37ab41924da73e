"""Square tiles of non-square images (winclip.method.tiling): the paper's VisA protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from winclip.method.tiling import square_tiles


def test_tiles_stride_at_most_four_fifths_of_the_short_side():
    for h, w in ((1000, 1500), (1000, 1000), (64, 96), (96, 64), (500, 2000), (100, 181)):
        tiles = square_tiles(h, w, 0.2)
        side = min(h, w)
        starts = [t.left if w >= h else t.top for t in tiles]
        assert all(t.side == side for t in tiles) and starts[0] == 0 and starts[-1] == max(h, w) - side
        assert all(0 < b - a <= 0.8 * side for a, b in zip(starts, starts[1:], strict=False))
        assert len(tiles) == (1 if h == w else math.ceil((max(h, w) - side) / (0.8 * side)) + 1)


def test_square_tiles_cover_everything_with_overlap():
    assert [(t.top, t.left, t.side) for t in square_tiles(100, 100)] == [(0, 0, 100)]
    tiles = square_tiles(1000, 1500, overlap=0.25)
    assert all(t.side == 1000 and t.top == 0 for t in tiles)
    assert tiles[0].left == 0 and tiles[-1].left + 1000 == 1500
    assert len(tiles) == 2
    tall = square_tiles(300, 100, overlap=0.5)
    assert [t.top for t in tall] == [0, 50, 100, 150, 200]
    covered = np.zeros(300, int)
    for t in tall:
        covered[t.top : t.top + t.side] += 1
    assert covered.min() >= 1
    with pytest.raises(ValueError):
        square_tiles(10, 20, overlap=1.0)
