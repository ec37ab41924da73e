"""Replicas follow each other: each polls the profile revisions and loads what another one created or changed.

Every `--sync-interval` seconds (1 by default) one query reads every profile's revision
(winclip.service.revisions); when one is newer than the revision served here, the model's
worker loads it from the shared profiles folder between two batches (`Station.refresh`) and
serves it from then on. So a profile created, or thresholds changed, through one replica are
used by every replica within the interval plus the time to read the profile's files (and, for
a new profile, one warm-up inspection). Polling works the same on PostgreSQL and SQLite, costs
one small query per interval, and needs nothing from the file system but that every replica
reads the same folder (a shared or network file system).
"""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from typing import TextIO

from starlette.concurrency import run_in_threadpool

from .batcher import ShuttingDownError
from .db import one_line
from .state import AppState


async def follow(state: AppState, interval_s: float, log: TextIO = sys.stderr) -> None:
    """Poll and refresh until cancelled (module docstring); failures are logged once, and polling goes on."""
    failing: str | None = None
    while True:
        await asyncio.sleep(interval_s)
        station, batcher = state.station, state.batcher
        if not state.ready or station is None or batcher is None:
            continue
        try:
            current = await run_in_threadpool(station.revisions.current)
            if station.stale(current):
                await asyncio.wrap_future(batcher.call(partial(station.refresh, current)))
        except ShuttingDownError:
            return
        except Exception as exc:  # noqa: BLE001 - the database's and the loader's errors vary; keep polling
            reason = one_line(exc)
            if reason != failing:
                print(f"winclip serve: cannot follow the other replicas' profile changes: {reason}", file=log)
            failing = reason
            continue
        if failing is not None:
            print("winclip serve: following the other replicas' profile changes again", file=log)
            failing = None
