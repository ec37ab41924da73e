"""Uploads at the edge of the service: size limits, decoding into images, one-line errors naming the part.

Only the formats of `winclip.images.IMAGE_FORMATS` are decoded (PNG, JPEG, BMP, TIFF, WebP,
GIF); every image is sized from its header first (pixels, sides, bit depth), the memory it will
take is reserved from the memory budget (winclip.service.budget), and only then decoded.

`RequestLimit` bounds the bodies themselves: one request at most `limit` bytes (413), and all
bodies being received at once at most `in_flight` bytes (503 + Retry-After), which bounds what the
multipart parser spools to disk. A request refused before its body is read is answered with
`Connection: close`, so the unread body is dropped with the connection.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from fastapi import HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..images import IMAGE_FORMATS, ImageError, check_size, load_image
from .budget import RETRY_AFTER_S, MemoryBudget, estimate_bytes
from .config import ServiceConfig
from .security import HttpMiddleware, unread_refusal

T = TypeVar("T")
PART_NAME_LIMIT = 200  # characters of an uploaded file name kept in messages


class UploadError(Exception):
    """An upload that cannot be used: an HTTP status and a one-line detail naming the file."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def part_name(upload: UploadFile, index: int, field: str) -> str:
    """How an uploaded part is named in messages: its file name, else `<field>[i]` (one line)."""
    name = "".join(c if c.isprintable() else " " for c in upload.filename or f"{field}[{index}]")  # no NUL, no CR
    return name[:PART_NAME_LIMIT]


ACCEPTED = ", ".join(IMAGE_FORMATS)
# The service sizes every upload against its own limits (max_pixels, the budget) before decoding; Pillow's
# warning at 89 megapixels would only add noise to the log (its error at twice that still applies).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def probe_upload(data: bytes, name: str, *, min_size: int, max_pixels: int, include: frozenset[str]) -> tuple[int, str]:
    """(bytes of memory it will take, Pillow format) of one upload from its header alone (budget.estimate_bytes,
    plus the upload itself); UploadError 415/413/422 naming `name`."""

    def probe(image: Image.Image) -> tuple[int, str]:
        assert image.format is not None  # Image.open names the plugin that read the file
        return estimate_bytes(image, include) + len(data), image.format

    return _opened(data, name, min_size, max_pixels, probe)


def decode_upload(data: bytes, name: str, *, min_size: int, max_pixels: int) -> Image.Image:
    """Bytes of one upload → RGB image (EXIF applied); UploadError 415/413/422 naming `name`."""

    def decode(opened: Image.Image) -> Image.Image:
        opened.load()
        return load_image(opened, name, min_size)

    return _opened(data, name, min_size, max_pixels, decode)


def _opened(data: bytes, name: str, min_size: int, max_pixels: int, use: Callable[[Image.Image], T]) -> T:
    """`use(image)` on the upload opened lazily (sides and pixels checked first), Pillow's errors as UploadErrors."""
    if not data:
        raise UploadError(422, f"{name}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as opened:
            try:
                check_size(opened, name, min_size, max_pixels)
            except ImageError as exc:
                raise UploadError(413 if "more than the limit" in exc.reason else 422, str(exc)) from None
            return use(opened)
    except UnidentifiedImageError:
        raise UploadError(415, f"{name}: not an image file (format not recognised; accepted: {ACCEPTED})") from None
    except ImageError as exc:
        raise UploadError(422, str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"{name}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise UploadError(
            422, f"{name}: cannot decode image ({reason}); the file may be truncated or corrupt"
        ) from None


@dataclass(frozen=True)
class Upload:
    """A decoded upload and its format (one of IMAGE_FORMATS)."""

    name: str
    data: bytes
    image: Image.Image
    sha256: str
    format: str

    @property
    def extension(self) -> str:
        """The file extension of its decoded format (never taken from the upload's name)."""
        return IMAGE_FORMATS[self.format][0]


@asynccontextmanager
async def read_uploads(
    uploads: Sequence[UploadFile],
    field: str,
    config: ServiceConfig,
    budget: MemoryBudget,
    min_size: int,
    *,
    at_least: int = 1,
    include: frozenset[str] = frozenset(),
) -> AsyncIterator[list[Upload]]:
    """Read, size-check, reserve and decode uploads (off the event loop); the memory stays reserved for the block.

    `include`: the pictures the answer will draw of each (their memory is reserved too). UploadError on the first
    bad upload; BudgetError (413, or 503 with Retry-After) when the budget cannot take them.
    """
    raw = await _read(uploads, field, config, at_least)

    def probe() -> list[tuple[int, str]]:
        sizes = config.max_pixels
        return [probe_upload(d, n, min_size=min_size, max_pixels=sizes, include=include) for n, d in raw]

    probed = await run_in_threadpool(probe)
    for (name, _), (need, _) in zip(raw, probed, strict=True):
        budget.check(need, name)  # one image larger than the whole budget: 413 naming it
    with budget.reserve(sum(need for need, _ in probed), field):

        def decode() -> list[Upload]:
            return [
                Upload(
                    name,
                    data,
                    decode_upload(data, name, min_size=min_size, max_pixels=config.max_pixels),
                    hashlib.sha256(data).hexdigest(),
                    fmt,
                )
                for (name, data), (_, fmt) in zip(raw, probed, strict=True)
            ]

        yield await run_in_threadpool(decode)


async def _read(
    uploads: Sequence[UploadFile], field: str, config: ServiceConfig, at_least: int
) -> list[tuple[str, bytes]]:
    """(name, bytes) of each upload, counts and sizes checked."""
    if len(uploads) < at_least:
        raise UploadError(422, f"{field}: at least {at_least} image(s) required")
    if len(uploads) > config.max_images:
        raise UploadError(413, f"{field}: {len(uploads)} images in one request; the limit is {config.max_images}")
    raw = []
    for i, upload in enumerate(uploads):
        name = part_name(upload, i, field)
        if upload.size is not None and upload.size > config.max_file_bytes:
            raise UploadError(413, f"{name}: {upload.size:,} bytes; the limit per file is {config.max_file_bytes:,}")
        data = await upload.read()
        if len(data) > config.max_file_bytes:
            raise UploadError(413, f"{name}: {len(data):,} bytes; the limit per file is {config.max_file_bytes:,}")
        raw.append((name, data))
    return raw


class RequestLimit(HttpMiddleware):
    """ASGI middleware: 413 for a body over `limit` bytes (declared length, or counted while read); 503 with
    Retry-After when the bodies being received at once would exceed `in_flight` bytes (module docstring).

    It also stamps the arrival time into the scope (`winclip.received`) for the recorded latency.
    """

    def __init__(self, app: ASGIApp, *, limit: int, in_flight: int) -> None:
        super().__init__(app)
        self.limit = limit
        self.in_flight_limit = in_flight
        self.in_flight = 0  # bytes of the bodies being received (the event loop is the only user)

    def _busy(self, more: int) -> str | None:
        if self.in_flight + more <= self.in_flight_limit:
            return None
        return (
            f"busy: {self.in_flight:,} bytes of uploads being received, {more:,} more would exceed the limit of "
            f"{self.in_flight_limit:,}; retry in {RETRY_AFTER_S} s"
        )

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["winclip.received"] = time.perf_counter()  # latency is measured from here
        declared = dict(scope["headers"]).get(b"content-length", b"")
        length = None  # the server itself refuses a Content-Length that is not a number
        if declared.isdigit():
            length = int(declared) if len(declared) <= 18 else self.limit + 1
        if length is not None and length > self.limit:
            why = f"request body of {declared[:40].decode()} bytes; the limit is {self.limit:,}"
            await unread_refusal(413, why)(scope, receive, send)
            return
        busy = self._busy(length or 0)
        if busy is not None:
            await unread_refusal(503, busy, {"Retry-After": str(RETRY_AFTER_S)})(scope, receive, send)
            return
        held = length or 0
        self.in_flight += held
        seen = 0

        async def counted() -> Message:
            nonlocal seen, held
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over the limit of {self.limit:,} bytes")
            if seen > held:  # a body without a declared length: reserved as it comes
                busy = self._busy(seen - held)
                if busy is not None:
                    raise HTTPException(503, busy, headers={"Retry-After": str(RETRY_AFTER_S)})
                self.in_flight += seen - held
                held = seen
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= held
