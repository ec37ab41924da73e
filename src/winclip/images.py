"""Thin image I/O at the edge: decoding any input into RGB and file hashes. No torch.

Decoded size is checked from the header before any pixel is decoded (`check_size`; Pillow's
`Image.open` is lazy), so a small file that decodes to a huge image (a "pixel bomb") or to a
sliver thinner than the model takes (1 x 49,000,000) is refused cheaply; `decoded_bytes` tells
from the header how much memory the decoded pixels take; `check_path` refuses what is not a
regular file (folders, broken or looping symbolic links, pipes) with a one-line reason, and the
file is opened without blocking and checked again once open (winclip.files.open_regular).

Conversion to 8-bit RGB goes `DECODE_BLOCK` pixels at a time into one RGB image, so decoding
holds the decoded image, its RGB copy and a few MiB, whatever the bit depth (a 16-bit or float
photo never becomes a float64 copy of the whole image).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .files import NotRegularError, open_regular

ImageInput = str | Path | Image.Image | np.ndarray
HASH_BLOCK = 1 << 22  # bytes read at a time when hashing a file
DECODE_BLOCK = 1 << 18  # pixels converted to RGB at a time (float64 temporaries of a few MiB)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
DEFAULT_MAX_PIXELS = 50_000_000  # decoded pixels per image that `winclip predict` and `serve` accept by default
# bytes that `winclip serve`'s requests may hold at once by default: decoded images, maps, pictures (service.budget)
DEFAULT_MEMORY_BUDGET = 5 << 29  # 2.5 GiB: two 49-megapixel photos with overlay and map (docs/security.md)
# Pillow format → (file extension, media type) of the formats accepted from untrusted uploads.
IMAGE_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": (".png", "image/png"),
    "JPEG": (".jpg", "image/jpeg"),
    "BMP": (".bmp", "image/bmp"),
    "TIFF": (".tif", "image/tiff"),
    "WEBP": (".webp", "image/webp"),
    "GIF": (".gif", "image/gif"),
}


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


def check_path(path: Path, name: str) -> None:
    """ImageError unless `path` is a non-empty regular file (following symbolic links)."""
    try:
        info = path.stat()
    except OSError as exc:
        if path.is_symlink():
            loop = exc.errno == errno.ELOOP
            reason = "symbolic link loop" if loop else f"broken symbolic link (to {os.readlink(path)!r})"
            raise ImageError(name, reason) from None
        if exc.errno == errno.ENOENT:
            raise ImageError(name, "file not found") from None
        raise ImageError(name, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(name, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(name, "is not a regular file (a pipe, socket or device)")
    if info.st_size == 0:
        raise ImageError(name, "file is empty (0 bytes)")


def check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    """ImageError when an opened (not yet decoded) image has more than `max_pixels` pixels; None = no limit."""
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise ImageError(
            name, f"image is {image.width}x{image.height} pixels, more than the limit of {max_pixels:,} pixels"
        )


def check_size(image: Image.Image, name: str, min_size: int, max_pixels: int | None) -> None:
    """ImageError when an opened (not yet decoded) image has more than `max_pixels` pixels or a side shorter
    than `min_size`: both read from its header."""
    check_pixels(image, name, max_pixels)
    if min(image.size) < min_size:
        raise ImageError(name, f"image is {image.width}x{image.height} pixels, smaller than the minimum {min_size}")


# Bytes a pixel takes in Pillow's memory, by mode: 1 for 1, L, P; 2 for 16-bit; 4 for 32-bit and every
# multi-band mode (Pillow stores RGB, LA, YCbCr, ... as 4 bytes a pixel).
ONE_BYTE_MODES = frozenset({"1", "L", "P"})
TWO_BYTE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def decoded_bytes(image: Image.Image) -> int:
    """Memory that decoding an opened (not yet decoded) image takes, from its header's size and mode."""
    per_pixel = 1 if image.mode in ONE_BYTE_MODES else 2 if image.mode in TWO_BYTE_MODES else 4
    return image.width * image.height * per_pixel


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int] | None:
    """(width, height) from a file's header without decoding it; ImageError naming the file for what
    `check_path` refuses or a size over `max_pixels`; None when the header cannot be read (decoding says why)."""
    name = str(path)
    check_path(Path(path), name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is what we check here
            with Image.open(path) as opened:
                check_pixels(opened, name, max_pixels)
                return opened.size
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _band_to_rgb(img: Image.Image) -> Image.Image:
    """One band of rows of any Pillow mode (L, LA, P, RGBA, I;16, I, F, CMYK, ...) → 8-bit RGB; alpha over black."""
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


# EXIF orientation → the transpose that undoes it (as ImageOps.exif_transpose)
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip
ORIENTATION_TAG = 0x0112


def _to_rgb(img: Image.Image) -> Image.Image:
    """A decoded image of any mode → a new 8-bit RGB image, converted DECODE_BLOCK pixels at a time (module
    docstring), EXIF orientation applied."""
    width, height = img.size
    rows = max(1, DECODE_BLOCK // max(1, width))
    if rows >= height:
        out = _band_to_rgb(img)  # always a new image (convert copies)
    else:
        out = Image.new("RGB", img.size)
        for top in range(0, height, rows):
            out.paste(_band_to_rgb(img.crop((0, top, width, min(top + rows, height)))), (0, top))
    orientation = img.getexif().get(ORIENTATION_TAG, 1)
    return out.transpose(ORIENTATIONS[orientation]) if orientation in ORIENTATIONS else out


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


def load_image(src: ImageInput, name: str, min_size: int = 1, *, max_pixels: int | None = None) -> Image.Image:
    """Decode any supported input into an RGB image with EXIF orientation applied.

    Raises ImageError naming `name` and the reason (missing, not a regular file, empty, not an
    image, truncated, too small, more than `max_pixels` pixels: checked before decoding).
    """
    if isinstance(src, np.ndarray):
        if max_pixels is not None and src.ndim >= 2 and src.shape[0] * src.shape[1] > max_pixels:
            raise ImageError(name, f"array of shape {src.shape} has more than the limit of {max_pixels:,} pixels")
        img = _array_to_image(src, name)
    elif isinstance(src, Image.Image):
        check_size(src, name, min_size, max_pixels)
        img = _to_rgb(src)
    elif isinstance(src, (str, Path)):
        path = Path(src)
        check_path(path, name)
        try:
            with open_regular(path) as f, Image.open(f) as opened:
                check_size(opened, name, min_size, max_pixels)
                opened.load()
                img = _to_rgb(opened)
        except ImageError:
            raise
        except NotRegularError as exc:
            raise ImageError(name, str(exc).rpartition(": ")[2]) from None
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
