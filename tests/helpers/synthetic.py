"""Tiny synthetic anomaly-detection datasets in the MVTec-AD, VisA and folder layouts.

Images are textured RGB PNGs (smooth noise plus stripes in a per-class colour);
anomalous images carry painted blobs or scratches of the complementary colour,
and their masks (PNG, mode L) are exactly 255 where paint was applied and 0
elsewhere. Everything is deterministic from ``seed``; ``size`` is ``(H, W)``.

    from helpers.synthetic import make_mvtec
    root = make_mvtec(tmp_path / "mvtec")
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFECTS = ("scratch", "blob")  # defect types, used in turn


def make_mvtec(
    root: Path,
    classes: tuple[str, ...] = ("widget", "metal_nut"),
    n_train: int = 6,
    n_good: int = 4,
    n_bad: int = 4,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> Path:
    """Write an MVTec-AD tree under ``root``: train/good, test/<defect>, ground_truth; return root."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        base = root / name
        for i in range(n_train):
            _save(_texture(rng, size, index), base / "train" / "good" / f"{i:03d}.png")
        for i in range(n_good):
            _save(_texture(rng, size, index), base / "test" / "good" / f"{i:03d}.png")
        for i in range(n_bad):
            defect = DEFECTS[i % len(DEFECTS)]
            image, mask = _anomalous(rng, size, index, defect)
            _save(image, base / "test" / defect / f"{i:03d}.png")
            _save(mask, base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def make_visa(
    root: Path,
    classes: tuple[str, ...] = ("candle", "pcb1"),
    n_train: int = 6,
    n_good: int = 4,
    n_bad: int = 4,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
) -> Path:
    """Write a VisA tree (images, masks, split_csv/1cls.csv) under ``root``; return root."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, name in enumerate(classes):
        normal = Path(name) / "Data" / "Images" / "Normal"
        for i in range(n_train + n_good):
            _save(_texture(rng, size, index), root / normal / f"{i:04d}.png")
            split = "train" if i < n_train else "test"
            rows.append([name, split, "normal", (normal / f"{i:04d}.png").as_posix(), ""])
        for i in range(n_bad):
            image, mask = _anomalous(rng, size, index, DEFECTS[i % len(DEFECTS)])
            image_path = Path(name) / "Data" / "Images" / "Anomaly" / f"{i:03d}.png"
            mask_path = Path(name) / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
            _save(image, root / image_path)
            _save(mask, root / mask_path)
            rows.append([name, "test", "anomaly", image_path.as_posix(), mask_path.as_posix()])
    table = root / "split_csv" / "1cls.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


def make_folder(
    root: Path,
    classes: tuple[str, ...] = ("widget", "gadget"),
    n_ref: int = 6,
    n_good: int = 4,
    n_bad: int = 4,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> Path:
    """Write the folder layout under ``root``; return root.

    Per class: ``reference/*.JPG`` (upper-case extension on purpose),
    ``good/*.png``, ``defect/<type>/<type>_<i>.png`` and a flat ``masks/``
    whose files alternate between ``<stem>.png`` and ``<stem>_mask.png``.
    """
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        base = root / name
        for i in range(n_ref):
            _save(_texture(rng, size, index), base / "reference" / f"{i:03d}.JPG")
        for i in range(n_good):
            _save(_texture(rng, size, index), base / "good" / f"{i:03d}.png")
        for i in range(n_bad):
            defect = DEFECTS[i % len(DEFECTS)]
            image, mask = _anomalous(rng, size, index, defect)
            stem = f"{defect}_{i:03d}"
            _save(image, base / "defect" / defect / f"{stem}.png")
            _save(mask, base / "masks" / (f"{stem}.png" if i % 2 == 0 else f"{stem}_mask.png"))
    return root


def _texture(rng: np.random.Generator, size: tuple[int, int], index: int) -> Image.Image:
    """Smooth noise plus diagonal stripes around a colour that depends on the class ``index``."""
    height, width = size
    colour = np.array([(60 + 70 * index) % 200, 110, (170 - 50 * index) % 200], dtype=float)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    noise = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=float) - 128.0
    rows, cols = np.mgrid[0:height, 0:width]
    stripes = 15.0 * np.sin((rows + cols) * (0.5 + 0.1 * index))[..., None]
    return Image.fromarray(np.clip(colour + 0.2 * noise + stripes, 0, 255).astype(np.uint8))


def _anomalous(
    rng: np.random.Generator, size: tuple[int, int], index: int, defect: str
) -> tuple[Image.Image, Image.Image]:
    """A textured image with one painted defect, and its exact mask (mode L, 0/255)."""
    image = _texture(rng, size, index)
    height, width = size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    x, y = int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4))
    if defect == "blob":
        rx, ry = int(rng.integers(3, width // 6 + 4)), int(rng.integers(3, height // 6 + 4))
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
    else:
        dx, dy = int(rng.integers(width // 8, width // 4 + 1)), int(rng.integers(-height // 4, height // 4 + 1))
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=255, width=2)
    complement = tuple(255 - int(c) for c in np.asarray(image).reshape(-1, 3).mean(axis=0))
    image.paste(complement, (0, 0), mask)
    return image, mask


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
