"""Pictures of a result: overlays and masks for machines, a composite for people, and grayscale maps.

Overlays (`overlay`) keep the fixed scale anchored at the threshold t, never stretched per
image: `v = 0.5·m/t` below t and `v = 0.5 + 0.5·(m − t)/(1 − t)` from t up, so v = 0.5 (yellow)
exactly at the threshold, blues below, orange to red above; colour = `COLORMAP(v)`, blended
with the photo at alpha `OVERLAY_ALPHA`; regions are outlined in white.

The composite (`composite`, winclip.inspection.composite) is what a person reads: photo |
heat | mask side by side at a readable size, the label, score and threshold written on it and
a colour bar. Its heat panel leaves every pixel below the threshold as the photo is (no tint) and
colours the rest with `HEAT_COLORMAP` (matplotlib's perceptual "inferno" from 0.2 up: lightness
rises with the value, so it reads in grey and to colour-blind eyes, and its purples, oranges and
yellows stand out from a grey or blue part) over `(m − t)/(1 − t)`. The service's page draws the
same panels with the same stops from the grayscale map (`map_image`) when its slider moves.

Every PNG winclip writes carries text chunks (`png_bytes`: `Software: winclip <version>`,
`winclip-output: overlay|mask|composite`), so `profile add-good` can refuse one.

Pictures are drawn `RENDER_BLOCK` pixels at a time into uint8 outputs (the overlay reads the photo a
block at a time too), so the working memory of drawing one stays a few tens of MiB whatever the
image size besides the output (4 bytes a pixel for an RGB image in Pillow, 1 for grey).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from .. import __version__
from .decisions import Region
from .inputs import OUTPUT_KEY

# Colour scale of the overlays: (v, RGB) anchors, linearly interpolated; v = 0.5 at the threshold.
COLORMAP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (20, 30, 140)),
    (0.3, (30, 110, 230)),
    (0.45, (90, 200, 220)),
    (0.5, (255, 230, 0)),
    (0.75, (255, 120, 0)),
    (1.0, (200, 0, 0)),
)
OVERLAY_ALPHA = 0.5
# The composite's heat: matplotlib's "inferno" at 0.2, 0.3, ..., 1.0 (9 stops, linear in between) over (m − t)/(1 − t).
HEAT_COLORMAP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (66, 10, 104)),
    (0.125, (106, 23, 110)),
    (0.25, (147, 38, 103)),
    (0.375, (188, 55, 84)),
    (0.5, (221, 81, 58)),
    (0.625, (243, 120, 25)),
    (0.75, (252, 165, 10)),
    (0.875, (246, 215, 70)),
    (1.0, (252, 255, 164)),
)
HEAT_ALPHA = 0.7  # the heat's weight over the photo where the map reaches the threshold
REGION_LINE_FRACTION = 1 / 200  # region outline width relative to the image's short side
RENDER_BLOCK = 1 << 18  # pixels coloured at a time (float64 temporaries of a few MiB each)


def _row_blocks(height: int, width: int) -> list[slice]:
    """Row bands of about RENDER_BLOCK pixels covering an image."""
    rows = max(1, RENDER_BLOCK // max(1, width))
    return [slice(top, min(top + rows, height)) for top in range(0, height, rows)]


def scale_values(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """Map values → colour-scale position v in [0, 1]: 0.5·m/t below t, 0.5 + 0.5·(m−t)/(1−t) above."""
    m = score_map.astype(np.float64)
    below = 0.5 * m / threshold
    above = 0.5 + 0.5 * (m - threshold) / max(1.0 - threshold, 1e-12)
    return np.clip(np.where(m < threshold, below, above), 0.0, 1.0)


def _interpolate(v: np.ndarray, stops: Sequence[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """Positions in [0, 1] → `(..., 3)` uint8 colours, linear between the stops."""
    xs = [a for a, _ in stops]
    rgb = [np.interp(v, xs, [c[ch] for _, c in stops]) for ch in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def colorize(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """`(H, W)` map → `(H, W, 3)` uint8 colours on the fixed threshold-anchored scale."""
    return _interpolate(scale_values(score_map, threshold), COLORMAP)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Positions in [0, 1] (0 = the threshold, 1 = a map value of 1) → `(..., 3)` uint8 `HEAT_COLORMAP` colours."""
    return _interpolate(np.clip(values, 0.0, 1.0), HEAT_COLORMAP)


def heat(image: Image.Image, score_map: np.ndarray, threshold: float) -> Image.Image:
    """The photo, untouched below the threshold, blended at HEAT_ALPHA with the heat colour where map >= threshold."""
    photo = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    out = photo.copy()
    for rows in _row_blocks(*score_map.shape):
        m = score_map[rows].astype(np.float64)
        above = m >= threshold
        if not above.any():
            continue
        colour = heat_colours((m[above] - threshold) / max(1.0 - threshold, 1e-12)).astype(np.float32)
        part = out[rows]
        part[above] = ((1.0 - HEAT_ALPHA) * photo[rows][above].astype(np.float32) + HEAT_ALPHA * colour).round()
    return Image.fromarray(out)


def png_info(kind: str) -> PngImagePlugin.PngInfo:
    """The text chunks that mark a picture winclip wrote: Software and winclip-output = `kind`."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"winclip {__version__}")
    info.add_text(OUTPUT_KEY, kind)
    return info


def png_bytes(image: Image.Image, kind: str, *, compress_level: int = 6) -> bytes:
    """A picture winclip wrote as PNG bytes, marked (png_info)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(kind), compress_level=compress_level)
    return buffer.getvalue()


def overlay(image: Image.Image, score_map: np.ndarray, threshold: float, regions: Sequence[Region] = ()) -> Image.Image:
    """The photo blended with the coloured map (alpha OVERLAY_ALPHA), regions outlined in white."""
    out = Image.new("RGB", image.size)
    for rows in _row_blocks(*score_map.shape):
        band = image.crop((0, rows.start, image.width, rows.stop))  # the photo a block at a time: no full copy
        photo = np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
        mixed = (1.0 - OVERLAY_ALPHA) * photo.astype(np.float32) + OVERLAY_ALPHA * colorize(score_map[rows], threshold)
        out.paste(Image.fromarray(mixed.round().astype(np.uint8)), (0, rows.start))
    draw = ImageDraw.Draw(out)
    line = max(1, round(min(out.size) * REGION_LINE_FRACTION))
    for r in regions:
        draw.rectangle((r.x, r.y, r.x + r.width - 1, r.y + r.height - 1), outline=(255, 255, 255), width=line)
    return out


def mask_image(score_map: np.ndarray, threshold: float) -> Image.Image:
    """Binary mask PNG: 255 where map >= threshold, else 0 (mode L)."""
    return Image.fromarray((score_map >= threshold).astype(np.uint8) * np.uint8(255))


def map_image(score_map: np.ndarray) -> Image.Image:
    """The map as an 8-bit grayscale image: pixel = round(255 · value), clipped to [0, 255]."""
    out = np.empty(score_map.shape, np.uint8)
    for rows in _row_blocks(*score_map.shape):
        out[rows] = np.clip(np.rint(score_map[rows] * 255.0), 0, 255)
    return Image.fromarray(out)
