"""Window index sets and coverage matrices on the patch grid (docs/method.md §2-§3). Pure functions."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def window_indices(grid: tuple[int, int], k: int, stride: int = 1) -> torch.Tensor:
    """Row-major patch indices of every k×k window: `(W, k*k)` long, W = nh·nw windows.

    Windows are ordered row-major by their top-left corner; inside a window the
    patches are row-major too, so the all-patch window is `arange(H*W)`.
    """
    h, w = grid
    if not 1 <= k <= min(h, w):
        raise ValueError(f"window size {k} does not fit the {h}x{w} patch grid")
    if stride < 1:
        raise ValueError(f"window stride must be >= 1, got {stride}")
    rows = torch.arange(0, h - k + 1, stride)
    cols = torch.arange(0, w - k + 1, stride)
    offs = (torch.arange(k)[:, None] * w + torch.arange(k)[None, :]).reshape(-1)
    corners = (rows[:, None] * w + cols[None, :]).reshape(-1)
    return corners[:, None] + offs[None, :]


@lru_cache(maxsize=32)
def coverage_matrix(grid: tuple[int, int], k: int, stride: int = 1) -> torch.Tensor:
    """`(L, W)` float 0/1: entry [j, w] is 1 when window w covers patch j (the sets U_j of Eq. 3)."""
    idx = window_indices(grid, k, stride)
    cov = torch.zeros(grid[0] * grid[1], idx.shape[0])
    cov[idx.reshape(-1), torch.arange(idx.shape[0]).repeat_interleave(idx.shape[1])] = 1.0
    return cov
