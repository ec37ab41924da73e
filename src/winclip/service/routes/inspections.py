"""The record of every inspection: paged and filtered JSON, and CSV."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...inspection.decisions import LABELS
from ..db import MAX_OFFSET, MAX_PAGE, DatabaseUnavailableError, Filters, one_line, utc
from ..names import check_name
from ..schemas import Detail, InspectionPage, InspectionRow
from ..state import AppState, app_state, unavailable

router = APIRouter(prefix="/v1", tags=["inspections"], responses={422: {"model": Detail}, 503: {"model": Detail}})
State = Annotated[AppState, Depends(app_state)]
DEFAULT_PAGE = 100
# The times a filter may name, in UTC: every time both databases store and Python can shift between time zones.
EARLIEST = datetime(1, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, tzinfo=timezone.utc)


def in_utc(field: str, t: datetime | None) -> datetime | None:
    """A filter's time in UTC (naive = UTC already); 422 naming the field outside EARLIEST..LATEST."""
    if t is None:
        return None
    try:
        shifted = utc(t)
    except OverflowError:
        shifted = None
    if shifted is None or not EARLIEST <= shifted <= LATEST:
        raise HTTPException(
            422, f"{field}: {t.isoformat()} is out of range; give a time from 0001-01-01 to 9999-12-31 UTC"
        )
    return shifted


def filters(profile: str | None, label: str | None, since: datetime | None, until: datetime | None) -> Filters:
    """Validated query filters (422 naming the bad one), times in UTC."""
    if profile is not None:
        try:
            check_name(profile)
        except ValueError as exc:
            raise HTTPException(422, f"profile: {exc}") from None
    if label is not None and label not in LABELS:
        raise HTTPException(422, f"label: {label!r} is not one of {', '.join(LABELS)}")
    return Filters(profile, label, in_utc("since", since), in_utc("until", until))


@router.get("/inspections", summary="Recorded inspections, newest first, with filters")
async def list_inspections(
    state: State,
    profile: str | None = None,
    label: str | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> InspectionPage:
    f = filters(profile, label, since, until)
    rec = state.database()

    def query() -> InspectionPage:
        try:
            return InspectionPage(
                total=rec.count(f),
                limit=limit,
                offset=offset,
                items=[InspectionRow.model_validate(row) for row in rec.page(f, limit=limit, offset=offset)],
            )
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseUnavailableError(f"the record cannot be read: {one_line(exc)}") from None

    try:
        return await run_in_threadpool(query)
    except DatabaseUnavailableError as exc:
        raise unavailable(exc) from None


@router.get("/inspections.csv", summary="The same rows as CSV (oldest first)", response_class=StreamingResponse)
async def inspections_csv(
    state: State,
    profile: str | None = None,
    label: str | None = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
) -> StreamingResponse:
    f = filters(profile, label, since, until)
    rec = state.database()
    try:
        await run_in_threadpool(rec.check_file)
    except DatabaseUnavailableError as exc:
        raise unavailable(exc) from None
    return StreamingResponse(
        rec.iter_csv(f),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="inspections.csv"'},
    )
