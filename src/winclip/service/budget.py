"""The memory budget: decoded pixels of all requests in flight, reserved before any pixel is decoded.

A request's images are sized from their headers (no decoding), then `PixelBudget.reserve`
takes their pixels from the budget until the answer is built. A request larger than the whole
budget can never be served (413); one that does not fit next to the requests in flight is
refused at once with 503 and `Retry-After` rather than queued, so a burst of large images is
turned away instead of pushing the server into swap. Memory per pixel in flight is bounded
because everything drawn from an image is drawn in blocks (winclip.inspection.render).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER_S = 2  # what a 503 tells the client to wait


class BudgetError(Exception):
    """A request the budget cannot take: HTTP status, one-line detail, and Retry-After (or None)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class PixelBudget:
    """At most `limit` decoded pixels in flight across requests (thread-safe)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the pixel budget must be >= 1, got {limit}")
        self.limit = int(limit)
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    @contextmanager
    def reserve(self, pixels: int, what: str) -> Iterator[None]:
        """Hold `pixels` of the budget for the block (BudgetError 413 or 503 when it cannot)."""
        if pixels > self.limit:
            raise BudgetError(413, f"{what}: {pixels:,} decoded pixels in one request; the limit is {self.limit:,}")
        with self._lock:
            if self.in_flight + pixels > self.limit:
                raise BudgetError(
                    503,
                    f"{what}: busy: {self.in_flight:,} decoded pixels in flight, {pixels:,} more would exceed the "
                    f"memory budget of {self.limit:,}; retry in {RETRY_AFTER_S} s",
                    RETRY_AFTER_S,
                )
            self.in_flight += pixels
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= pixels
