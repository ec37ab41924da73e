"""The composite picture of one result, for people: photo | heat | mask side by side, the decision written on it.

`composite` lays out, on a white canvas: a header with the label on its colour, the score
against the threshold (and the review threshold where there is one) and the file's name; the
three panels at a readable size (each `PANEL_MIN`..`PANEL_MAX` pixels tall and at most
`PANEL_MAX_WIDTH` wide: the photo resized bicubically, the map bilinearly, the mask with nearest
neighbour), captioned; under the heat panel a colour bar from the threshold to 1 with the map's
peak marked, under the photo what below the threshold looks like (the photo, no tint), under the
mask the regions found. A note (winclip.inspection.decisions.region_note: a label without any
region above the threshold) is written in red under the header, a warning (random weights) in red
under the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .decisions import Region
from .render import heat, heat_colours

PANEL_MIN, PANEL_MAX = 256, 512  # panel height in pixels: small photos are enlarged, large ones reduced
PANEL_MAX_WIDTH = 768
MARGIN, GAP = 12, 10
FOOTER = 50  # under the panels: captions and the colour bar
TITLE_SIZE, TEXT_SIZE = 18, 13
LABEL_COLOURS = {"normal": (42, 138, 74), "review": (201, 138, 0), "anomalous": (192, 38, 45)}
INK, MUTED, WARN = (29, 36, 48), (102, 114, 138), (176, 42, 42)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at `size` pixels (its small bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def panel_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of a panel showing a `width`×`height` photo at a readable size, aspect ratio kept."""
    scale = min(max(PANEL_MIN, min(PANEL_MAX, height)) / height, PANEL_MAX_WIDTH / width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _panels(
    image: Image.Image, score_map: np.ndarray, threshold: float, regions: Sequence[Region], size: tuple[int, int]
) -> list[Image.Image]:
    """The photo, its heat and its mask at `size` (regions outlined in white on the heat)."""
    photo = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    small = np.asarray(Image.fromarray(score_map.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))
    hot = heat(photo, small, threshold)
    draw = ImageDraw.Draw(hot)
    sx, sy = size[0] / image.width, size[1] / image.height
    for r in regions:
        box = (r.x * sx, r.y * sy, (r.x + r.width) * sx - 1, (r.y + r.height) * sy - 1)
        draw.rectangle(box, outline=(255, 255, 255), width=2)
    full_mask = Image.fromarray((score_map >= threshold).astype(np.uint8) * np.uint8(255))
    mask = full_mask.resize(size, Image.Resampling.NEAREST).convert("RGB")
    return [photo, hot, mask]


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """`text`, cut with "..." to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _colour_bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, threshold: float, peak: float) -> None:
    """The heat's scale from the threshold (left) to 1 (right), the map's peak marked."""
    font = _font(TEXT_SIZE)
    bar = heat_colours(np.linspace(0.0, 1.0, width))
    for i in range(width):
        draw.line((x + i, y, x + i, y + 12), fill=tuple(int(c) for c in bar[i]))
    draw.rectangle((x, y, x + width - 1, y + 12), outline=MUTED)
    draw.text((x, y + 15), f"{threshold:.3f} = threshold", fill=INK, font=font)
    draw.text((x + width, y + 15), "1.0", fill=INK, font=font, anchor="ra")
    if peak >= threshold:
        px = x + round((width - 1) * (peak - threshold) / max(1.0 - threshold, 1e-12))
        draw.polygon([(px, y - 1), (px - 5, y - 8), (px + 5, y - 8)], fill=INK)
        text = f"heat over the photo; map peak {peak:.3f} (marked)"
    else:
        text = f"map peak {peak:.3f} < threshold: nothing coloured"
    draw.text((x, y + 31), _fit(draw, text, font, width), fill=MUTED, font=font)


def composite(
    image: Image.Image,
    score_map: np.ndarray,
    *,
    score: float,
    threshold: float,
    label: str,
    review_threshold: float | None = None,
    regions: Sequence[Region] = (),
    title: str = "",
    note: str = "",
    warning: str = "",
) -> Image.Image:
    """Photo | heat | mask of one result with its label, score, threshold and a colour bar (module docstring)."""
    big, small = _font(TITLE_SIZE), _font(TEXT_SIZE)
    pw, ph = panel_size(image.width, image.height)
    header = TITLE_SIZE + 10 + (TEXT_SIZE + 6 if note else 0)
    width = 2 * MARGIN + 3 * pw + 2 * GAP
    height = MARGIN + header + ph + GAP + FOOTER + MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    chip = f" {label.upper()} "
    chip_w = round(draw.textlength(chip, font=big))
    draw.rectangle((MARGIN, MARGIN, MARGIN + chip_w, MARGIN + TITLE_SIZE + 4), fill=LABEL_COLOURS.get(label, INK))
    draw.text((MARGIN, MARGIN + 2), chip, fill=(255, 255, 255), font=big)
    verdict = f"score {score:.4f} {'>=' if score >= threshold else '<'} threshold {threshold:.4f}"
    if review_threshold is not None and review_threshold < threshold:
        verdict += f"  (review from {review_threshold:.4f})"
    room = width - 2 * MARGIN - chip_w - 10
    draw.text((MARGIN + chip_w + 10, MARGIN + 2), _fit(draw, verdict, big, room), fill=INK, font=big)
    if note:
        draw.text(
            (MARGIN, MARGIN + TITLE_SIZE + 10), _fit(draw, note, small, width - 2 * MARGIN), fill=WARN, font=small
        )
    top = MARGIN + header
    for i, panel in enumerate(_panels(image, score_map, threshold, regions, (pw, ph))):
        canvas.paste(panel, (MARGIN + i * (pw + GAP), top))
    below = top + ph + GAP
    photo_x, heat_x, mask_x = (MARGIN + i * (pw + GAP) for i in range(3))
    draw.text(
        (photo_x, below), _fit(draw, f"photo, {image.width}x{image.height} px", small, pw), fill=MUTED, font=small
    )
    draw.text((photo_x, below + 17), _fit(draw, title, small, pw), fill=MUTED, font=small)
    _colour_bar(draw, heat_x, below + 2, pw, threshold, float(np.max(score_map)))
    found = f"mask: map >= threshold, {len(regions)} region{'' if len(regions) == 1 else 's'}"
    draw.text((mask_x, below), _fit(draw, found, small, pw), fill=MUTED, font=small)
    for i, part in enumerate(warning.split(": ", 1) if warning else ()):
        draw.text((mask_x, below + 17 * (i + 1)), _fit(draw, part, small, pw), fill=WARN, font=small)
    return canvas
