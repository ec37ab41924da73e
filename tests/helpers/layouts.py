"""Tiny synthetic datasets in the BTAD, MVTec LOCO AD, Real-IAD and manifest layouts.

Images are the textured ones of ``synthetic.py`` (smooth noise and stripes in a
per-class colour); anomalous images carry painted defects and their masks are
exact: nonzero exactly where paint was applied. Everything is deterministic
from ``seed``; ``size`` is ``(H, W)``. MPDD is MVTec-AD's tree: use
``synthetic.make_mvtec``.

    from helpers.layouts import make_btad
    root = make_btad(tmp_path / "btad")
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from helpers.synthetic import DEFECTS, _anomalous, _texture

BTAD_EXTENSIONS = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}  # image, mask: as BTAD
LOCO_DEFECTS = ("logical_anomalies", "structural_anomalies")
LOCO_VALUES = (255, 7, 120)  # the values of a LOCO image's masks 000, 001, 002: not only 255
REALIAD_VIEWS = ("C1", "C2", "C3", "C4", "C5")


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


def make_realiad(
    root: Path,
    classes: tuple[str, ...] = ("audiojack", "toy_brick"),
    n_train: int = 2,
    n_good: int = 1,
    n_bad: int = 2,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> Path:
    """Write Real-IAD under ``root``: realiad_256/ and both JSON sets; return ``root / "realiad_256"``.

    Samples have five views. OK samples: ``n_train`` in train, ``n_good`` in
    test. NG samples (``n_bad``, in test; defect codes AK, BX in turn): views C1
    and C3 show the defect and have a mask, the others are listed as OK under
    the NG folder, as in Real-IAD. ``realiad_jsons`` lists every view,
    ``realiad_jsons_sv`` only C1.
    """
    rng = np.random.default_rng(seed)
    images = root / "realiad_256"
    for index, name in enumerate(classes):
        entries: dict[str, list[dict]] = {"train": [], "test": []}
        for s in range(n_train + n_good + n_bad):
            code = "OK" if s < n_train + n_good else ("AK", "BX")[s % 2]
            folder = f"OK/S{s:04d}" if code == "OK" else f"NG/{code}/S{s:04d}"
            for view in REALIAD_VIEWS:
                stem = f"{folder}/{name}_{s:04d}_{'OK' if code == 'OK' else 'NG'}_{view}_20230922093358"
                entry = {"category": name, "anomaly_class": "OK", "image_path": f"{stem}.jpg", "mask_path": None}
                if code != "OK" and view in ("C1", "C3"):
                    image, mask = _anomalous(rng, size, index, DEFECTS[s % len(DEFECTS)])
                    _save(mask, images / name / f"{stem}_mask.png")
                    entry.update(anomaly_class=code, mask_path=f"{stem}_mask.png")
                else:
                    image = _texture(rng, size, index)
                _save(image, images / name / f"{stem}.jpg")
                entries["train" if s < n_train else "test"].append(entry)
        doc = {"meta": {"prefix": f"{name}/", "normal_class": "OK", "pre_transform": None}, **entries}
        single = {**doc, **{split: [e for e in doc[split] if "_C1_" in e["image_path"]] for split in ("train", "test")}}
        _write_json(root / "realiad_jsons" / f"{name}.json", doc)
        _write_json(root / "realiad_jsons_sv" / f"{name}.json", single)
    return images


def make_manifest(
    root: Path,
    classes: tuple[str, ...] = ("widget", "gadget"),
    n_train: int = 4,
    n_good: int = 2,
    n_bad: int = 3,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> Path:
    """Write images under ``root/images/``, masks under ``root/masks/`` and ``root/manifest.csv``; return the CSV.

    Columns are in the documented order ``path,label,mask,split,class``; labels
    cycle through the accepted spellings in mixed case; each class also has one
    anomalous train row (not a reference) and the good test rows carry an empty mask.
    """
    rng = np.random.default_rng(seed)
    normal, anomalous = ("good", "0", "Normal", "OK"), ("anomaly", "1", "BAD", "anomalous", "defect", "ng")
    rows = []
    for index, name in enumerate(classes):
        for i in range(n_train + n_good):
            path = f"images/{name}/good_{i:03d}.png"
            _save(_texture(rng, size, index), root / path)
            rows.append([path, normal[i % len(normal)], "", "train" if i < n_train else "Test", name])
        for i in range(n_bad + 1):
            image, mask = _anomalous(rng, size, index, DEFECTS[i % len(DEFECTS)])
            path, mask_path = f"images/{name}/bad_{i:03d}.png", f"masks/{name}/bad_{i:03d}.png"
            _save(image, root / path)
            _save(mask, root / mask_path)
            rows.append([path, anomalous[i % len(anomalous)], mask_path, "test" if i < n_bad else "train", name])
    table = root / "manifest.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "mask", "split", "class"])
        writer.writerows(rows)
    return table


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


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
