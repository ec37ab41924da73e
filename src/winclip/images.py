"""Thin image I/O at the edge: decoding any input into RGB, file hashes and square tiling. No torch."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | Path | Image.Image | np.ndarray
HASH_BLOCK = 1 << 22  # bytes read at a time when hashing a file
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})


class ImageError(ValueError):
    """An input that cannot be used; the message is one line: `<source>: <reason>`."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read HASH_BLOCK bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def source_name(src: ImageInput, index: int) -> str:
    """How an input is named in messages: its path, else `image[i]`."""
    return str(src) if isinstance(src, (str, Path)) else f"image[{index}]"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode (L, LA, P, RGBA, I;16, I, F, CMYK, ...) → 8-bit RGB; alpha over black."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8))
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    return img.convert("RGB")


def _array_to_image(arr: np.ndarray, name: str) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16 or float in [0, 1]) → RGB image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(name, f"array of shape {arr.shape} is not HxW, HxWx3 or HxWx4")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(name, "array holds NaN or infinite values")
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(name, f"array dtype {arr.dtype} is not uint8, uint16 or float")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


def load_image(src: ImageInput, name: str, min_size: int = 1) -> Image.Image:
    """Decode any supported input into an RGB image with EXIF orientation applied.

    Raises ImageError naming `name` and the reason (missing, empty, not an image,
    truncated, too small).
    """
    if isinstance(src, np.ndarray):
        img = _array_to_image(src, name)
    elif isinstance(src, Image.Image):
        img = _to_rgb(ImageOps.exif_transpose(src))
    elif isinstance(src, (str, Path)):
        path = Path(src)
        if not path.exists():
            raise ImageError(name, "file not found")
        if path.is_dir():
            raise ImageError(name, "is a directory, not an image file")
        if path.stat().st_size == 0:
            raise ImageError(name, "file is empty (0 bytes)")
        try:
            with Image.open(path) as opened:
                opened.load()
                img = _to_rgb(ImageOps.exif_transpose(opened))
        except UnidentifiedImageError:
            raise ImageError(name, "not an image file (format not recognised)") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(name, f"image too large ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            reason = str(exc).split("\n")[0] or type(exc).__name__
            raise ImageError(name, f"cannot decode image ({reason}); the file may be truncated or corrupt") from None
    else:
        raise ImageError(name, f"unsupported input type {type(src).__name__}")
    if min(img.size) < min_size:
        raise ImageError(name, f"image is {img.width}x{img.height} pixels, smaller than the minimum {min_size}")
    return img


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
