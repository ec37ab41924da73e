"""Photos kept for audit (`--keep anomalous,review --keep-max-gb N`): each image labelled one of the kept
labels, with its overlay, in a folder bounded in bytes; over the budget the oldest are removed first.

Layout: `<keep dir>/<profile>/<YYYY-MM-DD>/<stamp>-<id>-<label>-<name><ext>`, the uploaded bytes
unchanged, `<ext>` being the extension of the decoded format (never the upload's own), and
`<same stem>-overlay.png` beside it (the `winclip predict` overlay, drawn at the threshold the
answer used). `stamp` is the inspection's UTC time to the microsecond (`20261105T101112123456Z`,
so names sort oldest first), `id` the record's row id, `name` the upload's file name reduced to
`[A-Za-z0-9_.-]`. The record's `kept` column holds the photo's absolute path; when the photo is
removed to stay within the budget, `kept` is set back to null.

Nothing here is served by the HTTP API: the photos are read on the machine, for audit. One
process owns a keep folder (an exclusive `flock` on `<keep dir>/.lock`, refused with one line
otherwise), so each replica needs its own folder; the budget is per folder.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import ServiceConfig
from .names import safe_filename

LOCK_FILE = ".lock"
OVERLAY_SUFFIX = "-overlay.png"
NAME_CHARS = 40  # characters of the upload's name kept in a kept photo's name
KEPT_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{12}Z)-(?P<id>\d+)-[a-z]+-")
FOLDER_MODE = 0o750  # kept photos are production data: not for every user of the machine


class KeepError(RuntimeError):
    """The keep folder cannot be used (one line)."""


@dataclass
class Kept:
    """One kept photo and its overlay: `key` sorts oldest first."""

    key: str
    record_id: int
    paths: list[Path]
    size: int


def stamp(time: datetime) -> str:
    """The UTC time to the microsecond, as it starts a kept photo's name."""
    return time.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def order_key(time_stamp: str, record_id: int) -> str:
    """What kept photos are sorted by: oldest first, then by record id."""
    return f"{time_stamp}-{record_id:020d}"


def kept_stem(time: datetime, record_id: int, label: str, filename: str) -> str:
    """`<stamp>-<id>-<label>-<name>` (module docstring)."""
    name = Path(safe_filename(filename)).stem[:NAME_CHARS] or "image"
    return f"{stamp(time)}-{record_id}-{label}-{name}"


class Keeper:
    """A keep folder, its lock, and the bytes it holds (thread-safe; module docstring)."""

    @classmethod
    def of(cls, config: ServiceConfig) -> Keeper:
        """The keep folder a `ServiceConfig` names."""
        return cls(config.keep_folder, config.keep, config.keep_max_bytes)

    def __init__(self, folder: Path, labels: frozenset[str], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise KeepError(f"the keep budget must be > 0 bytes, got {max_bytes}")
        self.folder = Path(folder).resolve()
        self.labels = frozenset(labels)
        self.max_bytes = int(max_bytes)
        try:
            self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            self._lock = open(self.folder / LOCK_FILE, "a")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise KeepError(f"--keep-dir {self.folder}: cannot use it ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise KeepError(
                f"--keep-dir {self.folder} is in use by another winclip serve; give each replica its own --keep-dir"
            ) from None
        self._mutex = threading.Lock()
        self.pointing = threading.Lock()  # held by a caller from keep() until its records point at the photos
        self.entries: list[Kept] = self._scan()  # oldest first
        self.total = sum(e.size for e in self.entries)

    def _scan(self) -> list[Kept]:
        """The kept photos already in the folder (files of other names are left alone and not counted)."""
        found: dict[str, Kept] = {}
        for path in self.folder.glob("*/*/*"):
            match = KEPT_NAME.match(path.name)
            if match is None or not path.is_file():
                continue
            key = order_key(match["stamp"], int(match["id"]))
            entry = found.setdefault(key, Kept(key, int(match["id"]), [], 0))
            entry.paths.append(path)
            entry.size += path.stat().st_size
        return sorted(found.values(), key=lambda e: e.key)

    def keep(
        self, *, record_id: int, time: datetime, profile: str, label: str, filename: str, photo: tuple[bytes, str],
        overlay: bytes,
    ) -> tuple[str | None, list[int]]:  # fmt: skip
        """Write the photo (bytes, extension of its format) and its overlay PNG, then remove the oldest until within
        the budget: (the photo's path, or None when it did not fit, and the record ids of the photos removed)."""
        stem = kept_stem(time, record_id, label, filename)
        day = self.folder / profile / time.astimezone(timezone.utc).strftime("%Y-%m-%d")
        data, extension = photo
        if len(data) + len(overlay) > self.max_bytes:
            return None, []  # larger than the whole budget: keeping it would only empty the folder
        files = [(day / f"{stem}{extension}", data), (day / f"{stem}{OVERLAY_SUFFIX}", overlay)]
        entry = Kept(order_key(stamp(time), record_id), record_id, [], 0)
        with self._mutex:
            for folder in (day.parent, day):  # each level its own mode: mkdir(parents=True) gives parents 0777 - umask
                folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
            try:
                for path, content in files:
                    _write_new(path, content)
                    entry.paths.append(path)
                    entry.size += len(content)
            except OSError:
                _remove(entry)
                raise
            bisect.insort(self.entries, entry, key=lambda e: e.key)
            self.total += entry.size
            evicted = self._evict()
        kept = None if record_id in evicted else str(files[0][0])
        return kept, [i for i in evicted if i != record_id]

    def _evict(self) -> list[int]:
        """Remove the oldest photos until the folder is within the budget; their record ids."""
        evicted = []
        while self.total > self.max_bytes and self.entries:
            oldest = self.entries.pop(0)
            self.total -= oldest.size
            _remove(oldest)
            evicted.append(oldest.record_id)
        return evicted

    @property
    def count(self) -> int:
        """Photos kept now."""
        return len(self.entries)

    def close(self) -> None:
        """Release the folder's lock."""
        self._lock.close()


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (never overwriting) with `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _remove(entry: Kept) -> None:
    """Delete a kept photo's files, and its day folder once empty."""
    for path in entry.paths:
        path.unlink(missing_ok=True)
    if entry.paths:
        try:
            entry.paths[0].parent.rmdir()
        except OSError:
            pass  # not empty: other photos of that day remain
