"""Pictures of a result (winclip.inspection.render): the fixed colour scale anchored at the threshold."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from winclip.inspection import composite as layout
from winclip.inspection.composite import composite, panel_size
from winclip.inspection.decisions import region_note
from winclip.inspection.inputs import winclip_output
from winclip.inspection.render import HEAT_ALPHA, HEAT_COLORMAP, colorize, heat, heat_colours, png_bytes, scale_values


def test_colour_scale_is_fixed_and_anchored_at_the_threshold():
    m = np.array([[0.0, 0.15, 0.3, 0.65, 1.0]], np.float32)
    np.testing.assert_allclose(scale_values(m, 0.3), [[0.0, 0.25, 0.5, 0.75, 1.0]], atol=1e-7)
    colours = colorize(m, 0.3)
    assert tuple(colours[0, 2]) == (255, 230, 0) and tuple(colours[0, 4]) == (200, 0, 0)
    low = np.full((4, 4), 0.1, np.float32)
    low[0, 0] = 0.12  # a normal image with tiny variation is not stretched to the full scale
    assert (colorize(low, 0.3)[..., 2] > colorize(low, 0.3)[..., 0]).all()  # blue everywhere


def _luminance(rgb) -> float:
    """Relative luminance of an sRGB colour (WCAG)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(lin @ [0.2126, 0.7152, 0.0722])


def test_the_heat_scale_is_perceptual_and_leaves_the_photo_untouched_below_the_threshold():
    stops = [c for _, c in HEAT_COLORMAP]
    lum = [_luminance(c) for c in stops]
    assert all(a < b for a, b in zip(lum, lum[1:], strict=False))  # lightness rises with the value: reads in grey
    photo = Image.fromarray(np.full((4, 5, 3), (40, 90, 200), np.uint8))  # a bluish photo
    m = np.array([[0.1, 0.29, 0.3, 0.65, 1.0]] * 4, np.float32)
    out = np.asarray(heat(photo, m, 0.3))
    assert (out[:, :2] == (40, 90, 200)).all()  # below the threshold: exactly the photo, no tint
    expected = (1 - HEAT_ALPHA) * np.array([40, 90, 200]) + HEAT_ALPHA * heat_colours(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(out[0, 2:], expected.round().astype(np.uint8))
    assert tuple(heat_colours(np.array([0.0]))[0]) == HEAT_COLORMAP[0][1]


def test_every_png_winclip_writes_is_marked(tmp_path):
    data = png_bytes(Image.new("L", (3, 3)), "mask")
    (tmp_path / "m.png").write_bytes(data)
    with Image.open(tmp_path / "m.png") as image:
        assert image.info["winclip-output"] == "mask" and image.info["Software"].startswith("winclip ")
    assert winclip_output(tmp_path / "m.png") == "mask"
    Image.new("RGB", (3, 3)).save(tmp_path / "photo.png")
    Image.new("RGB", (3, 3)).save(tmp_path / "photo.jpg")
    assert winclip_output(tmp_path / "photo.png") is None and winclip_output(tmp_path / "photo.jpg") is None


@pytest.mark.parametrize(("h", "w"), [(256, 256), (48, 64), (1200, 1600)])
def test_the_composite_shows_photo_heat_and_mask_side_by_side_with_a_colour_bar(h, w):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    m = np.zeros((h, w), np.float32)
    m[h // 4 : h // 2, w // 4 : w // 2] = 0.8
    picture = composite(photo, m, score=0.7, threshold=0.5, label="anomalous", title="a.png")
    pw, ph = panel_size(w, h)
    assert layout.PANEL_MIN <= ph <= layout.PANEL_MAX and pw <= layout.PANEL_MAX_WIDTH and abs(pw / ph - w / h) < 0.02
    assert picture.width >= 2 * picture.height  # three panels side by side
    pixels = np.asarray(picture)
    top = layout.MARGIN + layout.TITLE_SIZE + 10  # under the header line (no note)
    x0, x1, x2 = (layout.MARGIN + i * (pw + layout.GAP) for i in range(3))  # the panels' left edges
    np.testing.assert_array_equal(pixels[top : top + ph, x0 : x0 + pw], np.asarray(photo.resize((pw, ph), 3)))
    mask = pixels[top : top + ph, x2 : x2 + pw]
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).mean() == pytest.approx(1 / 16, abs=0.02)
    bar = pixels[top + ph + layout.GAP + 8, x1 + 1 : x1 + pw - 1]  # a row through the colour bar
    colours = heat_colours(np.linspace(0, 1, pw))[1:-1]
    assert np.abs(bar.astype(int) - colours.astype(int)).max() <= 1  # the heat scale, threshold to 1


def test_a_composite_says_when_an_anomalous_label_has_no_region_and_when_weights_are_random():
    photo = Image.new("RGB", (64, 64), (90, 90, 90))
    m = np.full((64, 64), 0.4, np.float32)
    note = region_note("anomalous", (), 0.4, 0.5)
    assert note.startswith("no region above the threshold") and "(0.4000)" in note
    plain = np.asarray(composite(photo, m, score=0.6, threshold=0.5, label="anomalous"))
    noted = np.asarray(composite(photo, m, score=0.6, threshold=0.5, label="anomalous", note=note, warning="W: x"))
    red = lambda a: ((a[..., 0] > 150) & (a[..., 1] < 80) & (a[..., 2] < 80)).sum()  # noqa: E731
    assert noted.shape[0] > plain.shape[0] and red(noted) > red(plain) + 50  # a red line of text, and the warning
