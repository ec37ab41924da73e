"""The outbox: messages waiting for a sink (MQTT, a webhook), on disk, delivered in order with retries.

The messages are rows of the journal's file (winclip.line.journal), put there in the same transaction that
finishes their photo, so a finished photo's message is never lost and an unfinished one's never sent. Each
sink has a `Delivery` thread that sends its oldest message, deletes it once the sink confirmed it (an MQTT
PUBACK, a 2xx answer), and otherwise tries the same message again after a back-off that doubles from
`min_backoff_s` to `max_backoff_s`: a later message never overtakes an earlier one. A kill between the
confirmation and the delete sends that message once more at the next start, with the same message id (at
least once, as MQTT's QoS 1). The outbox is bounded: with `capacity` messages waiting, the pipeline stops
finishing photos (they wait in the folder) until some are delivered.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from .journal import connect


class DeliveryError(RuntimeError):
    """A message was not confirmed by its sink (one line: why); it is sent again after a back-off."""


class Sink(Protocol):
    """Where messages go: `send` returns once the message is confirmed, else raises DeliveryError."""

    name: str

    def send(self, message_id: str, body: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Waiting:
    """The oldest message of a sink."""

    seq: int
    message_id: str
    body: str
    attempts: int


class Outbox:
    """The outbox table of one journal file (module docstring)."""

    def __init__(self, path: str | Path, *, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"--outbox-max must be >= 1, got {capacity}")
        self.path = Path(path)
        self.capacity = int(capacity)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        self.changed = threading.Condition()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def size(self, sink: str | None = None) -> int:
        """Messages waiting (for one sink, or for all)."""
        if sink is None:
            return self._query("SELECT COUNT(*) FROM outbox")[0][0]
        return self._query("SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,))[0][0]

    @property
    def full(self) -> bool:
        """Whether `capacity` messages are waiting."""
        return self.size() >= self.capacity

    def put(self, message_id: str, body: str, sinks: Sequence[str]) -> None:
        """Queue a message for every sink (once per sink and message id) and wake the delivery threads."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO outbox (sink, message_id, body) VALUES (?, ?, ?)",
                    [(sink, message_id, body) for sink in sinks],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        self.notify()

    def head(self, sink: str) -> Waiting | None:
        """The oldest message waiting for `sink`."""
        rows = self._query(
            "SELECT seq, message_id, body, attempts FROM outbox WHERE sink = ? ORDER BY seq LIMIT 1", (sink,)
        )
        return Waiting(*rows[0]) if rows else None

    def delivered(self, seq: int) -> None:
        """Remove a confirmed message."""
        self._query("DELETE FROM outbox WHERE seq = ?", (seq,))
        self.notify()

    def attempted(self, seq: int) -> None:
        """Count a failed attempt."""
        self._query("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def notify(self) -> None:
        """Wake the delivery threads (new messages) and a pipeline waiting for room."""
        with self.changed:
            self.changed.notify_all()

    def wait(self, seconds: float) -> None:
        """Sleep until `notify` or `seconds` pass."""
        with self.changed:
            self.changed.wait(seconds)


class Delivery(threading.Thread):
    """Sends one sink's messages in order, retrying with back-off (module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        sink: Sink,
        *,
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        on_sent: Callable[[str, str], None] | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        super().__init__(name=f"winclip-deliver-{sink.name}", daemon=True)
        self.outbox = outbox
        self.sink = sink
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_sent = on_sent
        self.log = log
        self.failing: str | None = None
        self.sent = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        """Stop after the current attempt."""
        self._halt.set()
        self.outbox.notify()

    def run(self) -> None:
        backoff = self.min_backoff_s
        while not self._halt.is_set():
            try:
                head = self.outbox.head(self.sink.name)
            except sqlite3.Error as exc:
                self._failed(f"cannot read the outbox: {exc}")
                self._halt.wait(backoff)
                continue
            if head is None:
                self.outbox.wait(0.5)
                continue
            try:
                self.sink.send(head.message_id, head.body)
            except DeliveryError as exc:
                self.outbox.attempted(head.seq)
                self._failed(str(exc))
                self._halt.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.outbox.delivered(head.seq)
            self.sent += 1
            backoff = self.min_backoff_s
            if self.failing is not None:
                print(f"winclip: {self.sink.name}: delivering again", file=self.log)
                self.failing = None
            if self.on_sent is not None:
                self.on_sent(self.sink.name, head.message_id)

    def _failed(self, reason: str) -> None:
        """Log a failure once per outage (the reason changing counts as a new one)."""
        if reason != self.failing:
            waiting = self.outbox.size(self.sink.name)
            print(
                f"winclip: {self.sink.name}: {reason}; {waiting} message(s) kept in the outbox, retrying",
                file=self.log,
            )
        self.failing = reason
