"""The service's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..options import DEFAULT_BATCH_SIZE, ModelSpec

MiB = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs besides its routes."""

    profiles: Path
    model: ModelSpec
    batch_size: int = DEFAULT_BATCH_SIZE  # images per forward pass
    db_url: str | None = None  # None = sqlite:///<profiles>/inspections.sqlite
    window_ms: float = 10.0  # how long the worker collects a batch
    max_batch: int = 32  # images per batch at most
    max_images: int = 16  # images per request at most
    max_file_bytes: int = 20 * MiB  # per uploaded file
    max_request_bytes: int | None = None  # None = max_images * max_file_bytes + 1 MiB
    max_pixels: int = 50_000_000  # per decoded image
    min_area: int = 0  # regions smaller than this (pixels) are dropped

    @property
    def request_limit(self) -> int:
        """The largest request body accepted."""
        return self.max_request_bytes or self.max_images * self.max_file_bytes + MiB

    @property
    def database(self) -> str:
        """The database URL in use."""
        return self.db_url or f"sqlite:///{(self.profiles / 'inspections.sqlite').resolve()}"
