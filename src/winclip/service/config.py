"""The service's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..images import DEFAULT_MAX_PIXELS
from ..options import DEFAULT_BATCH_SIZE, ModelSpec

MiB = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs besides its routes."""

    profiles: Path
    model: ModelSpec
    batch_size: int = DEFAULT_BATCH_SIZE  # images per forward pass
    db_url: str | None = field(default=None, repr=False)  # None = sqlite:///<profiles>/inspections.sqlite
    db_connect_timeout_s: float = 10.0  # PostgreSQL: give up connecting after this long
    db_busy_timeout_ms: int = 5000  # SQLite: wait this long for a lock before failing (503)
    window_ms: float = 10.0  # how long the worker collects a batch
    max_batch: int = 32  # images per batch at most
    max_images: int = 16  # images per request at most
    max_file_bytes: int = 20 * MiB  # per uploaded file
    max_request_bytes: int | None = None  # None = max_images * max_file_bytes + 1 MiB
    max_pixels: int = DEFAULT_MAX_PIXELS  # per decoded image
    max_pixels_in_flight: int = 2 * DEFAULT_MAX_PIXELS  # decoded pixels of all requests being served at once
    max_states: int = 32  # extra normal (and anomalous) states per profile
    max_state_chars: int = 200  # characters per state
    min_area: int = 0  # regions smaller than this (pixels) are dropped
    api_key: str | None = field(default=None, repr=False)  # None = no authentication (loopback only)
    insecure_no_auth: bool = False  # no key, and any Host accepted (a network trusted as a whole)
    sync_interval_s: float = 1.0  # how often the profile revisions are polled (replicas follow each other)
    keep: frozenset[str] = frozenset()  # labels whose photos are kept for audit (none = no retention)
    keep_max_bytes: int = 0  # the keep folder's budget
    keep_dir: Path | None = None  # None = <profiles>/kept

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
