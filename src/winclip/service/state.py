"""The application's typed state, and the dependencies through which routes reach it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..images import ImageError
from ..inspection.profile import ProfileMismatchError
from .batcher import Batcher, ShuttingDownError
from .budget import RETRY_AFTER_S, MemoryBudget
from .config import ServiceConfig
from .db import DatabaseUnavailableError, Recorder
from .metrics import Metrics
from .names import check_name
from .retention import Keeper
from .security import key_matches
from .station import (
    InspectionError,
    PreconditionFailedError,
    PredictItem,
    ProfileConflictError,
    Served,
    Station,
    UnknownProfileError,
)

T = TypeVar("T")

bearer = HTTPBearer(
    auto_error=False, description="the API key given to `winclip serve` (--api-key-file or WINCLIP_API_KEY)"
)


@dataclass
class AppState:
    """What the lifespan builds and the routes use; `ready` once the model and profiles are loaded."""

    config: ServiceConfig
    station: Station | None = None
    batcher: Batcher | None = None
    recorder: Recorder | None = None
    keeper: Keeper | None = None  # photos kept for audit (None: not asked for)
    budget: MemoryBudget = field(init=False)
    metrics: Metrics = field(init=False)
    ready: bool = False
    error: str | None = None  # why the service cannot answer (load failure, shutting down)

    def __post_init__(self) -> None:
        self.budget = MemoryBudget(self.config.max_bytes_in_flight)
        self.metrics = Metrics()

    def live_station(self) -> Station:
        """The station once ready; HTTP 503 before, after a load failure and while shutting down."""
        if self.error:
            raise HTTPException(503, self.error)
        if not self.ready or self.station is None:
            raise HTTPException(503, "not ready: loading and warming up the model and profiles")
        return self.station

    def served(self, name: str) -> Served:
        """A served profile by name: 422 for an invalid name, 409 when refused, 404 when unknown."""
        try:
            check_name(name, self.config.reserved_names)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        station = self.live_station()
        if name in station.refused:
            raise HTTPException(409, f"profile {name!r} was refused at start-up: {station.refused[name]}")
        try:
            return station.get(name)
        except UnknownProfileError as exc:
            raise HTTPException(404, str(exc)) from None

    def database(self) -> Recorder:
        """The record, once started (503 before)."""
        if self.recorder is None:
            raise HTTPException(503, "not ready: starting")
        return self.recorder

    def submit(self, item: PredictItem) -> Future:
        """Queue one image for the next batch (503 when shutting down)."""
        return self._to_worker(lambda batcher: batcher.submit(item))

    def call(self, fn: Callable[[], object]) -> Future:
        """Run `fn` alone on the model's worker thread (503 when shutting down)."""
        return self._to_worker(lambda batcher: batcher.call(fn))

    def steps(self, fn: Callable[[], Generator[None, None, object]]) -> Future:
        """Run a long job a step at a time on the worker, between batches (503 when shutting down)."""
        return self._to_worker(lambda batcher: batcher.steps(fn))

    def _to_worker(self, put: Callable[[Batcher], Future]) -> Future:
        if self.batcher is None:
            raise HTTPException(503, "not ready: starting")
        try:
            return put(self.batcher)
        except ShuttingDownError as exc:
            raise HTTPException(503, str(exc)) from None


async def outcome(future: Future[T]) -> T:
    """Await a worker future; map the station's errors to HTTP statuses."""
    try:
        return await asyncio.shield(asyncio.wrap_future(future))
    except UnknownProfileError as exc:
        raise HTTPException(404, str(exc)) from None
    except ProfileConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except PreconditionFailedError as exc:
        raise HTTPException(412, str(exc)) from None
    except (ImageError, ProfileMismatchError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    except DatabaseUnavailableError as exc:
        raise unavailable(exc) from None
    except InspectionError as exc:
        raise HTTPException(500, str(exc)) from None


def unavailable(exc: DatabaseUnavailableError) -> HTTPException:
    """503 with Retry-After for a record that cannot be written or read now."""
    return HTTPException(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})


def app_state(request: Request) -> AppState:
    """FastAPI dependency: the application's state."""
    return request.app.state.winclip


def authorized(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """FastAPI dependency of every /v1 route: 401 unless `Authorization: Bearer <key>` (when a key is set).

    BrowserGuard refuses such a request from its headers before its body is read; this dependency declares the
    key in the OpenAPI schema (Swagger UI's "Authorize") and checks it once more."""
    key = app_state(request).config.api_key
    if key is None or key_matches(key, request.headers.get("authorization")):
        return
    client = request.client.host if request.client else "?"
    print(
        f"winclip serve: 401 {request.method} {request.url.path} from {client}: missing or wrong API key",
        file=sys.stderr,
    )
    raise HTTPException(
        401,
        "missing or wrong API key: send the header Authorization: Bearer <key>",
        headers={"WWW-Authenticate": "Bearer"},
    )
