"""Dataset records, the checks common to all layouts, reference sampling and masks (docs/method.md §6).

A layout's finder (one module per layout) describes a dataset as one ``ClassData``
per class; ``load_dataset`` (``winclip.paper.data.layouts``) then runs ``check_class`` on
every selected class and reports every problem at once in a ``DatasetError``, one
line per problem, ``<file[:line] or folder>: <what is wrong>``. Image files are
opened only to read their header (format and size); pixels are decoded later, by
``load_mask`` and the image loader.

Image files: png, jpg, jpeg, bmp, tif, tiff, webp, gif (any case; winclip.images.IMAGE_EXTENSIONS); names starting
with ``.`` are ignored. Masks: nonzero pixels are anomalous; several masks of one image are united.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...images import IMAGE_EXTENSIONS

MaskPaths = Path | str | Sequence[Path | str] | None  # what ``load_mask`` and ``Sample`` take as masks


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        super().__init__(f"invalid dataset ({count}):\n" + "\n".join(self.problems))


@dataclass(frozen=True)
class Sample:
    """One test image.

    ``masks`` also accepts one path or None (the former ``mask`` field), stored as a tuple.
    """

    path: Path
    label: int  # 0 good, 1 anomalous
    defect: str  # "good", the defect type, or "anomaly" when the layout names none
    masks: tuple[Path, ...] = ()  # ground truth, united when several (MVTec LOCO); () when there is none

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", _as_paths(self.masks))

    @property
    def mask(self) -> Path | None:
        """The first mask, or None; ``masks`` holds them all."""
        return self.masks[0] if self.masks else None


@dataclass(frozen=True)
class ClassData:
    """One class of a dataset: its candidate references and its test set."""

    name: str  # class name as on disk, e.g. "metal_nut", "pcb1"
    train_good: tuple[Path, ...]  # candidate few-shot references, sorted
    test: tuple[Sample, ...]  # sorted by path


@dataclass
class Found:
    """A discovered class before the checks common to all layouts."""

    data: ClassData
    where: str  # prefix of the class-level problems
    problems: list[str] = field(default_factory=list)


Finder = Callable[[Path], tuple[list[Found], list[str]]]  # root -> (classes found, problems outside any class)


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


def load_mask(masks: MaskPaths, size: tuple[int, int]) -> np.ndarray:
    """Ground truth, bool ``(H, W)`` = ``size``, True = anomalous: the union of ``masks``.

    ``masks`` is what a ``Sample`` carries (``sample.masks``), or one path; None or
    no path gives all False. Each mask is read at its native size, which must
    equal ``size``; resize the result afterwards with ``resize_mask``.
    """
    union = np.zeros(size, dtype=bool)
    for path in _as_paths(masks):
        with Image.open(path) as image:
            if image.mode in ("1", "L", "I", "I;16", "F"):
                mask = np.asarray(image) != 0
            else:  # colour or palette masks: any nonzero colour channel, alpha ignored
                mask = np.asarray(image.convert("RGB")).any(axis=-1)
        if mask.shape != tuple(size):
            shape = (mask.shape[1], mask.shape[0])
            raise DatasetError([f"{path}: mask is {wxh(shape)} but {wxh((size[1], size[0]))} was expected (WxH)"])
        union |= mask
    return union


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool ``(H, W)`` mask to ``size`` = ``(H', W')``."""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST)) != 0


def _as_paths(masks: MaskPaths) -> tuple[Path, ...]:
    if masks is None:
        return ()
    if isinstance(masks, (str, os.PathLike)):
        return (Path(masks),)
    return tuple(Path(m) for m in masks)


# Checks common to all layouts.


def select(found: list[Found], classes: str | Sequence[str], root: Path) -> list[Found]:
    """The requested classes, in the requested order; unknown names are an error."""
    names = [classes] if isinstance(classes, str) else list(dict.fromkeys(classes))
    by_name = {item.data.name: item for item in found}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        available = ", ".join(sorted(by_name))
        raise DatasetError([f"{root}: unknown class(es) {', '.join(unknown)}; available: {available}"])
    return [by_name[name] for name in names]


def check_class(data: ClassData, where: str) -> list[str]:
    """Both labels present, every file a readable image, every mask the size of its image."""
    problems = []
    if not any(s.label == 0 for s in data.test):
        problems.append(f"{where}: no good test images (AUROC is undefined)")
    if not any(s.label == 1 for s in data.test):
        problems.append(f"{where}: no anomalous test images (AUROC is undefined)")
    files = [*data.train_good, *(s.path for s in data.test), *(m for s in data.test for m in s.masks)]
    sizes = {path: image_size(path) for path in dict.fromkeys(files)}
    problems += [f"{path}: not a readable image" for path, size in sizes.items() if size is None]
    for sample in data.test:
        for mask in sample.masks:
            image, size = sizes[sample.path], sizes[mask]
            if image and size and image != size:
                problems.append(f"{mask}: mask is {wxh(size)} but its image {sample.path} is {wxh(image)} (WxH)")
    return problems


def image_size(path: Path) -> tuple[int, int] | None:
    """``(W, H)`` from the file header, or None when Pillow cannot identify the file."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None


def wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# File listing shared by the layouts.


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; none when ``folder`` does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def images(folder: Path) -> list[Path]:
    """Visible image files directly in ``folder``, sorted; none when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def sorted_samples(samples: list[Sample]) -> tuple[Sample, ...]:
    return tuple(sorted(samples, key=lambda s: s.path))
