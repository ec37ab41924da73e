"""The inspection station's HTTP API and web page (FastAPI): the app, its lifespan and error handling.

Endpoints (OpenAPI at `/docs`; routers in `routes/`, shapes in `schemas.py`): `GET /health/live`,
`GET /health/ready` (503 until the model and every profile are loaded and warmed),
`GET /v1/profiles`, `GET /v1/profiles/{name}`, `GET /v1/profiles/{name}/references/{index}`,
`POST /v1/profiles`, `PATCH /v1/profiles/{name}`, `POST /v1/profiles/{name}/predict`,
`GET /v1/inspections`, `GET /v1/inspections.csv`, `GET /metrics` (Prometheus), and the page at
`/`. Errors are `{"detail": "<one line>"}`: 401 missing or wrong API key, 403 a cross-site
browser request, 404 unknown profile, 409 a refused or existing profile, 412 an `If-Match`
that is not the profile's revision, 413 too large or too many uploads, 415 not an image, 422
malformed fields or an undecodable image (each naming the part or file), 503 (with
`Retry-After` where waiting helps) not ready, shutting down, memory budget busy, or the record
unavailable.

Security (winclip.service.security): with `config.api_key` every `/v1` route and `/metrics`
need `Authorization: Bearer <key>`; the page, `/docs`, `/openapi.json` and `/health/*` are open.
`BrowserGuard` decides from the headers, before any body is read or spooled: the key (401),
cross-site changes and, without a key, a non-loopback `Host` (403); it puts `nosniff` and a
Content-Security-Policy on every response. `RequestLimit` bounds each body and the bodies being
received at once (winclip.service.uploads); the memory budget counts bytes (winclip.service.budget).

Replicas: several processes on one database and one profiles folder serve the same profiles
(winclip.service.revisions, winclip.service.sync); each has its own metrics
(winclip.service.metrics). The record's schema is migrated when it is opened
(winclip.service.migrate); photos may be kept for audit (winclip.service.retention).

`predict?include=mask,overlay,map` adds base64 PNGs at the image's own size: `mask` (255 where
map >= threshold), `overlay` (the `winclip predict` overlay) and `map` (grayscale, pixel =
round(255 * map value)); the page recolours the overlay from `map` when its threshold slider
moves, so nothing is recomputed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..progress import plural
from .batcher import Batcher
from .budget import BudgetError
from .config import ServiceConfig
from .db import Record, Recorder
from .metrics import MetricsMiddleware
from .retention import Keeper
from .routes import health, inspections, metrics, predict, profiles
from .schemas import Detail
from .security import BrowserGuard
from .state import AppState, authorized
from .station import Served, Station
from .sync import follow
from .uploads import RequestLimit, UploadError


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "malformed request"


def create_app(
    config: ServiceConfig,
    recorder: Recorder | None = None,
    *,
    keeper: Keeper | None = None,
    on_fatal: Callable[[str], None] | None = None,
    on_recorded: Callable[[Served, Record, int], None] | None = None,
) -> FastAPI:
    """The FastAPI app; the lifespan loads the model on the worker thread and drains it on shutdown.

    The record and the keep folder are opened by the lifespan unless given (the command line opens them first, to
    fail before serving). `on_fatal(message)` is called (from the worker thread) when the model cannot be loaded;
    `on_recorded(served, record, id)` after each recorded result (the line's publisher, `serve --mqtt/--webhook`).
    """
    state = AppState(config, keeper=keeper)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config.profiles.mkdir(parents=True, exist_ok=True)
        state.recorder = recorder or Recorder.of(config)
        if config.keep and state.keeper is None:
            state.keeper = Keeper.of(config)
        state.station = Station(
            config.profiles,
            config.model,
            state.recorder,
            metrics=state.metrics,
            batch_size=config.batch_size,
            min_area=config.min_area,
            reserved=config.reserved_names,
            on_recorded=on_recorded,
        )
        state.batcher = Batcher(
            state.station.predict_batch, window_s=config.window_ms / 1000.0, max_batch=config.max_batch
        )
        _watch(state)
        state.batcher.call(state.station.load).add_done_callback(lambda future: _loaded(state, future, on_fatal))
        following = asyncio.create_task(follow(state, config.sync_interval_s))
        yield
        following.cancel()
        with suppress(asyncio.CancelledError):
            await following
        state.ready, state.error = False, "the service is shutting down"
        await run_in_threadpool(state.batcher.close)
        state.recorder.close()
        if state.keeper is not None:
            state.keeper.close()

    app = FastAPI(
        title="winclip inspection station",
        version=__version__,
        description="Zero/few-shot visual anomaly detection (WinCLIP) over inspection profiles.",
        lifespan=lifespan,
        docs_url=None,  # served by routes/health.py from the fastapi-offline package: /docs works offline
        redoc_url=None,
    )
    app.state.winclip = state
    app.add_middleware(RequestLimit, limit=config.request_limit, in_flight=config.body_bytes_in_flight)
    # before anything reads the body: Host, Origin and the key, from the headers; every response's headers
    app.add_middleware(BrowserGuard, loopback_only=config.loopback_only, api_key=config.api_key)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: times and counts every refusal too
    # starlette types a handler as taking any Exception; each is called with its own (Kludex/starlette#2417)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(UploadError, _upload_error)  # type: ignore[arg-type]
    app.add_exception_handler(BudgetError, _budget_error)  # type: ignore[arg-type]
    app.include_router(health.router)
    for module in (profiles, predict, inspections, metrics):
        app.include_router(module.router, dependencies=[Depends(authorized)], responses={401: {"model": Detail}})
    app.mount("/static", StaticFiles(directory=health.STATIC), name="static")
    app.mount("/docs-static", StaticFiles(directory=str(health.DOCS_STATIC)), name="docs-static")
    return app


def _watch(state: AppState) -> None:
    """The metrics read when scraped: queue, memory budget, profiles, kept photos."""
    station, keeper, batcher = state.station, state.keeper, state.batcher
    assert station is not None and batcher is not None  # the lifespan built them just before
    state.metrics.watch(
        queue=lambda: batcher.depth,
        memory=lambda: state.budget.in_flight,
        served=lambda: (len(station.profiles), len(station.refused)),
    )
    if keeper is not None:
        state.metrics.kept_bytes.set_function(lambda: keeper.total)
        state.metrics.kept_files.set_function(lambda: keeper.count)


def _loaded(state: AppState, future: Future, on_fatal: Callable[[str], None] | None) -> None:
    """The end of loading, on the worker thread: ready, or the fatal error."""
    station = state.station
    assert station is not None  # the lifespan built it before loading
    if future.exception() is None:
        state.ready = True
        print(
            f"winclip serve: ready ({plural(len(station.profiles), 'profile')}, {len(station.refused)} refused)",
            file=sys.stderr,
        )
        return
    state.error = f"the model could not be loaded: {future.exception()}"
    print(f"winclip serve: {state.error}", file=sys.stderr)
    if on_fatal is not None:
        on_fatal(state.error)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _one_line(exc)}, status_code=422)


async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _budget_error(_request: Request, exc: BudgetError) -> JSONResponse:
    headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)
