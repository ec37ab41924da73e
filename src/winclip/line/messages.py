"""The message sent to the line for each photo (MQTT payload, webhook body): one JSON object.

Its JSON Schema ships in the package (`message.schema.json`, `SCHEMA_FILE`). Fields: `schema` (its version),
`message_id` (the same for every copy of one photo's message: QoS 1 and retries may deliver it twice),
`time` (UTC, when it was scored), `profile` and `profile_revision` (the revision the decision was made at),
`path` (where the photo was) and `rel` (its path under the watched folder; null for the station),
`label` (`normal`, `review`, `anomalous`, or null with `error` set), `score`, `threshold`,
`review_threshold`, `confidence`, `regions` (`{x, y, width, height, area, peak}` each, in the photo's
pixels), `model` (backbone, weights, precision, runtime), `record_id` (its row in the record) and `error`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import WinCLIP

SCHEMA_ID = "winclip.line.result/1"
SCHEMA_FILE = "message.schema.json"


@dataclass(frozen=True)
class ModelInfo:
    """What scored the photos, as messages name it."""

    backbone: str
    pretrained: str | None
    weights_id: str
    precision: str
    runtime: str

    @classmethod
    def of(cls, model: WinCLIP) -> ModelInfo:
        """From a WinCLIP model (`backbone.runtime` only on an exported one)."""
        info = model.info
        backbone = model.backbone
        return cls(
            info.name, info.pretrained, info.weights_id, str(backbone.precision), getattr(backbone, "runtime", "torch")
        )

    def as_dict(self) -> dict:
        """The message's `model` field."""
        return {
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "weights_id": self.weights_id,
            "precision": self.precision,
            "runtime": self.runtime,
        }


def message(
    *,
    message_id: str,
    time: datetime,
    profile: str,
    revision: int,
    path: str,
    rel: str | None,
    model: ModelInfo,
    result: dict | None = None,
    review_threshold: float | None = None,
    record_id: int | None = None,
    error: str | None = None,
) -> dict:
    """One photo's message: `result` holds label, score, threshold, confidence, regions (None with `error`)."""
    r = result or {}
    return {
        "schema": SCHEMA_ID,
        "message_id": message_id,
        "time": time.isoformat(),
        "profile": profile,
        "profile_revision": revision,
        "path": path,
        "rel": rel,
        "label": r.get("label"),
        "score": r.get("score"),
        "threshold": r.get("threshold"),
        "review_threshold": review_threshold,
        "confidence": r.get("confidence"),
        "regions": r.get("regions", []),
        "model": model.as_dict(),
        "record_id": record_id,
        "error": error,
    }


def schema() -> dict:
    """The message's JSON Schema (shipped in the package)."""
    return json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text())
