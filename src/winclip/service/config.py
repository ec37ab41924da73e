"""The service's settings, `ServiceConfig`: validated on construction, like `ModelSpec` and `MethodOptions`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_BUDGET
from ..inspection.decisions import LABELS
from ..options import DEFAULT_BATCH_SIZE, ModelSpec
from .budget import MIN_BYTES_PER_PIXEL
from .names import DATABASE_FILE, KEEP_FOLDER

MiB = 1 << 20
GiB = 1 << 30
MAX_WINDOW_MS = 10_000.0  # a batch window longer than this would hold every answer back
# Upper bounds of the settings: far beyond any sensible value, below what would overflow or stall.
MAX_BATCH = 4096  # images per forward pass or batch
MAX_IMAGES = 1024  # images per request
MAX_FILE_BYTES = 4 * GiB  # per uploaded file
MAX_PIXELS = 1_000_000_000  # decoded pixels per image (1000 megapixels)
MAX_BYTES = 1 << 40  # memory budget, upload bytes in flight (1 TiB)
MAX_KEEP_BYTES = 10**15  # the keep folder's budget (1 PB)
MAX_SECONDS = 3600.0  # database timeouts, polling interval


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
    # bytes of the request bodies being received at once (None = 2 * request_limit)
    max_body_bytes_in_flight: int | None = field(default=None, metadata=_option("--uploads-mb-in-flight"))
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata=_option("--max-megapixels"))  # per decoded image
    # memory of all requests being served at once: decoded images, maps and pictures (winclip.service.budget)
    max_bytes_in_flight: int = field(default=DEFAULT_MEMORY_BUDGET, metadata=_option("--memory-budget-mb"))
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
            ("batch_size", 1, MAX_BATCH),
            ("max_batch", 1, MAX_BATCH),
            ("max_images", 1, MAX_IMAGES),
            ("max_file_bytes", 1, MAX_FILE_BYTES),
            ("max_pixels", 1, MAX_PIXELS),
            ("max_bytes_in_flight", self.max_pixels * MIN_BYTES_PER_PIXEL, MAX_BYTES),
            ("max_states", 0, 1024),
            ("max_state_chars", 1, 10_000),
            ("min_area", 0, self.max_pixels),
            ("db_busy_timeout_ms", 0, MAX_SECONDS * 1000),
            ("keep_max_bytes", 0, MAX_KEEP_BYTES),
            ("window_ms", 0.0, MAX_WINDOW_MS),
        ):
            self._check(name, low, high, low_open=False)
        for name in ("db_connect_timeout_s", "sync_interval_s"):
            self._check(name, 0.0, MAX_SECONDS, low_open=True)
        if self.max_request_bytes is not None:
            self._check("max_request_bytes", 1, MAX_BYTES, low_open=False)
        if self.max_body_bytes_in_flight is not None:
            self._check("max_body_bytes_in_flight", self.request_limit, MAX_BYTES, low_open=False)
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
        finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        if isinstance(value, bool) or not finite:
            raise ValueError(f"{label} must be a finite number, got {value!r}")
        if value < low or (low_open and value == low):
            raise ValueError(f"{label} must be {'>' if low_open else '>='} {low:,}, got {value:,}")
        if high is not None and value > high:
            raise ValueError(f"{label} must be <= {high:,}, got {value:,}")

    @property
    def request_limit(self) -> int:
        """The largest request body accepted."""
        return self.max_request_bytes or self.max_images * self.max_file_bytes + MiB

    @property
    def body_bytes_in_flight(self) -> int:
        """The most bytes of request bodies received at once."""
        return self.max_body_bytes_in_flight or 2 * self.request_limit

    @property
    def reserved_names(self) -> frozenset[str]:
        """Names in the profiles folder that are the service's own (the database and keep folder when there)."""
        own = {path.name for path in (self.sqlite_file, self.keep_folder) if path and path.parent == self.profiles}
        return frozenset(own)

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None for another database."""
        if self.db_url is None:
            return self.profiles / DATABASE_FILE
        return Path(self.db_url[len("sqlite:///") :]) if self.db_url.startswith("sqlite:///") else None

    @property
    def loopback_only(self) -> bool:
        """Whether requests must name a loopback Host (no key, and no --insecure-no-auth)."""
        return self.api_key is None and not self.insecure_no_auth

    @property
    def keep_folder(self) -> Path:
        """Where kept photos go."""
        return self.keep_dir or self.profiles / KEEP_FOLDER

    @property
    def database(self) -> str:
        """The database URL in use."""
        return self.db_url or f"sqlite:///{(self.profiles / DATABASE_FILE).resolve()}"
