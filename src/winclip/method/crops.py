"""Ten-crop views for multi-crop classification (docs/method.md §3; AlexNet's [13] prediction). Pure functions.

A view of input size S is resized to R = round(S·256/224) (240 → 274); the crops are S×S at the
four corners and the centre (top-left, top-right, bottom-left, bottom-right, centre; the centre's
corner at round((R − S) / 2), Python's rounding, as torchvision's `center_crop`), then the
horizontal mirror image of each of those five, in the same order: ten in all.

torchvision's `TenCrop` differs in two ways. It mirrors the whole image and then cuts its five
crops, so its mirrored corners come in another order (its sixth crop, the top-left of the mirrored
image, is our seventh, the mirror of our top-right) and its mirrored centre crop starts at
R − S − round((R − S) / 2) in our image: the same crop when the margin R − S is even (240 → 274 and
224 → 256, the backbones we evaluate: 34 and 32 pixels), one pixel to the right of ours when it is
odd (e.g. 200 → 229). The score is the mean over the ten crops, so the order never matters and
only an odd margin changes it (`tests/method/test_crops.py` checks both against torchvision).
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
