"""The layouts ``winclip eval --dataset`` offers, and ``load_dataset`` (docs/method.md §6).

Each layout is a finder in its own module, which documents the layout exactly:
``mvtec`` and ``mpdd`` (mvtec.py), ``visa`` (visa.py), ``folder`` (folder.py),
``btad`` (btad.py), ``mvtec-loco`` (loco.py), ``realiad`` and ``realiad-sv``
(realiad.py), ``manifest`` (manifest.py). Every layout's root is a folder but
``manifest``'s, which is a CSV file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .btad import find_btad
from .core import ClassData, DatasetError, Finder, check_class, select
from .folder import find_folder
from .loco import find_loco
from .manifest import find_manifest
from .mvtec import find_mvtec
from .realiad import find_realiad
from .visa import find_visa


@dataclass(frozen=True)
class Layout:
    """How ``load_dataset`` reads one layout."""

    find: Finder  # root -> (classes found, problems outside any class)
    root_is_file: bool = False  # root names a file (manifest's CSV), not a folder


_REGISTRY: dict[str, Layout] = {
    "mvtec": Layout(find_mvtec),
    "visa": Layout(find_visa),
    "folder": Layout(find_folder),
    "mpdd": Layout(find_mvtec),  # MPDD ships MVTec-AD's tree (mvtec.py)
    "btad": Layout(find_btad),
    "mvtec-loco": Layout(find_loco),
    "realiad": Layout(partial(find_realiad, json_set="realiad_jsons")),
    "realiad-sv": Layout(partial(find_realiad, json_set="realiad_jsons_sv")),
    "manifest": Layout(find_manifest, root_is_file=True),
}
LAYOUTS = tuple(_REGISTRY)


def load_dataset(layout: str, root: str | Path, classes: str | Sequence[str] | None = None) -> list[ClassData]:
    """Describe and validate the dataset at ``root``; raise ``DatasetError`` listing every problem.

    ``root`` is a folder, or the CSV file for ``manifest``. ``classes`` selects
    classes by name (in that order); only they are validated.
    """
    if layout not in _REGISTRY:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    spec = _REGISTRY[layout]
    root = Path(root)
    if not root.exists():
        raise DatasetError([f"{root}: dataset root does not exist"])
    if spec.root_is_file != root.is_file():
        wanted, given = ("a file", "a folder") if spec.root_is_file else ("a folder", "a file")
        raise DatasetError([f"{root}: is {given}, but the {layout} layout's root is {wanted}"])
    found, problems = spec.find(root)
    if not found:
        raise DatasetError([*problems, f"{root}: no classes found for the {layout} layout"])
    selected = found if classes is None else select(found, classes, root)
    for item in selected:
        problems += item.problems + check_class(item.data, item.where)
    if problems:
        raise DatasetError(problems)
    return [item.data for item in selected]
