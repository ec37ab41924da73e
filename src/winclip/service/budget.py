"""The memory budget: the bytes that all requests in flight may hold, reserved before any pixel is decoded.

A request's images are sized from their headers (no decoding: Pillow's lazy open gives the size,
the mode and so the bit depth and bands), and `estimate_bytes` turns that into the bytes the
request will hold at its peak: the upload itself, the decoded pixels (1, 2 or 4 bytes a pixel by
mode), the RGB copy the model reads (4 bytes a pixel in Pillow), the float32 map and the
regions' working arrays, and each picture the request's `include=` asks for. `MemoryBudget.reserve`
takes those bytes from one budget for the whole process until the answer is built. A request
larger than the whole budget can never be served (413); one that does not fit next to the
requests in flight is refused at once with 503 and `Retry-After` rather than queued, so a burst of
large images is turned away instead of pushing the server into swap. The per-pixel figures are
upper bounds measured by benchmarks/service_memory.py (docs/security.md); everything drawn from
an image is drawn in blocks (winclip.inspection.render, winclip.images), so they hold at any size.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Set
from contextlib import contextmanager

from PIL import Image

from ..images import decoded_bytes
from ..inspection.render import RENDER_BLOCK

RETRY_AFTER_S = 2  # what a 503 tells the client to wait
PICTURES = ("mask", "overlay", "map")  # what include= may ask for, in the order they are drawn
# Bytes a pixel of the photo holds, by phase of a request, measured (benchmarks/service_memory.py, and on noisy
# photos, the worst case for PNG, by tests/service/test_hostile.py; glibc keeps some freed memory: counted too),
# rounded up; a picture's PNG is taken at its raw size (what noise compresses to):
DECODING = 5  # besides the decoded pixels: their RGB copy (4 bytes a pixel in Pillow), the allocator's slack
SCORING = 18  # the RGB photo, the float32 map at its size, the regions' mask and int32 labels
HELD = 13.5  # what stays while the pictures are drawn: the RGB photo and the map
# one picture being drawn, then encoded: the 8-bit picture (4 bytes a pixel for RGB, 1 for grey), or its PNG
# beside its base64 bytes and text
DRAWING = {"mask": 4.0, "overlay": 11.0, "map": 4.0}
ENCODED = {"mask": 4 / 3, "overlay": 4.0, "map": 4 / 3}  # its base64 text, kept for the answer
ANSWER_COPIES = 3  # once the answer is built: the base64 texts, the JSON text and its bytes (the photo is freed)
# float64 temporaries of the blocks an image is converted and drawn in (winclip.images, winclip.inspection.render)
BLOCK_BYTES = 128 * RENDER_BLOCK
# The cheapest image (8-bit grey, no picture) costs this much a pixel: the budget must hold one of max_pixels.
MIN_BYTES_PER_PIXEL = SCORING


def bytes_per_pixel(decoded: int, include: Set[str]) -> float:
    """The most bytes a pixel holds at once while a photo of `decoded` bytes a pixel is decoded, scored, drawn
    (the pictures in `include`, one after the other) and answered: the largest of the phases."""
    wanted = [k for k in PICTURES if k in include]
    drawing = [HELD + sum(ENCODED[d] for d in wanted[:i]) + DRAWING[k] for i, k in enumerate(wanted)]
    return max(decoded + DECODING, SCORING, *drawing, ANSWER_COPIES * sum(ENCODED[k] for k in wanted))


def estimate_bytes(image: Image.Image, include: Set[str] = frozenset()) -> int:
    """The most memory one opened (not yet decoded) image holds while scored and drawn (module docstring)."""
    pixels = image.width * image.height
    per_pixel = bytes_per_pixel(decoded_bytes(image) // max(1, pixels), include)
    return math.ceil(pixels * per_pixel) + BLOCK_BYTES * min(pixels, RENDER_BLOCK) // RENDER_BLOCK


class BudgetError(Exception):
    """A request the budget cannot take: HTTP status, one-line detail, and Retry-After (or None)."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


class MemoryBudget:
    """At most `limit` bytes of decoded images and their working memory in flight across requests (thread-safe)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the memory budget must be >= 1 byte, got {limit}")
        self.limit = int(limit)
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def check(self, need: int, what: str) -> None:
        """BudgetError 413 when `need` bytes could never be served, whatever else is in flight."""
        if need > self.limit:
            raise BudgetError(
                413, f"{what}: needs about {need:,} bytes of memory to decode and score; the budget is {self.limit:,}"
            )

    @contextmanager
    def reserve(self, need: int, what: str) -> Iterator[None]:
        """Hold `need` bytes of the budget for the block (BudgetError 413 or 503 when it cannot)."""
        self.check(need, what)
        with self._lock:
            if self.in_flight + need > self.limit:
                raise BudgetError(
                    503,
                    f"{what}: busy: {self.in_flight:,} bytes in flight, {need:,} more would exceed the memory budget "
                    f"of {self.limit:,}; retry in {RETRY_AFTER_S} s",
                    RETRY_AFTER_S,
                )
            self.in_flight += need
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= need
