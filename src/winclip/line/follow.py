"""The profile a watcher scores with, kept at its stored revision between photos, as the station's replicas do.

The profile is registered in the record's `profile_revisions` like the station registers the profiles it loads
(winclip.service.revisions: under the profile's row lock, a folder whose digest is not the stored one becomes a
new revision). Every `interval_s` seconds `poll` looks at two things: the folder's files (a save swaps the
whole folder, so their inodes and times change) and the stored revision (a station on the same `--db` changed
it). When either moved on, the folder is read again under the row lock and a new `Served` (its own inspector on
the same backbone) is returned; the pipeline uses it from the next photo on. A folder that cannot be read is
logged once and the current profile is kept.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ..inspection.profile import Profile
from ..inspection.store import OWN_FILES
from ..model import WinCLIP
from ..service.names import check_name
from ..service.revisions import Revisions
from ..service.station import Served


def folder_signature(folder: Path) -> tuple:
    """What changes when a profile folder is saved again: the folder's and its files' inodes, sizes and times."""
    out: list[tuple[int, int, int] | None] = []
    for path in (folder, *(folder / name for name in OWN_FILES)):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class ProfileFollower:
    """One profile folder, followed (module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        model: WinCLIP,
        revisions: Revisions,
        *,
        min_area: int = 0,
        interval_s: float = 1.0,
        log: TextIO = sys.stderr,
    ) -> None:
        self.folder = Path(folder)
        try:
            self.name = check_name(self.folder.resolve().name)
        except ValueError as exc:
            raise ValueError(
                f"--profile {folder}: the folder's name is the profile's name in the record: {exc}"
            ) from None
        self.model = model
        self.revisions = revisions
        self.min_area = min_area
        self.interval_s = interval_s
        self.log = log
        self.failing: str | None = None
        self._next = time.monotonic() + interval_s
        self._signature = folder_signature(self.folder)
        self.served = self._load()

    def _load(self) -> Served:
        """Read the folder under the row lock; its stored revision, or a new one when the digest differs."""
        with self.revisions.locked(self.name) as row:
            profile = Profile.load(self.folder)
            digest = profile.digest()
            stored = row.stored if row.stored and row.stored.digest == digest else row.write(digest)
        return Served.of(self.name, profile, self.folder, self.model, self.min_area, stored.revision)

    def poll(self) -> Served | None:
        """A new `Served` when the folder or the stored revision moved on since the last call, else None."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        signature = folder_signature(self.folder)
        try:
            stored = self.revisions.current().get(self.name)
            if signature == self._signature and (stored is None or stored.revision <= self.served.revision):
                return None
            served = self._load()
        except Exception as exc:  # noqa: BLE001 - the loader's and the database's errors vary; keep the profile
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if reason != self.failing:
                print(f"winclip watch: profile {self.name!r} not reloaded, still at revision "
                      f"{self.served.revision}: {reason}", file=self.log)  # fmt: skip
            self.failing = reason
            return None
        self.failing = None
        self._signature = signature
        if served.revision == self.served.revision and served.digest == self.served.digest:
            return None
        self.served = served
        p = served.profile
        print(
            f"winclip watch: profile {self.name!r} at revision {served.revision} (threshold {p.threshold:.6g})",
            file=self.log,
        )
        return served
