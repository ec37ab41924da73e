"""The inspection station's HTTP API and web page (FastAPI); the library computes, this formats.

Endpoints (OpenAPI at `/docs`): `GET /health/live`, `GET /health/ready` (503 until the model
and every profile are loaded and warmed), `GET /v1/profiles`, `GET /v1/profiles/{name}`,
`GET /v1/profiles/{name}/references/{index}`, `POST /v1/profiles`, `PATCH /v1/profiles/{name}`,
`POST /v1/profiles/{name}/predict`, `GET /v1/inspections`, `GET /v1/inspections.csv`, and the
page at `/`. Errors are `{"detail": "<one line>"}`: 404 unknown profile, 409 a refused or
existing profile, 413 too large or too many uploads, 415 not an image, 422 malformed fields or
an undecodable image (each naming the part or file), 503 not ready or shutting down.

`predict?include=mask,overlay,map` adds base64 PNGs at the image's own size: `mask` (255 where
map >= threshold), `overlay` (the `winclip predict` overlay) and `map` (grayscale, pixel =
round(255 * map value)); the page recolours the overlay from `map` when its threshold slider
moves, so nothing is recomputed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from .. import __version__
from ..images import ImageError, load_image
from ..inspection import mask_image, overlay
from ..profile import LABELS, Inspection, ProfileMismatchError
from .batcher import Batcher, ShuttingDownError
from .db import MAX_PAGE, Filters, Recorder
from .station import (
    ModelSpec,
    PredictItem,
    ProfileConflictError,
    RecordingError,
    Served,
    Station,
    UnknownProfileError,
    check_name,
    region_dicts,
)

STATIC = Path(__file__).with_name("static")
INCLUDES = ("mask", "overlay", "map")
MiB = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs besides its routes."""

    profiles: Path
    model: ModelSpec
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


class UploadError(Exception):
    """An upload that cannot be used: an HTTP status and a one-line detail naming the file."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def part_name(upload: UploadFile, index: int, field: str) -> str:
    """How an uploaded part is named in messages: its file name, else `<field>[i]` (one line)."""
    name = (upload.filename or f"{field}[{index}]").replace("\r", " ").replace("\n", " ")
    return name[:200]


def decode_upload(data: bytes, name: str, *, min_size: int, max_pixels: int) -> Image.Image:
    """Bytes of one upload → RGB image (EXIF applied); UploadError 415/413/422 naming `name`."""
    if not data:
        raise UploadError(422, f"{name}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > max_pixels:
                raise UploadError(
                    413, f"{name}: image is {opened.width}x{opened.height} pixels, more than the limit of {max_pixels:,}"
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
        raise UploadError(422, f"{name}: cannot decode image ({reason}); the file may be truncated or corrupt") from None


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
            Upload(name, data, decode_upload(data, name, min_size=min_size, max_pixels=config.max_pixels),
                   hashlib.sha256(data).hexdigest())
            for name, data in raw
        ]

    return await run_in_threadpool(decode)


def png_base64(image: Image.Image) -> str:
    """A PNG as base64 text."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def result_json(upload: Upload, r: Inspection, served: Served, include: frozenset[str]) -> dict:
    """One image's answer; with the PNGs asked for in `include`."""
    p = served.profile
    out = {
        "filename": upload.name,
        "sha256": upload.sha256,
        "width": upload.image.width,
        "height": upload.image.height,
        "score": r.score,
        "model_score": r.model_score,
        "zero_shot": r.zero_shot,
        "threshold": p.threshold,
        "review_threshold": p.review_threshold,
        "label": r.label,
        "confidence": r.confidence,
        "regions": region_dicts(r),
    }
    if "mask" in include:
        out["mask"] = png_base64(mask_image(r.map, p.threshold))
    if "overlay" in include:
        out["overlay"] = png_base64(overlay(upload.image, r.map, p.threshold, r.regions))
    if "map" in include:
        out["map"] = png_base64(Image.fromarray(np.clip(np.rint(r.map * 255.0), 0, 255).astype(np.uint8)))
    return out


def profile_json(served: Served) -> dict:
    """A served profile as JSON (calibration scores included for the page's histogram)."""
    p = served.profile
    cal = p.calibration
    calibration = None
    if cal is not None:
        calibration = {
            **{k: getattr(cal, k) for k in ("target_fpr", "review_fpr", "threshold", "review_threshold", "fpr", "recall", "f1_threshold", "f1")},
            "good": [c.score for c in cal.good],
            "bad": [c.score for c in cal.bad],
        }
    references = []
    for i, (name, sha) in enumerate(zip(p.reference_names, p.reference_hashes)):
        url = f"/v1/profiles/{served.name}/references/{i}" if served.reference_file(i) else None
        references.append({"name": Path(name).name, "sha256": sha, "url": url})
    return {
        "name": served.name,
        "object_name": p.object_name,
        "object_phrase": p.object_phrase,
        "normal_states": list(p.normal_states),
        "anomalous_states": list(p.anomalous_states),
        "backbone": p.backbone,
        "pretrained": p.pretrained,
        "weights_id": p.weights_id,
        "options": dataclasses.asdict(p.options),
        "shots": p.shots,
        "references": references,
        "roi": None if p.roi is None else {"width": int(p.roi.shape[1]), "height": int(p.roi.shape[0]), "inside": float(p.roi.mean())},
        "threshold": p.threshold,
        "review_threshold": p.review_threshold,
        "confidence_scale": p.confidence_scale,
        "calibration": calibration,
        "digest": served.digest,
        "created": p.created,
        "version": p.version,
    }


class Thresholds(BaseModel):
    """New thresholds for a profile (`review_threshold` null = no review band)."""

    threshold: float
    review_threshold: float | None = None


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


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "malformed request"


def create_app(
    config: ServiceConfig, recorder: Recorder | None = None, *, on_fatal: Callable[[str], None] | None = None
) -> FastAPI:
    """The FastAPI app; the lifespan loads the model on the worker thread and drains it on shutdown.

    `on_fatal(message)` is called (from the worker thread) when the model cannot be loaded.
    """
    state: dict = {"ready": False, "error": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        config.profiles.mkdir(parents=True, exist_ok=True)
        rec = recorder or Recorder(config.database)
        station = Station(config.profiles, config.model, rec, min_area=config.min_area)
        batcher = Batcher(station.predict_batch, window_s=config.window_ms / 1000.0, max_batch=config.max_batch)
        state.update(station=station, batcher=batcher, recorder=rec)

        def loaded(future) -> None:
            if future.exception() is None:
                state["ready"] = True
                print(f"winclip serve: ready ({len(station.profiles)} profile(s), {len(station.refused)} refused)", file=sys.stderr)
                return
            exc = future.exception()
            state["error"] = f"the model could not be loaded: {exc}"
            print(f"winclip serve: {state['error']}", file=sys.stderr)
            if on_fatal is not None:
                on_fatal(state["error"])

        batcher.call(station.load).add_done_callback(loaded)
        yield
        state.update(ready=False, error="the service is shutting down")
        await run_in_threadpool(batcher.close)
        rec.close()

    app = FastAPI(
        title="winclip inspection station",
        version=__version__,
        description="Zero/few-shot visual anomaly detection (WinCLIP) over inspection profiles.",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: /docs works offline
        redoc_url=None,
    )
    app.add_middleware(RequestLimit, limit=config.request_limit)
    app.state.service = state

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(UploadError)
    async def upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        line = str(exc).splitlines()[0] if str(exc) else ""
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {line}"}, status_code=500)

    def station() -> Station:
        if state["error"]:
            raise HTTPException(503, state["error"])
        if not state["ready"]:
            raise HTTPException(503, "not ready: loading and warming up the model and profiles")
        return state["station"]

    def served(name: str) -> Served:
        try:
            check_name(name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        st = station()
        if name in st.refused:
            raise HTTPException(409, f"profile {name!r} was refused at start-up: {st.refused[name]}")
        try:
            return st.get(name)
        except UnknownProfileError as exc:
            raise HTTPException(404, str(exc)) from None

    async def on_worker(future) -> object:
        """Await a worker future; map the station's errors to HTTP statuses."""
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except UnknownProfileError as exc:
            raise HTTPException(404, str(exc)) from None
        except ProfileConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        except (ImageError, ProfileMismatchError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from None
        except RecordingError as exc:
            raise HTTPException(500, str(exc)) from None

    def submit(fn_or_items):
        try:
            batcher: Batcher = state["batcher"]
            if callable(fn_or_items):
                return batcher.call(fn_or_items)
            return [batcher.submit(item) for item in fn_or_items]
        except ShuttingDownError as exc:
            raise HTTPException(503, str(exc)) from None

    # -- page and health ---------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )

    @app.get("/health/live", summary="The process is up")
    async def live() -> dict:
        return {"status": "live"}

    @app.get("/health/ready", summary="503 until the model and every profile are loaded and warmed")
    async def ready() -> JSONResponse:
        if state["error"] or not state["ready"]:
            return JSONResponse({"detail": state["error"] or "not ready: loading and warming up"}, status_code=503)
        st: Station = state["station"]
        stats = state["batcher"].stats
        return JSONResponse(
            {
                "status": "ready",
                "version": __version__,
                "backbone": st.base.info.name,
                "weights_id": st.base.info.weights_id,
                "device": str(st.base.device),
                "precision": st.base.precision,
                "database": state["recorder"].dialect,
                "profiles": sorted(st.profiles),
                "refused": st.refused,
                "batching": {"batches": stats.batches, "images": stats.items, "largest": stats.largest},
            }
        )

    # -- profiles ----------------------------------------------------------------------------

    @app.get("/v1/profiles", summary="Every served profile (and the refused ones with the reason)")
    async def list_profiles() -> dict:
        st = station()
        return {"profiles": [profile_json(st.profiles[n]) for n in sorted(st.profiles)], "refused": st.refused}

    @app.get("/v1/profiles/{name}", summary="One profile")
    async def get_profile(name: str) -> dict:
        return profile_json(served(name))

    @app.get("/v1/profiles/{name}/references/{index}", summary="A reference image saved by the service")
    async def get_reference(name: str, index: int) -> FileResponse:
        path = served(name).reference_file(index)
        if path is None:
            raise HTTPException(404, f"profile {name!r} has no stored reference image {index}")
        return FileResponse(path)

    @app.post("/v1/profiles", status_code=201, summary="Create a profile from an object name and good images")
    async def create_profile(
        name: Annotated[str, Form(description="profile name: letters, digits, _ . - (1-64)")],
        object_name: Annotated[str, Form(alias="object", description="object name, e.g. screw")],
        good: Annotated[list[UploadFile] | None, File(description="good reference images (none = zero-shot)")] = None,
        normal_states: Annotated[list[str] | None, Form(description="extra normal states, e.g. '{o} with a sticker'")] = None,
        anomalous_states: Annotated[list[str] | None, Form(description="extra anomalous states")] = None,
        roi: Annotated[UploadFile | None, File(description="region-of-interest mask (nonzero = inspect)")] = None,
        threshold: Annotated[float, Form(gt=0.0, le=1.0)] = 0.5,
    ) -> JSONResponse:
        try:
            check_name(name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if not object_name.strip():
            raise HTTPException(422, "object: the object name is empty")
        st = station()
        if name in st.profiles or name in st.refused or (st.folder / name).exists():
            raise HTTPException(409, f"profile {name!r} exists already")
        uploads = await read_uploads(good or [], "good", config, st.base.min_size, at_least=0)
        roi_image = None
        if roi is not None and (roi.filename or roi.size):
            (roi_upload,) = await read_uploads([roi], "roi", config, 1)
            roi_image = roi_upload.image
        states_n = [s.strip() for s in normal_states or [] if s.strip()]
        states_a = [s.strip() for s in anomalous_states or [] if s.strip()]
        future = submit(
            lambda: st.create(
                name,
                object_name.strip(),
                [(u.name, u.data) for u in uploads],
                normal_states=states_n,
                anomalous_states=states_a,
                roi=roi_image,
                threshold=threshold,
            )
        )
        return JSONResponse(profile_json(await on_worker(future)), status_code=201)

    @app.patch("/v1/profiles/{name}", summary="Change a profile's thresholds (saved in the profile)")
    async def patch_profile(name: str, body: Thresholds) -> dict:
        target = served(name)
        future = submit(lambda: state["station"].set_thresholds(target.name, body.threshold, body.review_threshold))
        return profile_json(await on_worker(future))

    @app.post("/v1/profiles/{name}/predict", summary="Inspect 1..N images with a profile")
    async def predict(
        request: Request,
        name: str,
        images: Annotated[list[UploadFile], File(description="images to inspect")],
        include: Annotated[str, Query(description="comma-separated: mask, overlay, map (base64 PNGs)")] = "",
    ) -> dict:
        received = request.scope.get("winclip.received", time.perf_counter())
        wanted = frozenset(x.strip() for x in include.split(",") if x.strip())
        if not wanted <= set(INCLUDES):
            raise HTTPException(422, f"include: unknown {', '.join(sorted(wanted - set(INCLUDES)))}; use {', '.join(INCLUDES)}")
        target = served(name)
        uploads = await read_uploads(images, "images", config, target.inspector.model.min_size)
        futures = submit([PredictItem(name, u.image, u.name, u.sha256, received) for u in uploads])
        results = [await on_worker(f) for f in futures]

        def render() -> list[dict]:
            return [result_json(u, r, target, wanted) for u, r in zip(uploads, results)]

        return {"profile": name, "results": await run_in_threadpool(render)}

    # -- the record --------------------------------------------------------------------------

    def filters(profile: str | None, label: str | None, since: datetime | None, until: datetime | None) -> Filters:
        if profile is not None:
            try:
                check_name(profile)
            except ValueError as exc:
                raise HTTPException(422, f"profile: {exc}") from None
        if label is not None and label not in LABELS:
            raise HTTPException(422, f"label: {label!r} is not one of {', '.join(LABELS)}")
        return Filters(profile, label, since, until)

    def database() -> Recorder:
        if "recorder" not in state:
            raise HTTPException(503, "not ready: starting")
        return state["recorder"]

    @app.get("/v1/inspections", summary="Recorded inspections, newest first, with filters")
    async def list_inspections(
        profile: str | None = None,
        label: str | None = None,
        since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict:
        f = filters(profile, label, since, until)
        rec = database()

        def query() -> dict:
            return {"total": rec.count(f), "limit": limit, "offset": offset, "items": rec.page(f, limit=limit, offset=offset)}

        return await run_in_threadpool(query)

    @app.get("/v1/inspections.csv", summary="The same rows as CSV (oldest first)")
    async def inspections_csv(
        profile: str | None = None,
        label: str | None = None,
        since: Annotated[datetime | None, Query()] = None,
        until: Annotated[datetime | None, Query()] = None,
    ) -> StreamingResponse:
        f = filters(profile, label, since, until)
        return StreamingResponse(
            database().iter_csv(f),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="inspections.csv"'},
        )

    return app
