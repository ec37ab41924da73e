"""Prometheus metrics of this replica (winclip.service.metrics); behind the API key like /v1 (README "Security")."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from ..state import AppState, app_state

router = APIRouter(tags=["metrics"])
State = Annotated[AppState, Depends(app_state)]


@router.get(
    "/metrics",
    summary="Prometheus metrics of this replica (text format; OpenMetrics when asked for)",
    response_class=Response,
)
async def scrape(request: Request, state: State) -> Response:
    body, content_type = state.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
