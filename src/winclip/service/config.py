"""The service's settings, `ServiceConfig`: validated on construction, like `ModelSpec` and `MethodOptions`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS
from ..inspection.decisions import LABELS
from ..options import DEFAULT_BATCH_SIZE, ModelSpec

MiB = 1 << 20
MAX_WINDOW_MS = 10_000.0  # a batch window longer than this would hold every answer back


def _option(name: str) -> dict[str, str]:
    return {"option": name}


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs besides its routes. Each numeric field names the `winclip serve` option
    that sets it; a value out of range is a ValueError naming both (e.g. "--max-batch (max_batch) must be >= 1")."""

    profiles: Path
    model: ModelSpec
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata=_option("--batch-size"))  # images per forward pass
    db_url: str | None = field(default=None, repr=False)  # None = sqlite:///<profiles>/inspections.sqlite
    # PostgreSQL: give up connecting after this long
    db_connect_timeout_s: float = field(default=10.0, metadata=_option("--db-timeout"))
    db_busy_timeout_ms: int = 5000  # SQLite: wait this long for a lock before failing (503)
    window_ms: float = field(default=10.0, metadata=_option("--batch-window-ms"))  # how long a batch is collected
    max_batch: int = field(default=32, metadata=_option("--max-batch"))  # images per batch at most
    max_images: int = field(default=16, metadata=_option("--max-images"))  # images per request at most
    max_file_bytes: int = field(default=20 * MiB, metadata=_option("--max-upload-mb"))  # per uploaded file
    max_request_bytes: int | None = None  # None = max_images * max_file_bytes + 1 MiB
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=_option("--max-megapixels"))  # per decoded image
    # decoded pixels of all requests being served at once
    max_pixels_in_flight: int = field(default=2 * DEFAULT_MAX_PIXELS, metadata=_option("--megapixels-in-flight"))
    max_states: int = 32  # extra normal (and anomalous) states per profile
    max_state_chars: int = 200  # characters per state
    min_area: int = field(default=0, metadata=_option("--min-area"))  # regions smaller than this (pixels) are dropped
    api_key: str | None = field(default=None, repr=False)  # None = no authentication (loopback only)
    insecure_no_auth: bool = False  # no key, and any Host accepted (a network trusted as a whole)
    # how often the profile revisions are polled (replicas follow each other)
    sync_interval_s: float = field(default=1.0, metadata=_option("--sync-interval"))
    # labels whose photos are kept for audit (none = no retention)
    keep: frozenset[str] = field(default=frozenset(), metadata=_option("--keep"))
    keep_max_bytes: int = field(default=0, metadata=_option("--keep-max-gb"))  # the keep folder's budget
    keep_dir: Path | None = None  # None = <profiles>/kept

    def __post_init__(self) -> None:
        for name, low, high in (
            ("batch_size", 1, None),
            ("max_batch", 1, None),
            ("max_images", 1, None),
            ("max_file_bytes", 1, None),
            ("max_pixels", 1, None),
            ("max_pixels_in_flight", self.max_pixels, None),
            ("max_states", 0, None),
            ("max_state_chars", 1, None),
            ("min_area", 0, None),
            ("db_busy_timeout_ms", 0, None),
            ("keep_max_bytes", 0, None),
            ("window_ms", 0.0, MAX_WINDOW_MS),
        ):
            self._check(name, low, high, low_open=False)
        for name in ("db_connect_timeout_s", "sync_interval_s"):
            self._check(name, 0.0, None, low_open=True)
        if self.max_request_bytes is not None and self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {self.max_request_bytes}")
        unknown = sorted(set(self.keep) - set(LABELS))
        if unknown:
            raise ValueError(f"--keep (keep): {', '.join(unknown)}: give labels among {', '.join(LABELS)}")
        if self.keep and self.keep_max_bytes <= 0:
            raise ValueError("--keep needs --keep-max-gb N (> 0): the kept photos' disk budget (keep_max_bytes)")
        if not self.keep and self.keep_dir is not None:
            raise ValueError("--keep-dir (keep_dir) needs --keep LABELS (keep)")

    def _check(self, name: str, low: float, high: float | None, *, low_open: bool) -> None:
        value = getattr(self, name)
        option = next(f.metadata.get("option") for f in fields(self) if f.name == name)
        label = f"{option} ({name})" if option else name
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{label} must be a finite number, got {value}")
        if value < low or (low_open and value == low):
            raise ValueError(f"{label} must be {'>' if low_open else '>='} {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{label} must be <= {high}, got {value}")

    @property
    def request_limit(self) -> int:
        """The largest request body accepted."""
        return self.max_request_bytes or self.max_images * self.max_file_bytes + MiB

    @property
    def loopback_only(self) -> bool:
        """Whether requests must name a loopback Host (no key, and no --insecure-no-auth)."""
        return self.api_key is None and not self.insecure_no_auth

    @property
    def keep_folder(self) -> Path:
        """Where kept photos go."""
        return self.keep_dir or self.profiles / "kept"

    @property
    def database(self) -> str:
        """The database URL in use."""
        return self.db_url or f"sqlite:///{(self.profiles / 'inspections.sqlite').resolve()}"
