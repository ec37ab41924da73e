"""The page, the offline API docs and the health checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from ... import __version__
from ..schemas import Batching, Detail, Ready
from ..state import AppState, app_state

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()
State = Annotated[AppState, Depends(app_state)]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """The Swagger UI, served by the app itself (/docs-static) so it works offline."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url="/docs-static/swagger-ui-bundle.js",
        swagger_css_url="/docs-static/swagger-ui.css",
        swagger_favicon_url="/docs-static/favicon-32x32.png",
    )


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
    station, stats = state.station, state.batcher.stats
    base = station.base
    return Ready(
        status="ready",
        version=__version__,
        backbone=base.info.name,
        weights_id=base.info.weights_id,
        device=str(base.device),
        precision=base.backbone.precision,
        database=state.database().dialect,
        profiles=sorted(station.profiles),
        refused=station.refused,
        batching=Batching(batches=stats.batches, images=stats.items, largest=stats.largest),
    )
