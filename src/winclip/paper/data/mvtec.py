"""MVTec-AD and MPDD, and the MVTec-style tree reader that BTAD and MVTec LOCO AD share.

``mvtec`` (MVTec-AD) and ``mpdd`` (MPDD, the same layout)::

    <root>/<class>/train/good/*.png                  good training images (references)
    <root>/<class>/test/good/*.png                   good test images
    <root>/<class>/test/<defect>/<name>.png          anomalous test images
    <root>/<class>/ground_truth/<defect>/<name>_mask.png

  A class is a sub-folder of root holding ``train/`` or ``test/``; other files
  (``license.txt``, ``readme.txt``) are ignored. MPDD (Jezek et al., 2021:
  bracket_black, bracket_brown, bracket_white, connector, metal_plate, tubes)
  ships this very tree, masks named ``<name>_mask.png`` included, so ``mpdd``
  is the MVTec-AD finder under another name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .core import ClassData, Found, Sample, images, sorted_samples, subdirs

# (ground_truth/<defect>/ folder, the defect's test images) -> (masks of each image that has some, problems)
MaskFinder = Callable[[Path, list[Path]], tuple[dict[Path, tuple[Path, ...]], list[str]]]


def find_tree(root: Path, good: str, find_masks: MaskFinder) -> tuple[list[Found], list[str]]:
    """Classes of an MVTec-style tree whose good images are in ``train/<good>`` and ``test/<good>``."""
    class_dirs = [d for d in subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()]
    return [_tree_class(d, good, find_masks) for d in class_dirs], []


def _tree_class(class_dir: Path, good: str, find_masks: MaskFinder) -> Found:
    problems = []
    train_dir = class_dir / "train" / good
    train = images(train_dir)
    if not train_dir.is_dir():
        problems.append(f"{train_dir}: missing")
    elif not train:
        problems.append(f"{train_dir}: no images")
    test = []
    for defect_dir in subdirs(class_dir / "test"):
        defect = defect_dir.name
        if defect == good:
            test += [Sample(path, 0, "good") for path in images(defect_dir)]
            continue
        defects = images(defect_dir)
        masks, mask_problems = find_masks(class_dir / "ground_truth" / defect, defects)
        problems += mask_problems
        test += [Sample(path, 1, defect, masks.get(path, ())) for path in defects]
    data = ClassData(class_dir.name, tuple(train), sorted_samples(test))
    return Found(data, str(class_dir / "test"), problems)


def find_mvtec(root: Path) -> tuple[list[Found], list[str]]:
    """MVTec-AD or MPDD at ``root``."""
    return find_tree(root, "good", _mvtec_masks)


def _mvtec_masks(folder: Path, defects: list[Path]) -> tuple[dict[Path, tuple[Path, ...]], list[str]]:
    """``<folder>/<stem>_mask.png`` for each image."""
    masks: dict[Path, tuple[Path, ...]] = {}
    problems: list[str] = []
    for image in defects:
        mask = folder / f"{image.stem}_mask.png"
        if mask.is_file():
            masks[image] = (mask,)
        else:
            problems.append(f"{image}: no mask; expected {mask}")
    return masks, problems
