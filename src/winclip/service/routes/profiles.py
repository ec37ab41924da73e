"""Profiles: list, show, create from uploads, change thresholds, download stored reference photos."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse

from ..config import ServiceConfig
from ..names import MEDIA_TYPES, check_name
from ..schemas import Detail, ProfileList, ProfileOut, Thresholds
from ..state import AppState, app_state, outcome
from ..station import ThresholdChange
from ..uploads import read_uploads

router = APIRouter(prefix="/v1/profiles", tags=["profiles"], responses={503: {"model": Detail}})
State = Annotated[AppState, Depends(app_state)]


@router.get("", summary="Every served profile (and the refused ones with the reason)")
async def list_profiles(state: State) -> ProfileList:
    station = state.live_station()
    return ProfileList(
        profiles=[ProfileOut.of(station.profiles[n]) for n in sorted(station.profiles)], refused=station.refused
    )


def etag(revision: int) -> str:
    """The ETag of a profile at a revision."""
    return f'"{revision}"'


MAX_REVISION_DIGITS = 18  # a revision is a 64-bit integer in the record


def if_match_revision(value: str | None) -> int | None:
    """The revision an If-Match header names (`"7"`, or `7`); None when absent or `*`; 422 when malformed (ASCII
    digits only, at most MAX_REVISION_DIGITS of them)."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip()
    tag = tag[1:-1] if len(tag) > 1 and tag[0] == tag[-1] == '"' else tag
    if not (tag.isascii() and tag.isdigit() and len(tag) <= MAX_REVISION_DIGITS):
        raise HTTPException(422, f'If-Match: {value[:40]!r} is not a profile\'s ETag (its revision in quotes: "7")')
    return int(tag)


@router.get(
    "/{name}", summary="One profile (ETag: its revision)", responses={404: {"model": Detail}, 409: {"model": Detail}}
)
async def get_profile(name: str, state: State, response: Response) -> ProfileOut:
    served = state.served(name)
    response.headers["ETag"] = etag(served.revision)
    return ProfileOut.of(served)


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
    response: Response,
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
        check_name(name, state.config.reserved_names)
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
    assert station.base is not None  # live: loaded
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
    response.headers["ETag"] = etag(made.revision)
    print(f"winclip serve: profile {name!r} created by {client(request)}", file=sys.stderr)
    return made


def client(request: Request) -> str:
    """The address a request came from, for the log."""
    return request.client.host if request.client else "?"


@router.patch(
    "/{name}",
    summary="Change a profile's thresholds (saved in the profile; fields left out keep their value)",
    responses={404: {"model": Detail}, 412: {"model": Detail}, 422: {"model": Detail}},
)
async def patch_profile(
    request: Request,
    name: str,
    body: Thresholds,
    state: State,
    response: Response,
    if_match: Annotated[
        str | None, Header(description='the ETag read before (e.g. "7"): 412 if the profile changed since')
    ] = None,
) -> ProfileOut:
    target = state.served(name)
    station = state.live_station()
    change = ThresholdChange(
        threshold=body.threshold,
        review=body.review_threshold,
        clear_review="review_threshold" in body.model_fields_set and body.review_threshold is None,
        if_match=if_match_revision(if_match),
    )
    changed = await outcome(state.call(lambda: station.set_thresholds(target.name, change)))
    response.headers["ETag"] = etag(changed.revision)
    print(
        f"winclip serve: profile {name!r} thresholds set to {changed.profile.threshold} (review "
        f"{changed.profile.review_threshold}), revision {changed.revision}, by {client(request)}",
        file=sys.stderr,
    )
    return ProfileOut.of(changed)
