"""Image I/O (winclip.images): every input form to RGB, EXIF, bad files named with their reason."""

import numpy as np
import pytest
from PIL import Image

from helpers import textured
from winclip.images import ImageError, load_image


def test_modes_become_rgb(tmp_path, rng):
    rgb = textured(rng, 20, 30)
    cases = {
        "gray.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)])),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "deep.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        out = load_image(tmp_path / name, name)
        assert out.mode == "RGB" and out.size == (30, 20), name
    deep = np.asarray(load_image(tmp_path / "deep.png", "deep"))
    assert np.array_equal(deep[..., 0], rgb[..., 0])  # 16-bit scaled back exactly
    opaque = np.asarray(load_image(tmp_path / "rgba.png", "rgba"))
    assert np.array_equal(opaque, rgb)


def test_arrays_of_every_kind(rng):
    rgb = textured(rng, 10, 12)
    assert np.array_equal(np.asarray(load_image(rgb, "a")), rgb)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.float32) / 255.0, "f")), rgb)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.uint16) * 257, "u16")), rgb)
    gray = np.asarray(load_image(rgb[..., 0], "g"))
    assert np.array_equal(gray[..., 1], rgb[..., 0])
    with pytest.raises(ImageError, match=r"^x: array of shape \(2, 3, 5\)"):
        load_image(np.zeros((2, 3, 5), np.uint8), "x")
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((4, 4), np.nan), "n")


def test_exif_orientation_is_honoured(tmp_path, rng):
    rgb = textured(rng, 20, 30)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg", "rot")
    assert out.size == (20, 30)


def test_bad_files_name_the_file_and_the_reason(tmp_path, rng):
    Image.fromarray(textured(rng, 64, 64)).save(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image at all")
    Image.fromarray(textured(rng, 5, 40)).save(tmp_path / "tiny.png")
    expected = {
        "missing.png": "file not found",
        "cut.jpg": "truncated or corrupt",
        "empty.png": r"file is empty \(0 bytes\)",
        "notes.png": "not an image file",
        "tiny.png": "image is 40x5 pixels, smaller than the minimum 8",
    }
    for name, reason in expected.items():
        path = tmp_path / name
        with pytest.raises(ImageError, match=f"^{path}: .*{reason}") as err:
            load_image(path, str(path), min_size=8)
        assert "\n" not in str(err.value)
        assert err.value.source == str(path)


# -- issue 22: decoding in bounded memory, sizes from the header --------------------------------------


def test_every_mode_decodes_in_blocks_to_the_same_pixels_as_a_whole_image_conversion(tmp_path, rng):
    """The blockwise conversion gives exactly the pixels of converting the whole image at once (the old way)."""
    h, w = 300, 200  # several blocks of rows at a small block size
    rgb = textured(rng, h, w)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    deep = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    cases = {
        "L": (Image.fromarray(rgb[..., 0]), lambda a: np.dstack([a] * 3)),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha])), None),
        "I;16": (Image.fromarray(deep), lambda a: None),
        "F": (Image.fromarray(rng.random((h, w), dtype=np.float32) * 1.2 - 0.1), None),
        "P+transparency": (Image.fromarray(rgb).convert("P"), None),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), None),
    }
    cases["P+transparency"][0].info["transparency"] = 3
    for name, (img, _) in cases.items():
        whole = load_image(img, name)  # an in-memory image: converted at once
        path = tmp_path / f"{name.replace(';', '').replace('+', '_')}.tiff"
        img.save(path)
        import winclip.images as images

        old = images.DECODE_BLOCK
        images.DECODE_BLOCK = 7 * w  # 7 rows a block
        try:
            blocks = load_image(path, name)
        finally:
            images.DECODE_BLOCK = old
        assert blocks.mode == "RGB" and np.array_equal(np.asarray(blocks), np.asarray(whole)), name
    deep16 = np.asarray(load_image(cases["I;16"][0], "d"))[..., 0]
    assert np.array_equal(deep16, np.clip(deep / 257.0 + 0.5, 0, 255).astype(np.uint8))


def test_a_16_bit_or_float_photo_decodes_without_float64_copies_of_the_whole_image(tmp_path):
    import tracemalloc

    h, w = 1500, 2000  # 3 MP: a float64 copy is 24 MB
    for mode in ("I;16", "F"):
        path = tmp_path / f"{mode.replace(';', '')}.tiff"
        Image.new(mode, (w, h)).save(path)
        tracemalloc.start()
        load_image(path, mode)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 * 2**20, f"{mode}: {peak / 2**20:.0f} MiB of numpy temporaries"


def test_decoded_bytes_read_from_the_header(tmp_path):
    from winclip.images import decoded_bytes

    sizes = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I": 4, "F": 4, "RGB": 4, "RGBA": 4, "LA": 4, "CMYK": 4}
    for mode, per_pixel in sizes.items():
        path = tmp_path / f"{mode.replace(';', '')}.tiff"
        Image.new(mode, (30, 20)).save(path)
        with Image.open(path) as opened:
            assert decoded_bytes(opened) == 30 * 20 * per_pixel, mode


def test_a_photo_smaller_than_the_minimum_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "thin.png"
    Image.new("L", (400_000, 3)).save(path)
    decoded = []
    real = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real(self))
    with pytest.raises(ImageError, match="400000x3 pixels, smaller than the minimum 8"):
        load_image(path, "thin", 8)
    assert decoded == []
