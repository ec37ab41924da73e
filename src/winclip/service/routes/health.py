"""The page, the offline API docs and the health checks (open without the API key).

`/docs` is Swagger UI 5 (it reads OpenAPI 3.1), served by the app itself from the
`fastapi-offline` package's static files (Swagger UI: Apache-2.0; the package: MIT), started by
`static/docs.js` rather than an inline script, so the strict Content-Security-Policy holds.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

import fastapi_offline
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ..db import DatabaseUnavailableError
from ..schemas import Batching, Detail, Ready
from ..state import AppState, app_state

STATIC = Path(__file__).resolve().parent.parent / "static"
DOCS_STATIC = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="/docs-static/favicon.png">
<link rel="stylesheet" href="/docs-static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{openapi}"></div>
<script src="/docs-static/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""

router = APIRouter()
State = Annotated[AppState, Depends(app_state)]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """The Swagger UI, served by the app itself (/docs-static) so it works offline."""
    title = html.escape(f"{request.app.title} - API")
    return HTMLResponse(DOCS_PAGE.format(title=title, openapi=html.escape(request.app.openapi_url)))


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/health/ready",
    summary="503 until the model and every profile are loaded and warmed",
    response_model=Ready,
    responses={503: {"model": Detail}},
)
async def ready(state: State) -> Ready | JSONResponse:
    if state.error or not state.ready or state.station is None:
        return JSONResponse({"detail": state.error or "not ready: loading and warming up"}, status_code=503)
    try:
        await run_in_threadpool(state.database().check)
    except DatabaseUnavailableError as exc:
        return JSONResponse({"detail": f"not ready: the record is unavailable: {exc}"}, status_code=503)
    assert state.batcher is not None  # ready: the lifespan built it
    station, stats = state.station, state.batcher.stats
    base = station.base
    assert base is not None  # ready: loaded
    return Ready(
        status="ready",
        version=__version__,
        backbone=base.info.name,
        weights_id=base.info.weights_id,
        random_weights=base.info.checkpoint is None,
        device=str(base.device),
        precision=base.backbone.precision,
        database=state.database().dialect,
        profiles=sorted(station.profiles),
        refused=station.refused,
        batching=Batching(batches=stats.batches, images=stats.items, largest=stats.largest),
    )
