"""Profiles: list, show, create from uploads, change thresholds, download stored reference photos."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse

from ..config import ServiceConfig
from ..schemas import Detail, ProfileList, ProfileOut, Thresholds
from ..state import AppState, app_state, outcome
from ..station import MEDIA_TYPES, check_name
from ..uploads import read_uploads

router = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses={503: {"model": Detail}})
State = Annotated[AppState, Depends(app_state)]


@router.get("", summary="Every served profile (and the refused ones with the reason)")
async def list_profiles(state: State) -> ProfileList:
    station = state.live_station()
    return ProfileList(
        profiles=[ProfileOut.of(station.profiles[n]) for n in sorted(station.profiles)], refused=station.refused
    )


@router.get("/{name}", summary="One profile", responses={404: {"model": Detail}, 409: {"model": Detail}})
async def get_profile(name: str, state: State) -> ProfileOut:
    return ProfileOut.of(state.served(name))


@router.get(
    "/{name}/references/{index}",
    summary="A reference image saved by the service",
    response_class=FileResponse,
    responses={404: {"model": Detail}},
)
async def get_reference(name: str, index: int, state: State) -> FileResponse:
    path = state.served(name).reference_file(index)
    if path is None:
        raise HTTPException(404, f"profile {name!r} has no stored reference image {index}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], content_disposition_type="inline")


def states(field: str, given: list[str] | None, config: ServiceConfig) -> list[str]:
    """Extra states, stripped, without blanks and repeats; 422 over the limits (prompts cost encoding time)."""
    out = list(dict.fromkeys(s.strip() for s in given or [] if s.strip()))
    if len(out) > config.max_states:
        raise HTTPException(422, f"{field}: {len(out)} states; the limit is {config.max_states} per profile")
    long = [s for s in out if len(s) > config.max_state_chars]
    if long:
        raise HTTPException(
            422, f"{field}: a state of {len(long[0])} characters; the limit is {config.max_state_chars}"
        )
    return out


@router.post(
    "",
    status_code=201,
    summary="Create a profile from an object name and good images",
    responses={409: {"model": Detail}, 413: {"model": Detail}, 415: {"model": Detail}, 422: {"model": Detail}},
)
async def create_profile(
    request: Request,
    state: State,
    name: Annotated[str, Form(description="profile name: letters, digits, _ . - (1-64)")],
    object_name: Annotated[str, Form(alias="object", description="object name, e.g. screw")],
    good: Annotated[list[UploadFile] | None, File(description="good reference images (none = zero-shot)")] = None,
    normal_states: Annotated[
        list[str] | None, Form(description="extra normal states, e.g. '{o} with a sticker'")
    ] = None,
    anomalous_states: Annotated[list[str] | None, Form(description="extra anomalous states")] = None,
    roi: Annotated[UploadFile | None, File(description="region-of-interest mask (nonzero = inspect)")] = None,
    threshold: Annotated[float, Form(gt=0.0, le=1.0)] = 0.5,
) -> ProfileOut:
    try:
        check_name(name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if not object_name.strip():
        raise HTTPException(422, "object: the object name is empty")
    if len(object_name) > state.config.max_state_chars:
        raise HTTPException(422, f"object: {len(object_name)} characters; the limit is {state.config.max_state_chars}")
    extra_normal = states("normal_states", normal_states, state.config)
    extra_anomalous = states("anomalous_states", anomalous_states, state.config)
    station = state.live_station()
    if name in station.profiles or name in station.refused or (station.folder / name).exists():
        raise HTTPException(409, f"profile {name!r} exists already")
    async with AsyncExitStack() as stack:
        uploads = await stack.enter_async_context(
            read_uploads(good or [], "good", state.config, state.budget, station.base.min_size, at_least=0)
        )
        roi_image = None
        if roi is not None and (roi.filename or roi.size):
            (roi_upload,) = await stack.enter_async_context(read_uploads([roi], "roi", state.config, state.budget, 1))
            roi_image = roi_upload.image
        future = state.steps(
            lambda: station.create_steps(
                name,
                object_name.strip(),
                [(u.name, u.data, u.extension) for u in uploads],
                normal_states=extra_normal,
                anomalous_states=extra_anomalous,
                roi=roi_image,
                threshold=threshold,
            )
        )
        made = ProfileOut.of(await outcome(future))
    print(f"winclip serve: profile {name!r} created by {client(request)}", file=sys.stderr)
    return made


def client(request: Request) -> str:
    """The address a request came from, for the log."""
    return request.client.host if request.client else "?"


@router.patch(
    "/{name}",
    summary="Change a profile's thresholds (saved in the profile)",
    responses={404: {"model": Detail}, 422: {"model": Detail}},
)
async def patch_profile(request: Request, name: str, body: Thresholds, state: State) -> ProfileOut:
    target = state.served(name)
    station = state.live_station()
    future = state.call(lambda: station.set_thresholds(target.name, body.threshold, body.review_threshold))
    changed = ProfileOut.of(await outcome(future))
    print(
        f"winclip serve: profile {name!r} thresholds set to {body.threshold} (review {body.review_threshold}) "
        f"by {client(request)}",
        file=sys.stderr,
    )
    return changed
