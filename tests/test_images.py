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
