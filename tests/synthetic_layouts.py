"""Tiny synthetic datasets in the BTAD and MVTec LOCO AD layouts.

Images are the textured ones of ``synthetic.py`` (smooth noise and stripes in a
per-class colour); anomalous images carry painted defects and their masks are
exact: nonzero exactly where paint was applied. Everything is deterministic
from ``seed``; ``size`` is ``(H, W)``. MPDD is MVTec-AD's tree: use
``synthetic.make_mvtec``.

    from synthetic_layouts import make_btad
    root = make_btad(tmp_path / "btad")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from synthetic import DEFECTS, _anomalous, _texture

BTAD_EXTENSIONS = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}  # image, mask: as BTAD
LOCO_DEFECTS = ("logical_anomalies", "structural_anomalies")
LOCO_VALUES = (255, 7, 120)  # the values of a LOCO image's masks 000, 001, 002: not only 255


def make_btad(
    root: Path,
    classes: tuple[str, ...] = ("01", "02", "03"),
    n_train: int = 4,
    n_good: int = 2,
    n_bad: int = 3,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> Path:
    """Write BTAD under ``root``: train/ok, test/ok, test/ko, ground_truth/ko/<stem>.<ext>; return root.

    Extensions follow BTAD_EXTENSIONS (classes not in it: png images, bmp masks).
    """
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        image_ext, mask_ext = BTAD_EXTENSIONS.get(name, (".png", ".bmp"))
        base = root / name
        for i in range(n_train):
            _save(_texture(rng, size, index), base / "train" / "ok" / f"{i:04d}{image_ext}")
        for i in range(n_good):
            _save(_texture(rng, size, index), base / "test" / "ok" / f"{i:04d}{image_ext}")
        for i in range(n_bad):
            image, mask = _anomalous(rng, size, index, DEFECTS[i % len(DEFECTS)])
            _save(image, base / "test" / "ko" / f"{i:04d}{image_ext}")
            _save(mask, base / "ground_truth" / "ko" / f"{i:04d}{mask_ext}")
    return root


def make_loco(
    root: Path,
    classes: tuple[str, ...] = ("breakfast_box", "pushpins"),
    n_train: int = 4,
    n_val: int = 2,
    n_good: int = 2,
    n_bad: int = 4,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write MVTec LOCO AD under ``root``; return root.

    Per class: train/good, validation/good, test/good, and ``n_bad`` anomalous
    images alternating between logical and structural; anomalous image i has
    ``i % 3 + 1`` defects, each with its own mask ``ground_truth/<defect>/<stem>/00j.png``
    holding LOCO_VALUES[j] where painted.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")  # files beside the classes are ignored
    for index, name in enumerate(classes):
        base = root / name
        for folder, count in (("train", n_train), ("validation", n_val), ("test", n_good)):
            for i in range(count):
                _save(_texture(rng, size, index), base / folder / "good" / f"{i:03d}.png")
        for i in range(n_bad):
            defect = LOCO_DEFECTS[i % len(LOCO_DEFECTS)]
            image, masks = _painted(rng, size, index, i % 3 + 1)
            _save(image, base / "test" / defect / f"{i:03d}.png")
            for j, mask in enumerate(masks):
                mask_path = base / "ground_truth" / defect / f"{i:03d}" / f"{j:03d}.png"
                _save(Image.fromarray(mask.astype(np.uint8) * LOCO_VALUES[j]), mask_path)
    return root


def _painted(
    rng: np.random.Generator, size: tuple[int, int], index: int, count: int
) -> tuple[Image.Image, list[np.ndarray]]:
    """A textured image with ``count`` painted rectangles, and one bool mask per rectangle (they may overlap)."""
    image = _texture(rng, size, index)
    height, width = size
    masks = []
    for _ in range(count):
        canvas = Image.new("L", (width, height), 0)
        x, y = int(rng.integers(2, width - 12)), int(rng.integers(2, height - 12))
        ImageDraw.Draw(canvas).rectangle((x, y, x + int(rng.integers(3, 10)), y + int(rng.integers(3, 10))), fill=255)
        image.paste((255, 0, 255), (0, 0), canvas)
        masks.append(np.asarray(canvas) != 0)
    return image, masks


def _save(image: Image.Image, path: Path) -> None:
    """Save in the format the extension names (bmp, png, jpg)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
