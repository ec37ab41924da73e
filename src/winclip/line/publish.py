"""The sinks a command asks for, and the station's results to the line (`winclip serve --mqtt/--webhook`).

`SinkOptions` holds the parsed `--mqtt` and `--webhook` options and builds the sinks. `Publisher` is the hook
the station calls after each recorded result (winclip.service.station, `on_recorded`): it puts the message in
an outbox file of its own (one per replica) and delivers it with the same threads, order and retries as
`winclip watch`. The station's answer does not wait for the line. Unlike a watched folder, a result recorded
just before a kill may have no message (the HTTP client got the answer); the station's message id is random.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .messages import ModelInfo, message
from .mqtt import MqttSink, MqttTarget
from .outbox import Delivery, Outbox, Sink
from .webhook import WebhookSink

if TYPE_CHECKING:
    from ..service.db import Record
    from ..service.station import Served


@dataclass(frozen=True)
class SinkOptions:
    """`--mqtt` (parsed, with its credentials and TLS files) and `--webhook` (with its secret)."""

    mqtt: MqttTarget | None = None
    webhook: str | None = None
    webhook_secret: bytes | None = field(default=None, repr=False)

    @property
    def any(self) -> bool:
        """Whether any sink is asked for."""
        return self.mqtt is not None or self.webhook is not None

    def sinks(self, status_topic: str | None = None, log: TextIO = sys.stderr) -> list[Sink]:
        """The sinks, connecting (in the background) to the broker; `status_topic`: `<prefix>/status` if None."""
        out: list[Sink] = []
        if self.mqtt is not None:
            out.append(MqttSink(self.mqtt, status_topic=status_topic or f"{self.mqtt.prefix}/status", log=log))
        if self.webhook is not None:
            out.append(WebhookSink(self.webhook, secret=self.webhook_secret))
        return out


class Publisher:
    """The station's hook: each recorded result → a message in the outbox → its sinks (module docstring)."""

    def __init__(self, outbox: str | Path, sinks: list[Sink], *, log: TextIO = sys.stderr) -> None:
        self.outbox = Outbox(outbox)
        self.sinks = sinks
        self.log = log
        self.deliveries = [Delivery(self.outbox, sink, log=log) for sink in sinks]
        for d in self.deliveries:
            d.start()

    def __call__(self, served: Served, record: Record, record_id: int) -> None:
        """Queue the message of one recorded result (a failure is logged: the answer and the record stand)."""
        msg = message(
            message_id=secrets.token_hex(16), time=record.time,
            profile=served.name, revision=served.revision, path=record.filename, rel=None,
            model=ModelInfo.of(served.inspector.model), record_id=record_id,
            result={"label": record.label, "score": record.score, "threshold": record.threshold,
                    "confidence": record.confidence, "regions": record.regions},
            review_threshold=served.profile.review_threshold,
        )  # fmt: skip
        try:
            self.outbox.put(msg["message_id"], json.dumps(msg, separators=(",", ":")), [s.name for s in self.sinks])
        except sqlite3.Error as exc:
            print(f"winclip serve: result {record_id} not sent to the line: outbox {self.outbox.path}: {exc}",
                  file=self.log)  # fmt: skip

    def close(self) -> None:
        """Stop delivering (what is left is sent at the next start), disconnect, close the outbox."""
        for d in self.deliveries:
            d.stop()
        for d in self.deliveries:
            d.join()
        for sink in self.sinks:
            sink.close()
        self.outbox.close()
