"""Profiles: list, show, create from uploads, change thresholds, download stored reference photos."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse

from ..schemas import Detail, ProfileList, ProfileOut, Thresholds
from ..state import AppState, app_state, outcome
from ..station import check_name
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
    return FileResponse(path)


@router.post(
    "",
    status_code=201,
    summary="Create a profile from an object name and good images",
    responses={409: {"model": Detail}, 413: {"model": Detail}, 415: {"model": Detail}, 422: {"model": Detail}},
)
async def create_profile(
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
    station = state.live_station()
    if name in station.profiles or name in station.refused or (station.folder / name).exists():
        raise HTTPException(409, f"profile {name!r} exists already")
    uploads = await read_uploads(good or [], "good", state.config, station.base.min_size, at_least=0)
    roi_image = None
    if roi is not None and (roi.filename or roi.size):
        (roi_upload,) = await read_uploads([roi], "roi", state.config, 1)
        roi_image = roi_upload.image
    future = state.call(
        lambda: station.create(
            name,
            object_name.strip(),
            [(u.name, u.data) for u in uploads],
            normal_states=[s.strip() for s in normal_states or [] if s.strip()],
            anomalous_states=[s.strip() for s in anomalous_states or [] if s.strip()],
            roi=roi_image,
            threshold=threshold,
        )
    )
    return ProfileOut.of(await outcome(future))


@router.patch(
    "/{name}",
    summary="Change a profile's thresholds (saved in the profile)",
    responses={404: {"model": Detail}, 422: {"model": Detail}},
)
async def patch_profile(name: str, body: Thresholds, state: State) -> ProfileOut:
    target = state.served(name)
    station = state.live_station()
    future = state.call(lambda: station.set_thresholds(target.name, body.threshold, body.review_threshold))
    return ProfileOut.of(await outcome(future))
