"""Ten-crop views for multi-crop classification (docs/method.md §3; AlexNet's [13] prediction). Pure functions.

A view of input size S is resized to R = round(S·256/224) (240 → 274); the crops are S×S at the
four corners and the centre, then the horizontal mirror of each: ten in all, in torchvision's
TenCrop order (top-left, top-right, bottom-left, bottom-right, centre, then mirrored).
"""

from __future__ import annotations

import torch

CROP_RESIZE = 256 / 224  # AlexNet's test-time resize over crop size
N_CROPS = 10


def crop_resize(size: int) -> int:
    """R: the side a view of input side `size` is resized to before cropping (240 → 274, 224 → 256)."""
    return round(size * CROP_RESIZE)


def crop_corners(resized: int, size: int) -> tuple[tuple[int, int], ...]:
    """(top, left) of the five S×S crops of an R×R image: corners, then the centre (torchvision's rounding)."""
    if not 0 < size <= resized:
        raise ValueError(f"crop size {size} does not fit a {resized}x{resized} image")
    far = resized - size
    centre = int(round(far / 2.0))
    return ((0, 0), (0, far), (far, 0), (far, far), (centre, centre))


def ten_crops(view: torch.Tensor, size: int) -> torch.Tensor:
    """A resized view `(3, R, R)` → its ten crops `(10, 3, S, S)`: five crops, then their mirror images."""
    corners = crop_corners(view.shape[-1], size)
    five = torch.stack([view[:, t : t + size, c : c + size] for t, c in corners])
    return torch.cat([five, five.flip(-1)])
