"""The driver of `winclip predict --ray`: chunks of inputs out to the workers, outcomes back, one writer.

The workers read each image by its absolute path (a shared filesystem mounted at the same place
on every node) and return `Outcome`s; the driver writes them with `workflow.ResultWriter` as they
arrive, so results.jsonl/csv, errors.csv, overlays and masks are the files of a local run (rows in
order of completion, not of input). Each input is written once: the pool hands back each chunk's
results once (a failed chunk is retried whole), and an input no worker could finish becomes an error row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..inspection.folder_run import InputImage, Outcome, ResultWriter, Summary
from ..progress import progress_bar
from .pool import ClusterError, Done, GaveUp, WorkerPool


def _outcomes(event: Done | GaveUp, originals: dict[str, InputImage]) -> Iterator[Outcome]:
    """A worker's outcomes under the inputs' own names (workers read absolute paths)."""
    if isinstance(event, GaveUp):
        yield Outcome(originals[event.item[0]], error=event.reason)
        return
    if len(event.result) != len(event.items):
        raise ClusterError(f"a Ray worker returned {len(event.result)} outcomes for {len(event.items)} images")
    for (path, _), outcome in zip(event.items, event.result, strict=True):
        item = originals[path]
        record = None if outcome.record is None else {**outcome.record, "path": str(item.path)}
        yield dataclasses.replace(outcome, item=item, record=record)


def run_predict_ray(
    pool: WorkerPool,
    header: dict,
    images: Sequence[InputImage],
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    chunk_size: int = 8,
    progress: bool = True,
) -> Summary:
    """Inspect `images` on the pool's workers, `chunk_size` per call, writing each result as it arrives."""
    writer = ResultWriter(out, header, overwrite=overwrite, resume=resume)
    todo = writer.todo(images)
    originals = {str(item.path.absolute()): item for item in todo}
    wire = [(path, str(item.rel)) for path, item in originals.items()]
    with (
        writer,
        progress_bar(len(todo), "predict (ray)", enabled=progress) as bar,
    ):
        for event in pool.run("inspect", wire, chunk_size):
            for outcome in _outcomes(event, originals):
                writer.write(outcome)
                bar.update(1)
    return writer.summary
