"""Evaluation datasets: discovery, validation and description (SPEC §6).

``load_dataset(layout, root)`` describes a dataset as one ``ClassData`` per
class and checks it completely before any model work: every problem found is
collected and reported at once in a ``DatasetError``, one line per problem,
``<file or folder>: <what is wrong>``. Image files are opened only to read
their header (format and size); pixels are decoded later, by ``load_mask`` and
the image loader.

Layouts (``LAYOUTS``):

``mvtec`` (MVTec-AD)::

    <root>/<class>/train/good/*.png                  good training images (references)
    <root>/<class>/test/good/*.png                   good test images
    <root>/<class>/test/<defect>/<name>.png          anomalous test images
    <root>/<class>/ground_truth/<defect>/<name>_mask.png

  A class is a sub-folder of root holding ``train/`` or ``test/``; other files
  (``license.txt``, ``readme.txt``) are ignored.

``visa`` (VisA, 1-class split)::

    <root>/split_csv/1cls.csv    columns object,split,label,image,mask

  Paths are relative to root; split is ``train`` or ``test``; label is
  ``normal`` or ``anomaly``; mask is empty for normal rows. Train rows labelled
  normal are the references. The classes are the distinct ``object`` values.

``folder`` (a user's own product)::

    <root>/<class>/good/                 good test images
    <root>/<class>/defect/               anomalous test images, defect type "anomaly"
    <root>/<class>/defect/<type>/        anomalous test images of defect type <type>
    <root>/<class>/masks/                optional ground-truth masks
    <root>/<class>/reference/            optional good images for few-shot references

  If root itself holds ``good/`` or ``defect/``, root is the only class, named
  after root's folder. The mask of ``defect/[<type>/]<stem>.<ext>`` is
  ``masks/[<type>/]<stem>.<any ext>`` or ``masks/[<type>/]<stem>_mask.<any ext>``,
  looked up in ``masks/<type>/`` first, then in ``masks/``. Once ``masks/``
  exists every defect image needs exactly one mask and every mask must belong
  to exactly one defect image. Without ``reference/`` the class supports
  zero-shot only; ``sample_references`` then raises a ``DatasetError``.

Image files: png, jpg, jpeg, bmp, tif, tiff, webp, gif (any case; winclip.images.IMAGE_EXTENSIONS); names starting
with ``.`` are ignored. Masks: nonzero pixels are anomalous.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..images import IMAGE_EXTENSIONS

LAYOUTS = ("mvtec", "visa", "folder")
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        super().__init__(f"invalid dataset ({count}):\n" + "\n".join(self.problems))


@dataclass(frozen=True)
class Sample:
    """One test image."""

    path: Path
    label: int  # 0 good, 1 anomalous
    defect: str  # "good", the defect type, or "anomaly" when the layout names none
    mask: Path | None  # None for good images and for anomalous ones without a mask


@dataclass(frozen=True)
class ClassData:
    """One class of a dataset: its candidate references and its test set."""

    name: str  # class name as on disk, e.g. "metal_nut", "pcb1"
    train_good: tuple[Path, ...]  # candidate few-shot references, sorted
    test: tuple[Sample, ...]  # sorted by path


@dataclass
class _Found:
    """A discovered class before the checks common to all layouts."""

    data: ClassData
    where: str  # prefix of the class-level problems
    problems: list[str] = field(default_factory=list)


def load_dataset(layout: str, root: str | Path, classes: Sequence[str] | None = None) -> list[ClassData]:
    """Describe and validate the dataset at ``root``; raise ``DatasetError`` listing every problem.

    ``classes`` selects classes by name (in that order); only they are validated.
    """
    if layout not in _FINDERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"{root}: dataset root does not exist"])
    found, problems = _FINDERS[layout](root)
    if not found:
        raise DatasetError([*problems, f"{root}: no classes found for the {layout} layout"])
    selected = found if classes is None else _select(found, classes, root)
    for item in selected:
        problems += item.problems + _check_class(item.data, item.where)
    if problems:
        raise DatasetError(problems)
    return [item.data for item in selected]


def sample_references(data: ClassData, k: int, seed: int) -> list[Path]:
    """Draw ``k`` distinct references from ``data.train_good``, reproducibly for ``seed``.

    The draw is a prefix of one seeded permutation, so for a fixed seed the
    references of a smaller ``k`` are contained in those of a larger one.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    available = len(data.train_good)
    if k > available:
        hint = "" if available else " (zero-shot only; put good images in the class's reference/ folder)"
        raise DatasetError([f"{data.name}: {k} references requested but only {available} available{hint}"])
    order = np.random.default_rng(seed).permutation(available)[:k]
    return [data.train_good[i] for i in order]


def load_mask(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask, bool ``(H, W)`` = ``size``, True = anomalous; ``None`` gives all False.

    The mask is read at its native size, which must equal ``size``; resize it
    afterwards with ``resize_mask``.
    """
    if path is None:
        return np.zeros(size, dtype=bool)
    with Image.open(path) as image:
        if image.mode in ("1", "L", "I", "I;16", "F"):
            mask = np.asarray(image) != 0
        else:  # colour or palette masks: any nonzero colour channel, alpha ignored
            mask = np.asarray(image.convert("RGB")).any(axis=-1)
    if mask.shape != tuple(size):
        shape = (mask.shape[1], mask.shape[0])
        raise DatasetError([f"{path}: mask is {_wxh(shape)} but {_wxh((size[1], size[0]))} was expected (WxH)"])
    return mask


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool ``(H, W)`` mask to ``size`` = ``(H', W')``."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST)) != 0


# Discovery, one finder per layout: (classes found, problems outside any class).


def _find_mvtec(root: Path) -> tuple[list[_Found], list[str]]:
    class_dirs = [d for d in _subdirs(root) if (d / "train").is_dir() or (d / "test").is_dir()]
    return [_mvtec_class(d) for d in class_dirs], []


def _mvtec_class(class_dir: Path) -> _Found:
    problems = []
    train_dir = class_dir / "train" / "good"
    train = _images(train_dir)
    if not train_dir.is_dir():
        problems.append(f"{train_dir}: missing")
    elif not train:
        problems.append(f"{train_dir}: no images")
    test = []
    for defect_dir in _subdirs(class_dir / "test"):
        defect = defect_dir.name
        for path in _images(defect_dir):
            if defect == "good":
                test.append(Sample(path, 0, "good", None))
                continue
            mask = class_dir / "ground_truth" / defect / f"{path.stem}_mask.png"
            has_mask = mask.is_file()
            if not has_mask:
                problems.append(f"{path}: no mask; expected {mask}")
            test.append(Sample(path, 1, defect, mask if has_mask else None))
    data = ClassData(class_dir.name, tuple(train), _sorted(test))
    return _Found(data, str(class_dir / "test"), problems)


def _find_visa(root: Path) -> tuple[list[_Found], list[str]]:
    table = root / VISA_CSV
    if not table.is_file():
        raise DatasetError([f"{table}: missing"])
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise DatasetError([f"{table}: missing column(s) {', '.join(missing)}"])
        rows = [(reader.line_num, {c: (row[c] or "").strip() for c in VISA_COLUMNS}) for row in reader]
    problems: list[str] = []
    by_object: dict[str, tuple[list[Path], list[Sample], list[str]]] = {}
    for line, row in rows:
        where = f"{table}:{line}"
        if not row["object"]:
            problems.append(f"{where}: empty object")
            continue
        train, test, row_problems = by_object.setdefault(row["object"], ([], [], []))
        row_problems += _visa_row(root, row, where, train, test)
    found = []
    for name in sorted(by_object):
        train, test, row_problems = by_object[name]
        where = f"{table} (object {name!r})"
        if not train:
            row_problems.append(f"{where}: no normal train rows")
        found.append(_Found(ClassData(name, tuple(sorted(train)), _sorted(test)), where, row_problems))
    return found, problems


def _visa_row(root: Path, row: dict[str, str], where: str, train: list[Path], test: list[Sample]) -> list[str]:
    """Add one CSV row to ``train`` or ``test``; return its problems."""
    problems = []
    if row["split"] not in ("train", "test"):
        problems.append(f"{where}: unknown split {row['split']!r} (expected train or test)")
    if row["label"] not in ("normal", "anomaly"):
        problems.append(f"{where}: unknown label {row['label']!r} (expected normal or anomaly)")
    image = root / row["image"]
    if not row["image"]:
        problems.append(f"{where}: empty image path")
    elif not image.is_file():
        problems.append(f"{where}: image file {image} does not exist")
    if problems:
        return problems
    if row["label"] == "normal":
        if row["split"] == "train":
            train.append(image)
        else:
            test.append(Sample(image, 0, "good", None))
        return problems
    if row["split"] == "train":  # anomalous training rows are not references
        return problems
    mask = root / row["mask"]
    has_mask = bool(row["mask"]) and mask.is_file()
    if not row["mask"]:
        problems.append(f"{where}: anomaly row has no mask")
    elif not has_mask:
        problems.append(f"{where}: mask file {mask} does not exist")
    test.append(Sample(image, 1, "anomaly", mask if has_mask else None))
    return problems


def _find_folder(root: Path) -> tuple[list[_Found], list[str]]:
    if (root / "good").is_dir() or (root / "defect").is_dir():
        return [_folder_class(root, root.resolve().name)], []
    class_dirs = [d for d in _subdirs(root) if (d / "good").is_dir() or (d / "defect").is_dir()]
    return [_folder_class(d, d.name) for d in class_dirs], []


def _folder_class(class_dir: Path, name: str) -> _Found:
    problems = []
    reference_dir = class_dir / "reference"
    references = _images(reference_dir)
    if reference_dir.is_dir() and not references:
        problems.append(f"{reference_dir}: no images")
    defect_dir = class_dir / "defect"
    defects = [(path, "anomaly") for path in _images(defect_dir)]
    defects += [(path, sub.name) for sub in _subdirs(defect_dir) for path in _images(sub)]
    masks_dir = class_dir / "masks"
    matched, mask_problems = _match_masks(masks_dir, defect_dir, [path for path, _ in defects])
    test = [Sample(path, 0, "good", None) for path in _images(class_dir / "good")]
    test += [Sample(path, 1, defect, matched.get(path)) for path, defect in defects]
    data = ClassData(name, tuple(references), _sorted(test))
    return _Found(data, str(class_dir), problems + mask_problems)


def _match_masks(masks_dir: Path, defect_dir: Path, defects: list[Path]) -> tuple[dict[Path, Path], list[str]]:
    """Pair defect images with the mask files of ``masks_dir`` (see the module docstring)."""
    if not masks_dir.is_dir():
        return {}, []
    masks = _images(masks_dir) + [path for sub in _subdirs(masks_dir) for path in _images(sub)]
    by_key: dict[tuple[Path, str], list[Path]] = {}
    for mask in masks:
        by_key.setdefault((mask.parent, mask.stem), []).append(mask)
    matched: dict[Path, Path] = {}
    owners: dict[Path, list[Path]] = {}
    problems = []
    for image in defects:
        candidates = []
        for folder in (masks_dir / image.parent.relative_to(defect_dir), masks_dir):
            candidates = by_key.get((folder, image.stem), []) + by_key.get((folder, f"{image.stem}_mask"), [])
            if candidates:
                break
        if not candidates:
            problems.append(f"{image}: no mask in {masks_dir} (expected {image.stem}.<ext> or {image.stem}_mask.<ext>)")
        elif len(candidates) > 1:
            problems.append(f"{image}: several masks match: {', '.join(p.name for p in candidates)}")
        else:
            matched[image] = candidates[0]
            owners.setdefault(candidates[0], []).append(image)
    for mask in masks:
        if mask not in owners:
            problems.append(f"{mask}: mask matches no defect image")
        elif len(owners[mask]) > 1:
            problems.append(f"{mask}: mask matches several defect images: {', '.join(map(str, owners[mask]))}")
    return matched, problems


_FINDERS: dict[str, Callable[[Path], tuple[list[_Found], list[str]]]] = {
    "mvtec": _find_mvtec,
    "visa": _find_visa,
    "folder": _find_folder,
}


# Checks common to all layouts.


def _select(found: list[_Found], classes: Sequence[str], root: Path) -> list[_Found]:
    """The requested classes, in the requested order; unknown names are an error."""
    names = [classes] if isinstance(classes, str) else list(dict.fromkeys(classes))
    by_name = {item.data.name: item for item in found}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        available = ", ".join(sorted(by_name))
        raise DatasetError([f"{root}: unknown class(es) {', '.join(unknown)}; available: {available}"])
    return [by_name[name] for name in names]


def _check_class(data: ClassData, where: str) -> list[str]:
    """Both labels present, every file a readable image, every mask the size of its image."""
    problems = []
    if not any(s.label == 0 for s in data.test):
        problems.append(f"{where}: no good test images (AUROC is undefined)")
    if not any(s.label == 1 for s in data.test):
        problems.append(f"{where}: no anomalous test images (AUROC is undefined)")
    sizes = {}
    for path in [*data.train_good, *(s.path for s in data.test), *(s.mask for s in data.test if s.mask)]:
        sizes[path] = _image_size(path)
        if sizes[path] is None:
            problems.append(f"{path}: not a readable image")
    for sample in data.test:
        image_size, mask_size = sizes[sample.path], sizes.get(sample.mask)
        if image_size and mask_size and image_size != mask_size:
            problems.append(
                f"{sample.mask}: mask is {_wxh(mask_size)} but its image {sample.path} is {_wxh(image_size)} (WxH)"
            )
    return problems


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(W, H)`` from the file header, or None when Pillow cannot identify the file."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; none when ``folder`` does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    """Visible image files directly in ``folder``, sorted; none when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _sorted(samples: list[Sample]) -> tuple[Sample, ...]:
    return tuple(sorted(samples, key=lambda s: s.path))
