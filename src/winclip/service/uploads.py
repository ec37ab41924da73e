"""Uploads at the edge of the service: size limits, decoding into images, one-line errors naming the part.

Only the formats of `winclip.images.IMAGE_FORMATS` are decoded (PNG, JPEG, BMP, TIFF, WebP,
GIF); every image is sized from its header first, its pixels are reserved from the memory
budget (winclip.service.budget), and only then decoded.
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
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..images import IMAGE_FORMATS, ImageError, check_pixels, load_image
from .budget import PixelBudget
from .config import ServiceConfig
from .security import HttpMiddleware

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
    name = (upload.filename or f"{field}[{index}]").replace("\r", " ").replace("\n", " ")
    return name[:PART_NAME_LIMIT]


ACCEPTED = ", ".join(IMAGE_FORMATS)
# The service sizes every upload against its own limits (max_pixels, the budget) before decoding; Pillow's
# warning at 89 megapixels would only add noise to the log (its error at twice that still applies).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def probe_upload(data: bytes, name: str, *, max_pixels: int) -> tuple[int, str]:
    """(pixels, Pillow format) of one upload from its header alone; UploadError 415/413/422 naming `name`."""
    return _opened(data, name, max_pixels, _pixels_and_format)


def _pixels_and_format(image: Image.Image) -> tuple[int, str]:
    assert image.format is not None  # Image.open names the plugin that read the file
    return image.width * image.height, image.format


def decode_upload(data: bytes, name: str, *, min_size: int, max_pixels: int) -> Image.Image:
    """Bytes of one upload → RGB image (EXIF applied); UploadError 415/413/422 naming `name`."""

    def decode(opened: Image.Image) -> Image.Image:
        opened.load()
        return load_image(opened, name, min_size)

    return _opened(data, name, max_pixels, decode)


def _opened(data: bytes, name: str, max_pixels: int, use: Callable[[Image.Image], T]) -> T:
    """`use(image)` on the upload opened lazily (size checked first), Pillow's errors as UploadErrors."""
    if not data:
        raise UploadError(422, f"{name}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as opened:
            try:
                check_pixels(opened, name, max_pixels)
            except ImageError as exc:
                raise UploadError(413, str(exc)) from None
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
    budget: PixelBudget,
    min_size: int,
    *,
    at_least: int = 1,
) -> AsyncIterator[list[Upload]]:
    """Read, size-check, reserve and decode uploads (off the event loop); the pixels stay reserved for the block.

    UploadError on the first bad upload; BudgetError (413, or 503 with Retry-After) when the budget cannot take them.
    """
    raw = await _read(uploads, field, config, at_least)
    probed = await run_in_threadpool(lambda: [probe_upload(d, n, max_pixels=config.max_pixels) for n, d in raw])
    with budget.reserve(sum(pixels for pixels, _ in probed), field):

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
    """ASGI middleware: 413 for a body over `limit` bytes (declared length, or counted while read).

    It also stamps the arrival time into the scope (`winclip.received`) for the recorded latency.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["winclip.received"] = time.perf_counter()  # latency is measured from here
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse(
                {"detail": f"request body of {int(declared):,} bytes; the limit is {self.limit:,}"}, status_code=413
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over the limit of {self.limit:,} bytes")
            return message

        await self.app(scope, counted, send)
