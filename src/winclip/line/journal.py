"""The line's journal: which photo versions are finished, in one SQLite file under the output folder, with the
outbox of the messages they produced (winclip.line.outbox) in the same file.

A photo version is its relative path, size, modification time (ns) and the sha256 of its bytes; its message id
is derived from these (and the watched folder), so the same version always gets the same id. Each photo goes
through these steps, and a SIGKILL between any two leaves a state the next start finishes or undoes:

1. `begin`: a row in state `scoring` with the result record, the message and the time `T` its record row will
   carry (committed).
2. The picture files and a results.jsonl/csv row (winclip.inspection.folder_run.ResultWriter).
3. The record's row (winclip.service.db.Recorder), with time `T`.
4. `commit`: state `done`, the record's row id, and the messages put in the outbox, in one transaction. This is
   the moment the photo is finished: it is never scored again.
5. The photo is moved to `done/`, deleted or kept (`--after`).

On start, `recover` looks at the rows still `scoring` (at most one batch): when the record holds the row made at
step 3 (same profile, file name, sha256 and time `T`) the photo is finished (step 4); otherwise the row is
dropped and the photo, still in the folder, is scored again. results.jsonl, results.csv and errors.csv are then
written anew from the journal (`finished`, `failures`), so they hold every finished photo exactly once and never
a row of an unfinished one. A photo that cannot be read is finished at once in state `failed` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

JOURNAL_FILE = "line.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    message_id TEXT PRIMARY KEY,
    rel TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    time TEXT NOT NULL,
    record_id INTEGER,
    reason TEXT,
    record TEXT NOT NULL,
    message TEXT NOT NULL,
    finished INTEGER
);
CREATE INDEX IF NOT EXISTS photos_file ON photos (rel, size, mtime_ns);
CREATE INDEX IF NOT EXISTS photos_finished ON photos (finished);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sink, message_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCORING, DONE, FAILED = "scoring", "done", "failed"


@dataclass(frozen=True)
class Version:
    """One version of a photo: where it is under the watched folder, and its content's identity."""

    rel: str  # relative path, POSIX separators
    size: int
    mtime_ns: int
    sha256: str

    def message_id(self, folder: str) -> str:
        """The id every message about this version carries: the same for the same version, whatever happens."""
        key = "\0".join((folder, self.rel, str(self.size), str(self.mtime_ns), self.sha256))
        return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    """A journal row."""

    message_id: str
    version: Version
    state: str
    time: str
    record_id: int | None
    reason: str | None
    record: dict
    message: dict


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the journal file (WAL: the outbox's delivery threads read while the pipeline writes)."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _entry(row: sqlite3.Row | tuple) -> Entry:
    mid, rel, size, mtime_ns, sha, state, time, record_id, reason, record, message = row
    return Entry(
        mid, Version(rel, size, mtime_ns, sha), state, time, record_id, reason, json.loads(record), json.loads(message)
    )


COLUMNS = "message_id, rel, size, mtime_ns, sha256, state, time, record_id, reason, record, message"


class Journal:
    """The journal of one output folder (module docstring)."""

    def __init__(self, path: str | Path, folder: str | Path) -> None:
        self.path = Path(path)
        self.folder = str(Path(folder).resolve())
        self.conn = connect(self.path)
        with transaction(self.conn):
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'folder'").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO meta VALUES ('folder', ?)", (self.folder,))
        if row is not None and row[0] != self.folder:
            self.conn.close()
            raise ValueError(
                f"{self.path}: this output folder's journal is of the watched folder {row[0]}, not {self.folder}; "
                "use another --out"
            )

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def find(self, version: Version) -> Entry | None:
        """The row of this version, if any."""
        row = self.conn.execute(
            f"SELECT {COLUMNS} FROM photos WHERE rel = ? AND size = ? AND mtime_ns = ? AND sha256 = ?",
            (version.rel, version.size, version.mtime_ns, version.sha256),
        ).fetchone()
        return None if row is None else _entry(row)

    def begin(self, entry: Entry) -> None:
        """Step 1: the row in state `scoring` (module docstring)."""
        with transaction(self.conn):
            self._insert(entry, None)

    def commit(self, message_id: str, record_id: int | None, sinks: Sequence[str]) -> dict:
        """Step 4: `done` with the record's row id, and the message (with that id) in the outbox of every sink, in
        one transaction; returns the message."""
        with transaction(self.conn):
            (text,) = self.conn.execute("SELECT message FROM photos WHERE message_id = ?", (message_id,)).fetchone()
            message = {**json.loads(text), "record_id": record_id}
            self._finish(message_id, DONE, record_id, None, message, sinks)
        return message

    def fail(self, entry: Entry, reason: str, sinks: Sequence[str]) -> None:
        """A photo that cannot be read: finished in state `failed` with its reason and message, at once."""
        with transaction(self.conn):
            self._insert(entry, reason)
            self._finish(entry.message_id, FAILED, None, reason, entry.message, sinks)

    def _insert(self, entry: Entry, reason: str | None) -> None:
        """The photo's row in state `scoring` (inside the caller's transaction)."""
        v = entry.version
        self.conn.execute(
            f"INSERT OR REPLACE INTO photos ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.message_id, v.rel, v.size, v.mtime_ns, v.sha256, SCORING, entry.time, None, reason,
                json.dumps(entry.record), json.dumps(entry.message),
            ),
        )  # fmt: skip

    def _finish(
        self,
        message_id: str,
        state: str,
        record_id: int | None,
        reason: str | None,
        message: dict,
        sinks: Sequence[str],
    ) -> None:
        (order,) = self.conn.execute("SELECT COALESCE(MAX(finished), 0) + 1 FROM photos").fetchone()
        self.conn.execute(
            "UPDATE photos SET state = ?, record_id = ?, reason = ?, message = ?, finished = ? WHERE message_id = ?",
            (state, record_id, reason, json.dumps(message), order, message_id),
        )
        body = json.dumps(message, separators=(",", ":"))
        self.conn.executemany(
            "INSERT OR IGNORE INTO outbox (sink, message_id, body) VALUES (?, ?, ?)",
            [(sink, message_id, body) for sink in sinks],
        )

    def scoring(self) -> list[Entry]:
        """The rows a kill left in state `scoring`."""
        return [_entry(r) for r in self.conn.execute(f"SELECT {COLUMNS} FROM photos WHERE state = ?", (SCORING,))]

    def drop(self, message_id: str) -> None:
        """Forget an unfinished row: its photo is scored again."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM photos WHERE message_id = ? AND state = ?", (message_id, SCORING))

    def recover(self, recorded: Callable[[Entry], int | None], sinks: Sequence[str]) -> tuple[int, int]:
        """Finish the rows whose record row exists (`recorded(entry)` → its id, or None) and drop the others;
        (finished, dropped)."""
        finished = dropped = 0
        for entry in self.scoring():
            record_id = recorded(entry)
            if record_id is None:
                self.drop(entry.message_id)
                dropped += 1
            else:
                self.commit(entry.message_id, record_id, sinks)
                finished += 1
        return finished, dropped

    def finished(self) -> Iterator[dict]:
        """The results.jsonl records of the finished photos, in the order they finished."""
        query = "SELECT record FROM photos WHERE state = ? ORDER BY finished"
        for (text,) in self.conn.execute(query, (DONE,)):
            yield json.loads(text)

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of the photos that could not be read, in the order they failed."""
        query = "SELECT record, reason FROM photos WHERE state = ? ORDER BY finished"
        return [(json.loads(record)["path"], reason) for record, reason in self.conn.execute(query, (FAILED,))]

    def counts(self) -> dict[str, int]:
        """Rows by state."""
        return dict(self.conn.execute("SELECT state, COUNT(*) FROM photos GROUP BY state").fetchall())
