"""Inspecting uploaded images with a profile."""

from __future__ import annotations

import base64
import io
import sys
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ...inspection.inspector import Inspection
from ...inspection.render import map_image, mask_image, overlay, png_info
from ...inspection.render import png_bytes as marked_png
from ..budget import PICTURES
from ..db import DatabaseUnavailableError
from ..schemas import Detail, PredictOut, PredictResult
from ..state import AppState, app_state, outcome
from ..station import PredictItem, Scored
from ..uploads import Upload, read_uploads

INCLUDES = PICTURES  # drawn in this order (the memory budget counts on it)
PNG_COMPRESS_LEVEL = 1  # fast: these pictures go straight to a browser

router = APIRouter(prefix="/v1/profiles", tags=["predict"], responses={503: {"model": Detail}})
State = Annotated[AppState, Depends(app_state)]


def png_bytes(image: Image.Image, kind: str) -> bytes:
    """A picture as PNG bytes, marked as winclip's `kind` (overlay, mask, map: `profile add-good` refuses them)."""
    return marked_png(image, kind, compress_level=PNG_COMPRESS_LEVEL)


def png_base64(draw: Callable[[], Image.Image], kind: str) -> str:
    """The picture `draw()` makes as a marked PNG (png_bytes), as base64 text (the picture is freed once encoded, the
    PNG never copied)."""
    buffer = io.BytesIO()
    draw().save(buffer, format="PNG", pnginfo=png_info(kind), compress_level=PNG_COMPRESS_LEVEL)
    with buffer.getbuffer() as png:
        return base64.b64encode(png).decode("ascii")


def pictures(upload: Upload, r: Inspection, include: frozenset[str]) -> dict[str, str]:
    """The base64 PNGs asked for, drawn at the threshold the decision was made at, one after the other."""
    score_map, threshold = r.map, r.threshold
    assert score_map is not None and threshold is not None  # a recorded inspection is a decided one
    makers = {
        "mask": lambda: mask_image(score_map, threshold),
        "overlay": lambda: overlay_of(upload, r),
        "map": lambda: map_image(score_map),
    }
    return {k: png_base64(makers[k], k) for k in INCLUDES if k in include}


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
    min_size = target.inspector.model.min_size
    async with read_uploads(images, "images", state.config, state.budget, min_size, include=wanted) as uploads:
        futures = [state.submit(PredictItem(name, u.image, u.name, u.sha256, received)) for u in uploads]
        results = [await outcome(f) for f in futures]

        def render() -> list[PredictResult]:
            if state.keeper is not None:
                keep(state, name, uploads, results)
            pairs = zip(uploads, results, strict=True)
            return [PredictResult.of(u.name, u.sha256, r, pictures(u, r.inspection, wanted)) for u, r in pairs]

        return PredictOut(profile=name, results=await run_in_threadpool(render))


def overlay_of(upload: Upload, r: Inspection) -> Image.Image:
    """The photo with its map and regions, at the threshold the decision was made at."""
    assert r.map is not None and r.threshold is not None  # a recorded inspection is a decided one
    return overlay(upload.image, r.map, r.threshold, r.regions)


def keep(state: AppState, profile: str, uploads: list[Upload], results: list[Scored]) -> None:
    """Keep the photos with a kept label and their overlays (winclip.service.retention), and point their rows at
    them; rows of photos removed for the budget are pointed at none. A failure is logged and counted: the
    inspection stands, recorded, without its photo."""
    keeper, metrics = state.keeper, state.metrics
    assert keeper is not None  # predict keeps photos only with a keeper
    kept = [(u, s) for u, s in zip(uploads, results, strict=True) if s.inspection.label in keeper.labels]
    drawn = [png_bytes(overlay_of(u, s.inspection), "overlay") for u, s in kept]
    pointers: dict[int, str | None] = {}
    with keeper.pointing:  # pointers reach the database in the order photos were kept and evicted
        for (u, s), picture in zip(kept, drawn, strict=True):
            label = s.inspection.label
            assert label is not None  # kept: one of the keeper's labels
            try:
                path, evicted = keeper.keep(
                    record_id=s.record_id, time=s.time, profile=profile, label=label, filename=u.name,
                    photo=(u.data, u.extension), overlay=picture,
                )  # fmt: skip
            except OSError as exc:
                metrics.keep_failures.inc()
                print(f"winclip serve: photo of record {s.record_id} not kept: {exc}", file=sys.stderr)
                continue
            metrics.evicted.inc(len(evicted))
            pointers.update({i: None for i in evicted})
            if path is not None:
                pointers[s.record_id] = path
        try:
            state.database().set_kept(pointers)
        except DatabaseUnavailableError as exc:
            metrics.keep_failures.inc()
            print(f"winclip serve: kept photos not pointed to by their records: {exc}", file=sys.stderr)
