"""Inspecting uploaded images with a profile."""

from __future__ import annotations

import base64
import io
import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ...inspector import Inspection
from ...render import map_image, mask_image, overlay
from ..schemas import Detail, PredictOut, PredictResult
from ..state import AppState, app_state, outcome
from ..station import PredictItem
from ..uploads import Upload, read_uploads

INCLUDES = ("mask", "overlay", "map")
PNG_COMPRESS_LEVEL = 1  # fast: these pictures go straight to a browser

router = APIRouter(prefix="/v1/profiles", tags=["predict"], responses={503: {"model": Detail}})
State = Annotated[AppState, Depends(app_state)]


def png_base64(image: Image.Image) -> str:
    """A PNG as base64 text."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pictures(upload: Upload, r: Inspection, include: frozenset[str]) -> dict[str, str]:
    """The base64 PNGs asked for, drawn at the threshold the decision was made at."""
    makers = {
        "mask": lambda: mask_image(r.map, r.threshold),
        "overlay": lambda: overlay(upload.image, r.map, r.threshold, r.regions),
        "map": lambda: map_image(r.map),
    }
    return {k: png_base64(makers[k]()) for k in INCLUDES if k in include}


@router.post(
    "/{name}/predict",
    summary="Inspect 1..N images with a profile",
    response_model_exclude_unset=True,
    responses={
        404: {"model": Detail},
        409: {"model": Detail},
        413: {"model": Detail},
        503: {"model": Detail, "description": "not ready, memory budget busy or record unavailable (Retry-After)"},
        415: {"model": Detail},
        422: {"model": Detail},
    },
)
async def predict(
    request: Request,
    name: str,
    state: State,
    images: Annotated[list[UploadFile], File(description="images to inspect")],
    include: Annotated[str, Query(description="comma-separated: mask, overlay, map (base64 PNGs)")] = "",
) -> PredictOut:
    received = request.scope.get("winclip.received", time.perf_counter())
    wanted = frozenset(x.strip() for x in include.split(",") if x.strip())
    if not wanted <= set(INCLUDES):
        raise HTTPException(
            422, f"include: unknown {', '.join(sorted(wanted - set(INCLUDES)))}; use {', '.join(INCLUDES)}"
        )
    target = state.served(name)
    async with read_uploads(images, "images", state.config, state.budget, target.inspector.model.min_size) as uploads:
        futures = [state.submit(PredictItem(name, u.image, u.name, u.sha256, received)) for u in uploads]
        results = [await outcome(f) for f in futures]

        def render() -> list[PredictResult]:
            pairs = zip(uploads, results, strict=True)
            return [PredictResult.of(u.name, u.sha256, r, pictures(u, r, wanted)) for u, r in pairs]

        return PredictOut(profile=name, results=await run_in_threadpool(render))
