"""Which photos in a watched folder are complete: inotify close-write and moved-to events, else a settle time.

A photo is a file under the folder (recursively) with an image extension (the ones `winclip predict` reads),
no hidden part in its relative path (`.name`, `.folder/`), and not a temporary name (`~` at the end, or a
`.part`/`.tmp`/... suffix: those never have an image extension, but the rule is written down). It is
complete when

- (inotify, Linux) the kernel says it was closed after writing (`IN_CLOSE_WRITE`) or renamed into its name
  (`IN_MOVED_TO`: the writer used a temporary name and renamed it at the end), or
- (everywhere, and on start for what is already there) its size and modification time stayed the same for
  `settle_s` seconds.

A file that is still open for writing is never complete by the first rule (no close yet) and, as long as it
grows, not by the second. The pipeline checks the file again after reading it and after scoring it (its size,
mtime and inode are its `Stat`): a file that changed meanwhile goes back here and waits for its next
completion. `capacity` bounds the photos held complete in memory; more wait on disk and are found by the next
scan, oldest modification first (a photo completing while others wait joins them, never passes them).
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import IMAGE_EXTENSIONS

TEMP_SUFFIXES = frozenset({".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart", ".swp"})
MIN_SCAN_S = 0.05  # the shortest pause between two scans of the folder


@dataclass(frozen=True)
class Stat:
    """What identifies one version of a file without reading it: size, modification time (ns), inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> Stat | None:
        """The file's Stat, or None when it is gone or not a regular file."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.path.isfile(path):
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def is_photo(path: Path, top: Path) -> bool:
    """Whether `path` (under `top`) is a photo name (module docstring): image extension, nothing hidden, not a
    temporary name."""
    try:
        parts = path.relative_to(top).parts
    except ValueError:
        return False
    name = path.name
    return (
        bool(parts)
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(p.startswith(".") for p in parts)
        and not name.endswith("~")
        and not any(s.lower() in TEMP_SUFFIXES for s in path.suffixes)
    )


class Watcher:
    """The complete photos of one folder, in the order they completed (module docstring).

    `take` does the work in the caller's thread: it reads the events the observer thread queued, scans the
    folder every `scan_s` seconds, and returns the complete photos it holds. `finish(path, stat)` tells that a
    version of a photo is handled (it is not handed out again while it stays the same); `retry(path)` puts one
    back to wait for its next completion.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        settle_s: float = 1.0,
        capacity: int = 64,
        inotify: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle_s < 0:
            raise ValueError(f"--settle-seconds must be >= 0, got {settle_s}")
        if capacity < 1:
            raise ValueError(f"--queue must be >= 1, got {capacity}")
        self.folder = Path(folder).resolve()
        self.settle_s = float(settle_s)
        self.capacity = int(capacity)
        self.scan_s = max(self.settle_s / 2, MIN_SCAN_S)
        self.clock = clock
        self.ready: dict[Path, Stat] = {}  # complete, in completion order
        self.waiting = 0  # complete photos found by the last scan that did not fit in `ready`
        self._seen: dict[Path, tuple[Stat, float]] = {}  # not complete yet: last Stat, when it was last seen changing
        self._finished: dict[Path, Stat] = {}  # handled versions still in the folder (--after keep)
        self._events: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()
        self._next_scan = 0.0
        self._observer = self._observe() if inotify else None

    @property
    def mode(self) -> str:
        """How completion is detected: 'inotify' (with the settle time for what is there at start) or 'settle'."""
        return "settle" if self._observer is None else "inotify"

    def _observe(self) -> Any:
        """A started watchdog inotify observer feeding `_events`, or None where inotify is not available."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers.inotify import InotifyObserver
        except ImportError:
            return None
        events = self._events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if not event.is_directory:
                    events.put((event.event_type, os.fsdecode(event.src_path), os.fsdecode(event.dest_path or "")))

        try:
            observer = InotifyObserver()
            observer.schedule(Handler(), str(self.folder), recursive=True)
            observer.start()
        except OSError:
            return None  # no inotify here (or out of watches): the settle time alone
        return observer

    def close(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def take(self, limit: int, timeout: float) -> list[tuple[Path, Stat]]:
        """Up to `limit` complete photos (oldest completion first), waiting up to `timeout` seconds for one;
        they are removed from `ready` (the caller finishes or retries each)."""
        deadline = self.clock() + timeout
        while True:
            self._drain()
            now = self.clock()
            if now >= self._next_scan:
                self._scan(now)
                self._next_scan = now + self.scan_s
            if self.ready or now >= deadline:
                break
            self._wait(min(deadline, self._next_scan) - now)
        out = list(self.ready.items())[:limit]
        for path, _ in out:
            del self.ready[path]
        return out

    def _wait(self, seconds: float) -> None:
        """Sleep until an event arrives or `seconds` pass (it is put back for `_drain`)."""
        try:
            self._events.put(self._events.get(timeout=max(seconds, 0.0)))
        except queue.Empty:
            pass

    def finish(self, path: Path, stat: Stat | None) -> None:
        """This version of `path` is handled: not handed out again while it stays in the folder unchanged."""
        self._seen.pop(path, None)
        self.ready.pop(path, None)
        if stat is not None and path.exists():
            self._finished[path] = stat
        else:
            self._finished.pop(path, None)

    def retry(self, path: Path) -> None:
        """`path` changed while it was handled: wait for its next completion."""
        self.ready.pop(path, None)
        stat = Stat.of(path)
        if stat is not None:
            self._seen[path] = (stat, self.clock())

    def _drain(self) -> None:
        while True:
            try:
                kind, src, dest = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "moved":
                self._forget(Path(src))
                self._complete(Path(dest))
            elif kind == "closed":
                self._complete(Path(src))
            elif kind in ("created", "modified"):
                self._changed(Path(src))
            elif kind == "deleted":
                self._forget(Path(src))

    def _forget(self, path: Path) -> None:
        for held in (self._seen, self.ready, self._finished):
            held.pop(path, None)

    def _changed(self, path: Path) -> None:
        if is_photo(path, self.folder) and path not in self.ready:
            stat = Stat.of(path)
            if stat is not None and self._finished.get(path) != stat:
                self._seen[path] = (stat, self.clock())

    def _complete(self, path: Path) -> None:
        if not is_photo(path, self.folder):
            return
        stat = Stat.of(path)
        if stat is None or self._finished.get(path) == stat:
            return
        self._seen.pop(path, None)
        overflow = any(since == float("-inf") for _, since in self._seen.values())  # older complete photos wait
        if path in self.ready or (len(self.ready) < self.capacity and not overflow):
            self.ready[path] = stat
        else:
            self._seen[path] = (stat, float("-inf"))  # complete, waiting on disk for room: the next scan takes it

    def _scan(self, now: float) -> None:
        """Walk the folder: new files start settling, files unchanged for the settle time become complete."""
        present: set[Path] = set()
        settled: list[tuple[int, Path, Stat]] = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                path = Path(root) / name
                if not is_photo(path, self.folder):
                    continue
                present.add(path)
                if path in self.ready:
                    continue
                stat = Stat.of(path)
                if stat is None or self._finished.get(path) == stat:
                    continue
                before = self._seen.get(path)
                if before is None or before[0] != stat:
                    self._seen[path] = (stat, now)
                elif now - before[1] >= self.settle_s:
                    settled.append((stat.mtime_ns, path, stat))
        for held in (self._seen, self._finished):
            for path in [p for p in held if p not in present]:
                del held[path]
        settled.sort()
        room = max(self.capacity - len(self.ready), 0)
        for _, path, stat in settled[:room]:
            self._seen.pop(path, None)
            self.ready[path] = stat
        self.waiting = max(len(settled) - room, 0)
