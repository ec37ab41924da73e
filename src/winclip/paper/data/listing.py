"""Layouts that list their images, in a CSV (``visa``, ``manifest``) or in JSON lists (``realiad``).

Each entry names a class, a split (``train`` or ``test``), a label (normal or
anomalous), an image and, for an anomalous test entry, its mask; paths are
relative to a base folder. Normal train entries are the class's candidate
references; anomalous train entries are not used; test entries make the test
set, and an anomalous one needs a mask. A class needs at least one normal train
entry, and an image listed twice (in any class or split) is an error.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .core import ClassData, DatasetError, Found, Sample, sorted_samples

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Entry:
    """One listed image, its paths as the listing spells them."""

    where: str  # "<file>:<line>" or "<file>: <split>[<index>]": prefix of its problems
    name: str  # class
    base: Path  # folder the paths are relative to
    split: str  # "train" or "test" (anything else comes with a problem)
    label: int | None  # 0 normal, 1 anomalous; None when the listing's label is unknown (comes with a problem)
    defect: str  # defect type of an anomalous entry
    image: str
    mask: str  # "" when the entry gives none


@dataclass
class _Class:
    train: list[Path] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Listing:
    """Classes collected entry by entry, with the problems of each."""

    def __init__(self) -> None:
        self._classes: dict[str, _Class] = {}
        self._seen: dict[Path, str] = {}  # image -> where it was first listed

    def add(self, entry: Entry, problems: Sequence[str] = ()) -> None:
        """Check ``entry``'s files and add it to its class.

        ``problems`` are those the layout found in its other fields (an unknown
        split or label): they are recorded with it, and keep it out of the class.
        """
        cls = self._classes.setdefault(entry.name, _Class())
        cls.problems += problems
        image = self._file(entry, entry.image, "image", cls.problems)
        if image is not None:
            first = self._seen.setdefault(image, entry.where)
            if first != entry.where:
                cls.problems.append(f"{entry.where}: {image} is listed again (first at {first})")
                return
        if problems or image is None:
            return
        if entry.label == 0:
            if entry.split == "train":
                cls.train.append(image)
            else:
                cls.test.append(Sample(image, 0, "good"))
        elif entry.split == "test":  # anomalous train entries are not references
            mask = None
            if not entry.mask:
                cls.problems.append(f"{entry.where}: anomaly row has no mask")
            else:
                mask = self._file(entry, entry.mask, "mask", cls.problems)
            cls.test.append(Sample(image, 1, entry.defect, () if mask is None else (mask,)))

    def classes(self, where: Callable[[str], str]) -> list[Found]:
        """The classes by name; ``where(name)`` prefixes a class's own problems."""
        found = []
        for name in sorted(self._classes):
            cls = self._classes[name]
            if not cls.train:
                cls.problems.append(f"{where(name)}: no normal train rows")
            data = ClassData(name, tuple(sorted(cls.train)), sorted_samples(cls.test))
            found.append(Found(data, where(name), cls.problems))
        return found

    @staticmethod
    def _file(entry: Entry, text: str, what: str, problems: list[str]) -> Path | None:
        """``entry.base / text`` when that file exists, else None and a problem."""
        if not text:
            problems.append(f"{entry.where}: empty {what} path")
            return None
        path = entry.base / text
        if not path.is_file():
            problems.append(f"{entry.where}: {what} file {path} does not exist")
            return None
        return path


@dataclass(frozen=True)
class TableFormat:
    """How a CSV layout names its columns and spells its labels."""

    columns: Mapping[str, str]  # "class", "split", "label", "image", "mask" -> the CSV's column
    labels: Mapping[str, int]  # accepted label (lower case) -> 0 normal, 1 anomalous


def find_table(table: Path, base: Path, fmt: TableFormat) -> tuple[list[Found], list[str]]:
    """Classes of a CSV in ``fmt``, paths relative to ``base``; split and label are matched in any case."""
    column = fmt.columns
    listing, problems = Listing(), []
    for where, row in read_table(table, list(column.values())):
        name, split, label = row[column["class"]], row[column["split"]], row[column["label"]]
        if not name:
            problems.append(f"{where}: empty {column['class']}")
            continue
        row_problems = []
        if split.lower() not in SPLITS:
            row_problems.append(f"{where}: unknown split {split!r} (expected {expected(SPLITS)})")
        if label.lower() not in fmt.labels:
            row_problems.append(f"{where}: unknown label {label!r} (expected {expected(fmt.labels)})")
        image, mask = row[column["image"]], row[column["mask"]]
        entry = Entry(where, name, base, split.lower(), fmt.labels.get(label.lower()), "anomaly", image, mask)
        listing.add(entry, row_problems)
    return listing.classes(lambda name: f"{table} ({column['class']} {name!r})"), problems


def read_table(table: Path, columns: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """``(<table>:<line>, row)`` for each row of a CSV, cells of ``columns`` stripped.

    A missing file or column raises.
    """
    if not table.is_file():
        raise DatasetError([f"{table}: missing"])
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise DatasetError([f"{table}: missing column(s) {', '.join(missing)}"])
        return [(f"{table}:{reader.line_num}", {c: (row[c] or "").strip() for c in columns}) for row in reader]


def expected(words: Iterable[str]) -> str:
    """``a, b or c`` (two words or more)."""
    *head, last = words
    return f"{', '.join(head)} or {last}"
