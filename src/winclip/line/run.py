"""`winclip watch`'s pipeline: complete photos of a folder in, the same outputs and record as `winclip predict`
and the station, messages to the line out; each photo finished exactly once (winclip.line.journal).

`Line(config, model, sinks=...).run(stop)` opens the record (winclip.service.db), the journal and its outbox,
finishes or undoes what a kill left half done, writes results.jsonl/csv and errors.csv anew from the journal,
then loops until `stop` is set: between two batches it picks up a changed profile (winclip.line.follow), waits
while the outbox is full (back-pressure), takes up to `batch_size` complete photos (winclip.line.watcher),
scores them in one forward pass and finishes each in order. A photo that changed while it was read or scored is
not finished (it waits for its next completion). After a photo: `--after done` moves it to `<IN>/../done/<rel>`,
`delete` removes it, `keep` leaves it; an unreadable photo goes to `<IN>/../failed/<rel>` with
`<rel>.reason.txt` (with `done` and `delete`), its reason in errors.csv and a message whose `error` says why.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TextIO

import sqlalchemy as sa

from ..files import LinkError, write_file, write_new
from ..images import DEFAULT_MAX_PIXELS, file_sha256
from ..inspection.folder_run import (
    InputImage,
    Outcome,
    ResultWriter,
    Summary,
    check_out_not_inside,
    header_record,
    inspect_items,
    read_records,
)
from ..model import WinCLIP
from ..service.db import DatabaseUnavailableError, Record, Recorder, inspections, one_line, utc
from ..service.revisions import Revisions
from ..service.station import Served
from .follow import ProfileFollower
from .journal import DONE, FAILED, JOURNAL_FILE, SCORING, Entry, Journal, Version
from .messages import ModelInfo, message
from .metrics import LineMetrics
from .outbox import Delivery, Outbox, Sink
from .watcher import Stat, Watcher

AFTER = ("done", "delete", "keep")
RESUME_KEYS = ("min_area", "save_maps")  # a watched folder's profile may change between two runs
DRAIN_S = 2.0  # on stop, how long the outbox is given to empty (what is left is sent at the next start)
FILENAME_CHARS = 255  # the record's `filename` column


@dataclass(frozen=True)
class LineConfig:
    """What `winclip watch` was asked for (validated on construction; each error names its option)."""

    inbox: Path
    out: Path
    profile: Path
    after: str = "done"
    db_url: str | None = field(default=None, repr=False)  # None = sqlite:///<out>/inspections.sqlite
    settle_s: float = 1.0
    queue: int = 64
    batch_size: int = 1
    outbox_max: int = 100_000
    sync_interval_s: float = 1.0
    min_area: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    save_maps: bool = False
    inotify: bool = True

    def __post_init__(self) -> None:
        if self.after not in AFTER:
            raise ValueError(f"--after {self.after}: use one of {', '.join(AFTER)}")
        if not self.inbox.is_dir():
            raise ValueError(f"{self.inbox}: the watched folder does not exist or is not a folder")
        for option, value, low in (
            ("--settle-seconds", self.settle_s, 0.0), ("--queue", self.queue, 1), ("--batch-size", self.batch_size, 1),
            ("--outbox-max", self.outbox_max, 1), ("--sync-interval", self.sync_interval_s, 0.01),
            ("--min-area", self.min_area, 0), ("--max-megapixels", self.max_pixels, 1),
        ):  # fmt: skip
            if not value >= low:
                raise ValueError(f"{option} must be >= {low}, got {value}")
        check_out_not_inside(self.out, [str(self.inbox)])
        out = self.out.resolve()
        for folder in (self.done_dir, self.failed_dir):
            if out == folder or folder in out.parents:
                raise ValueError(f"--out {self.out} is inside {folder}, where finished photos go; choose another")

    @property
    def database(self) -> str:
        """The record's URL."""
        return self.db_url or f"sqlite:///{(self.out / 'inspections.sqlite').resolve()}"

    @property
    def done_dir(self) -> Path:
        """Where `--after done` moves finished photos: `<IN>/../done`."""
        return self.inbox.resolve().parent / "done"

    @property
    def failed_dir(self) -> Path:
        """Where unreadable photos go: `<IN>/../failed`."""
        return self.inbox.resolve().parent / "failed"


def recorded_id(recorder: Recorder, entry: Entry) -> int | None:
    """The id of the record's row made for a journal entry (same profile, file name, sha256 and time), or None."""
    query = sa.select(inspections.c.id).where(
        inspections.c.profile == entry.message["profile"],
        inspections.c.filename == entry.version.rel[-FILENAME_CHARS:],
        inspections.c.image_sha256 == entry.version.sha256,
        inspections.c.time == utc(datetime.fromisoformat(entry.time)),
    )
    with recorder.engine.connect() as conn:
        return conn.execute(query).scalar()


def move(path: Path, target: Path) -> Path:
    """Move a file to `target` (a free name beside it when taken), across file systems too; where it went."""
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while target.exists():
        target = target.with_name(f"{target.stem.rsplit('~', 1)[0]}~{n}{target.suffix}")
        n += 1
    try:
        os.rename(path, target)
    except OSError:
        shutil.move(str(path), str(target))
    return target


class Line:
    """One watched folder and its outputs (module docstring)."""

    def __init__(
        self,
        config: LineConfig,
        model: WinCLIP,
        *,
        sinks: Sequence[Sink] = (),
        metrics: LineMetrics | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.config = config
        self.model = model
        self.sinks = list(sinks)
        self.sink_names = [s.name for s in self.sinks]
        self.metrics = metrics or LineMetrics()
        self.log = log
        self.model_info = ModelInfo.of(model)
        self.ready = threading.Event()  # set once recovered and watching

    def run(self, stop: threading.Event) -> Summary:
        """Watch until `stop` is set; the counts of this run (module docstring)."""
        c = self.config
        out = c.out
        if not (out / JOURNAL_FILE).exists() and (out / "results.jsonl").exists():
            raise ValueError(f"--out {out} holds the results of another run (not a watched folder's); use another")
        out.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            self.recorder = Recorder(c.database)
            stack.callback(self.recorder.close)
            self.journal = Journal(out / JOURNAL_FILE, c.inbox)
            stack.callback(self.journal.close)
            self.outbox = Outbox(out / JOURNAL_FILE, capacity=c.outbox_max)
            stack.callback(self.outbox.close)
            self.follower = ProfileFollower(
                c.profile, self.model, Revisions(self.recorder), min_area=c.min_area, interval_s=c.sync_interval_s,
                log=self.log,
            )  # fmt: skip
            self.metrics.revision.set(self.follower.served.revision)
            finished, dropped = self.journal.recover(lambda e: recorded_id(self.recorder, e), self.sink_names)
            if finished or dropped:
                print(f"winclip watch: after a stop: {finished} photo(s) finished, {dropped} to score again",
                      file=self.log)  # fmt: skip
            self.writer = stack.enter_context(self._writer())
            self.watcher = Watcher(c.inbox, settle_s=c.settle_s, capacity=c.queue, inotify=c.inotify)
            stack.callback(self.watcher.close)
            self._deliver(stack)
            self.metrics.watch(
                queue=lambda: len(self.watcher.ready) + self.watcher.waiting,
                outbox={name: partial(self.outbox.size, name) for name in self.sink_names},
            )
            self.ready.set()
            self._loop(stop)
            return self.writer.summary

    def _writer(self) -> ResultWriter:
        """results.jsonl made anew from the journal (under the earlier header, which the writer checks), then the
        writer, which rewrites results.csv from it and errors.csv from the journal's failures."""
        out, served = self.config.out, self.follower.served
        header = header_record(served.inspector, str(self.config.profile), self.config.save_maps)
        jsonl = out / "results.jsonl"
        earlier = read_records(jsonl)[0] if jsonl.exists() else None
        lines = "".join(json.dumps(record) + "\n" for record in [earlier or header, *self.journal.finished()])
        write_new(out, "results.jsonl", lines.encode(), replace=True)  # never through a link (winclip.files)
        return ResultWriter(out, header, resume=True, resume_keys=RESUME_KEYS, errors=self.journal.failures())

    def _deliver(self, stack: ExitStack) -> None:
        """One delivery thread per sink, stopped (after up to DRAIN_S to empty the outbox) when the run ends."""
        deliveries = []
        for sink in self.sinks:
            stack.callback(sink.close)
            d = Delivery(self.outbox, sink, on_sent=lambda name, _mid: self.metrics.delivered.labels(name).inc(),
                         log=self.log)  # fmt: skip
            d.start()
            deliveries.append(d)

        def stop() -> None:
            deadline = time.monotonic() + DRAIN_S
            while self.outbox.size() and time.monotonic() < deadline and all(d.is_alive() for d in deliveries):
                self.outbox.wait(0.05)
            for d in deliveries:
                d.stop()
            for d in deliveries:
                d.join()

        stack.callback(stop)

    def _loop(self, stop: threading.Event) -> None:
        full = False
        while not stop.is_set():
            served = self.follower.poll()
            if served is not None:
                self.metrics.revision.set(served.revision)
            if self.outbox.full:
                if not full:
                    print(f"winclip watch: the outbox holds {self.outbox.capacity} messages: waiting for the line "
                          "to take them before scoring more", file=self.log)  # fmt: skip
                full = True
                self.outbox.wait(0.2)
                continue
            full = False
            taken = self.watcher.take(self.config.batch_size, timeout=0.2)
            if taken:
                self._batch(taken, stop)

    def _version(self, path: Path, stat: Stat) -> Version | None:
        """The version of a taken photo (its bytes hashed), or None when it changed or went meanwhile."""
        try:
            sha = file_sha256(path)
        except FileNotFoundError:
            self.watcher.finish(path, None)
            return None
        except OSError:
            sha = "unreadable"  # a photo that cannot be opened: it fails with the reason
        if Stat.of(path) != stat:
            self.watcher.retry(path)
            return None
        return Version(path.relative_to(self.watcher.folder).as_posix(), stat.size, stat.mtime_ns, sha)

    def _batch(self, taken: list[tuple[Path, Stat]], stop: threading.Event) -> None:
        """Score the new photos among `taken` in one pass and finish each in order."""
        started = time.monotonic()
        fresh: list[tuple[Path, Stat, Version]] = []
        for path, stat in taken:
            version = self._version(path, stat)
            if version is None:
                continue
            entry = self.journal.find(version)
            if entry is not None and entry.state != SCORING:  # finished before a stop, not moved yet
                self._after(path, version, entry.message_id, entry.state, entry.reason)
            else:
                fresh.append((path, stat, version))
        if not fresh:
            return
        served = self.follower.served
        items = [InputImage(p, PurePosixPath(v.rel).with_suffix("")) for p, _, v in fresh]
        outcomes = inspect_items(
            served.inspector, items, save_maps=self.config.save_maps, batch_size=len(items),
            max_pixels=self.config.max_pixels,
        )  # fmt: skip
        for (path, stat, version), outcome in zip(fresh, outcomes, strict=True):
            if stop.is_set():
                return  # not finished: scored again at the next start
            if Stat.of(path) != stat:
                self.watcher.retry(path)  # changed while scored: never finished as it was
            elif outcome.error is not None:
                self._fail(path, version, outcome)
            else:
                self._finish(path, version, outcome, served, started, stop)

    def _finish(
        self, path: Path, version: Version, outcome: Outcome, served: Served, started: float, stop: threading.Event
    ) -> None:
        """Steps 1-5 of winclip.line.journal for one scored photo."""
        mid = version.message_id(self.journal.folder)
        now = datetime.now(timezone.utc)
        r = outcome.record
        assert r is not None  # a scored photo (errors go to _fail)
        record = {**r, "rel": version.rel, "message_id": mid, "time": now.isoformat(), "profile": served.name,
                  "profile_revision": served.revision}  # fmt: skip
        msg = message(
            message_id=mid, time=now, profile=served.name, revision=served.revision, path=str(path), rel=version.rel,
            model=self.model_info, result=r, review_threshold=served.profile.review_threshold,
        )  # fmt: skip
        self.journal.begin(Entry(mid, version, SCORING, now.isoformat(), None, None, record, msg))
        self.writer.write(replace(outcome, record=record))
        row = Record(
            time=now, profile=served.name, filename=version.rel[-FILENAME_CHARS:], image_sha256=version.sha256,
            score=r["score"], threshold=r["threshold"], label=r["label"], confidence=r["confidence"],
            regions=r["regions"], latency_ms=(time.monotonic() - started) * 1000.0,
        )  # fmt: skip
        record_id = self._record(row, stop)
        if record_id is None:
            return  # stopping while the record is unavailable: finished or scored again at the next start
        self.journal.commit(mid, record_id, self.sink_names)
        self.outbox.notify()
        self.metrics.photos.labels(r["label"]).inc()
        self.metrics.latency.observe(time.monotonic() - started)
        self._after(path, version, mid, DONE, None)

    def _record(self, row: Record, stop: threading.Event) -> int | None:
        """Write the record's row, retrying with back-off while the database is unavailable; None if stopped."""
        delay, failing = 0.5, None
        while True:
            try:
                (record_id,) = self.recorder.record([row])
            except DatabaseUnavailableError as exc:
                if str(exc) != failing:
                    print(f"winclip watch: the record cannot be written ({one_line(exc)}); retrying", file=self.log)
                failing = str(exc)
                if stop.wait(delay):
                    return None
                delay = min(delay * 2, 30.0)
                continue
            return record_id

    def _fail(self, path: Path, version: Version, outcome: Outcome) -> None:
        """An unreadable photo: errors.csv, the journal (state failed) and a message with the reason, at once."""
        mid = version.message_id(self.journal.folder)
        now = datetime.now(timezone.utc)
        served = self.follower.served
        reason = outcome.error or "unknown error"
        msg = message(
            message_id=mid, time=now, profile=served.name, revision=served.revision, path=str(path), rel=version.rel,
            model=self.model_info, error=reason,
        )  # fmt: skip
        self.writer.write(outcome)
        entry = Entry(mid, version, FAILED, now.isoformat(), None, reason, {"path": str(path)}, msg)
        self.journal.fail(entry, reason, self.sink_names)
        self.outbox.notify()
        self.metrics.photos.labels("failed").inc()
        self._after(path, version, mid, FAILED, reason)

    def _after(self, path: Path, version: Version, mid: str, state: str, reason: str | None) -> None:
        """`--after`: move to done/ (failed/ with the reason), delete, or keep a finished photo."""
        mode = self.config.after
        try:
            if mode == "keep":
                self.watcher.finish(path, Stat.of(path))
                return
            if mode == "delete" and state == DONE:
                path.unlink(missing_ok=True)
            elif state == DONE:
                move(path, self.config.done_dir / version.rel)
            else:
                target = move(path, self.config.failed_dir / version.rel)
                write_file(target.with_name(target.name + ".reason.txt"), f"{reason}\n".encode())
        except (OSError, LinkError) as exc:  # LinkError: a link where the reason goes is never written through
            print(f"winclip watch: {path}: finished, but cannot be moved, deleted or its reason written ({exc})",
                  file=self.log)  # fmt: skip
            self.watcher.finish(path, Stat.of(path))
            return
        self.watcher.finish(path, None)
