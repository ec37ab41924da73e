"""Uploads at the edge of the service: size limits, decoding into images, one-line errors naming the part."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from ..images import ImageError, load_image
from .config import ServiceConfig

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


def decode_upload(data: bytes, name: str, *, min_size: int, max_pixels: int) -> Image.Image:
    """Bytes of one upload → RGB image (EXIF applied); UploadError 415/413/422 naming `name`."""
    if not data:
        raise UploadError(422, f"{name}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > max_pixels:
                raise UploadError(
                    413,
                    f"{name}: image is {opened.width}x{opened.height} pixels, more than the limit of {max_pixels:,}",
                )
            opened.load()
            return load_image(opened, name, min_size)
    except UnidentifiedImageError:
        raise UploadError(415, f"{name}: not an image file (format not recognised)") from None
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
    """A decoded upload."""

    name: str
    data: bytes
    image: Image.Image
    sha256: str


async def read_uploads(
    uploads: Sequence[UploadFile], field: str, config: ServiceConfig, min_size: int, *, at_least: int = 1
) -> list[Upload]:
    """Read, size-check and decode uploads (decoding off the event loop); UploadError on the first bad one."""
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

    def decode() -> list[Upload]:
        return [
            Upload(
                name,
                data,
                decode_upload(data, name, min_size=min_size, max_pixels=config.max_pixels),
                hashlib.sha256(data).hexdigest(),
            )
            for name, data in raw
        ]

    return await run_in_threadpool(decode)


class RequestLimit:
    """ASGI middleware: 413 for a body over `limit` bytes (declared length, or counted while read).

    It also stamps the arrival time into the scope (`winclip.received`) for the recorded latency.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["winclip.received"] = time.perf_counter()  # latency is measured from here
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse(
                {"detail": f"request body of {int(declared):,} bytes; the limit is {self.limit:,}"}, status_code=413
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over the limit of {self.limit:,} bytes")
            return message

        await self.app(scope, counted, send)
