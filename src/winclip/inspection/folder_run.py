"""The `winclip predict` workflow: find inputs, run them through a profile, write every result at once.

Outputs under `out/` (each tree mirrors the input folders; a loose file or glob match lands at
the top):

- `composites/<rel>.png`: for people: photo | heat | mask side by side at a readable size, the
  label, score and threshold written on it, a colour bar (winclip.inspection.composite).
- `overlays/<rel>.png`: for machines: the photo at its own size blended with the anomaly map on the
  fixed colour scale of winclip.inspection.render (yellow exactly at the threshold); regions outlined.
- `masks/<rel>.png`: 0/255, 255 where map >= threshold. Every PNG carries a `winclip-output` text chunk.
- `maps/<rel>.tiff` with `save_maps`: the raw float32 map (Pillow mode "F"), MVTec layout.
- `results.jsonl`: a header record (provenance) then one record per image, flushed as each
  is done; `results.csv`: the same rows; `errors.csv`: path, reason of every failure.

The run is two halves that meet in `Outcome`: `inspect_items` turns inputs into outcomes (a
record and the rendered pictures as bytes, or an error), and `ResultWriter` puts outcomes on
disk. Anything that yields outcomes in order can feed the writer (a pool of remote workers,
say). `resume` reads results.jsonl back, keeps the finished images and runs the rest
(failures are retried; inputs are matched on their resolved paths, so `many/` and its absolute
path are the same input); without `overwrite` or `resume` an output folder holding results is
refused.

Every file the writer creates is listed in `out/.winclip-written` before it is written, and
`overwrite` removes exactly those (and the files named by an older results.jsonl), never
anything else a user put in the folder. Inputs are found by winclip.inspection.inputs. Photos over
`max_pixels` pixels (read from the header, before decoding), folders named like images, broken or
looping symbolic links, and linked folders that lead back above themselves (others are searched:
winclip.files.walk) get an error row like any unreadable photo. A row's `note` says why an
anomalous label has no region (winclip.inspection.decisions.region_note). Nothing is written
through a link: an `out` that is one, or one inside it where a file is written or removed, is
refused in one line (winclip.files.write_new, open_new).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from ..files import LinkError, check_no_links, open_new, write_new
from ..images import DEFAULT_MAX_PIXELS, ImageError, image_size
from ..progress import plural, progress_bar, say
from ..spreadsheet import safe_cell
from .composite import composite
from .inputs import InputImage, input_key
from .inputs import check_out_not_inside as check_out_not_inside  # re-exported: callers of the run's checks
from .inputs import discover as discover
from .inspector import Inspection, Inspector
from .render import mask_image, overlay, png_bytes

OUTPUT_TABLES = ("results.jsonl", "results.csv", "errors.csv")
OUTPUT_TREES = ("composites", "overlays", "masks", "maps")
MANIFEST = ".winclip-written"  # every file the writer made, one relative path a line
CSV_COLUMNS = (
    "path", "score", "threshold", "label", "confidence", "n_regions", "regions",
    "model_score", "zero_shot", "width", "height", "overlay", "mask", "map", "composite", "note", "precision",
)  # fmt: skip
RANDOM_WARNING = "RANDOM WEIGHTS: score and map are meaningless"
# header fields a resumed run must share (one absent from an older run's header is not compared)
RESUME_KEYS = ("profile_digest", "min_area", "save_maps", "precision")


class OutputExistsError(FileExistsError, ValueError):
    """The output folder already holds results and neither overwrite nor resume was asked for."""


# -- outcomes: one input's result, ready to write ------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the writer needs of one input: its record and pictures (`files`: relative path → bytes), or an error."""

    item: InputImage
    record: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


def render(item: InputImage, r: Inspection, save_maps: bool, warning: str = "", precision: str = "") -> Outcome:
    """The record of one inspected image and its composite, overlay, mask (and float map) as file bytes;
    `precision`: the path that scored it (runtime-precision)."""
    assert r.image is not None and r.map is not None and r.threshold is not None  # only decided images come here
    assert r.score is not None and r.label is not None
    paths = {
        "overlay": f"overlays/{item.rel}.png",
        "mask": f"masks/{item.rel}.png",
        "composite": f"composites/{item.rel}.png",
    }
    map_path = f"maps/{item.rel}.tiff" if save_maps else None
    picture = composite(
        r.image, r.map, score=r.score, threshold=r.threshold, label=r.label, review_threshold=r.review_threshold,
        regions=r.regions, title=str(item.path), note=r.note, warning=warning,
    )  # fmt: skip
    files = {
        paths["composite"]: png_bytes(picture, "composite"),
        paths["overlay"]: png_bytes(overlay(r.image, r.map, r.threshold, r.regions), "overlay"),
        paths["mask"]: png_bytes(mask_image(r.map, r.threshold), "mask"),
    }
    if map_path is not None:
        files[map_path] = _tiff(Image.fromarray(r.map.astype(np.float32)))
    record = {
        "type": "result",
        "path": str(item.path),
        "score": r.score,
        "threshold": r.threshold,
        "label": r.label,
        "confidence": r.confidence,
        "regions": [g.as_dict() for g in r.regions],
        "model_score": r.model_score,
        "zero_shot": r.zero_shot,
        "width": int(r.map.shape[1]),
        "height": int(r.map.shape[0]),
        "note": r.note,
        **paths,
        "map": map_path,
        "precision": precision,
    }
    return Outcome(item, record, files)


def size_problem(item: InputImage, max_pixels: int | None) -> str | None:
    """Why a file cannot be inspected before decoding it (not a regular file, over `max_pixels`), or None."""
    if item.problem is not None:
        return item.problem
    try:
        image_size(item.path, max_pixels)
    except ImageError as err:
        return err.reason
    return None


def inspect_items(
    inspector: Inspector,
    items: Sequence[InputImage],
    *,
    save_maps: bool = False,
    batch_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Iterator[Outcome]:
    """Inspect files batch by batch (each decoded once), yielding one outcome per input, in order.

    A file over `max_pixels` (from its header) or not a regular file is an error outcome and never decoded.
    """
    step = batch_size or inspector.model.batch_size
    warning = RANDOM_WARNING if inspector.model.info.checkpoint is None else ""
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        problems = [size_problem(item, max_pixels) for item in chunk]
        todo = [item for item, problem in zip(chunk, problems, strict=True) if problem is None]
        results = inspector.iter_inspect([str(item.path) for item in todo], batch_size=step)
        for item, problem in zip(chunk, problems, strict=True):
            if problem is not None:
                yield Outcome(item, error=problem)
                continue
            r = next(results)
            if r.error is not None:
                yield Outcome(item, error=r.error.reason)
            else:
                yield render(item, r, save_maps, warning, inspector.path)


# -- the writer ---------------------------------------------------------------------------


def header_record(inspector: Inspector, profile_path: str | None, save_maps: bool) -> dict:
    """Provenance: package version, backbone, weights, profile identity, decision settings, the working folder
    (relative input paths are taken from it on resume)."""
    p = inspector.profile
    return {
        "type": "header",
        "winclip_version": __version__,
        "cwd": os.getcwd(),
        "backbone": p.backbone,
        "pretrained": p.pretrained,
        "weights_id": p.weights_id,
        "profile": profile_path,
        "profile_digest": p.digest(),
        "object": p.object_name,
        "shots": p.shots,
        "roi": p.roi is not None,
        "threshold": p.threshold,
        "review_threshold": p.review_threshold,
        "confidence_scale": p.confidence_scale,
        "min_area": inspector.min_area,
        "save_maps": save_maps,
        "precision": inspector.path,
        "precision_reason": inspector.model.backbone.precision_reason,
    }


def csv_row(record: dict) -> list:
    """A results.csv row of a result record."""
    row = {
        **record,
        "n_regions": len(record["regions"]),
        "regions": json.dumps(record["regions"], separators=(",", ":")),
    }
    return ["" if row.get(c) is None else safe_cell(row[c]) for c in CSV_COLUMNS]  # older runs lack a few


def read_records(path: Path) -> tuple[dict | None, list[dict]]:
    """Header and result records of a results.jsonl; a truncated last line is ignored."""
    header, results = None, []
    with path.open() as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a hard kill
            if rec.get("type") == "header" and header is None:
                header = rec
            elif rec.get("type") == "result":
                results.append(rec)
    return header, results


@dataclass
class Summary:
    """Counts of a run: labels of finished images, failures, images skipped by resume."""

    labels: Counter = field(default_factory=Counter)
    failed: int = 0
    resumed: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        """One line for the end of a run."""
        counts = ", ".join(f"{self.labels[k]} {k}" for k in ("normal", "review", "anomalous"))
        done = sum(self.labels.values())
        rate = f", {done / self.seconds:.2f} images/s" if self.seconds > 0 and done else ""
        took = f"{self.seconds:.1f} s{rate}"
        return f"{plural(done, 'image')}: {counts}; {self.failed} failed; {self.resumed} resumed ({took})"


def check_output(out: Path, *, overwrite: bool, resume: bool) -> list[str]:
    """The winclip outputs already in `out`; OutputExistsError if there are some and neither flag is set."""
    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other")
    if out.is_symlink():
        raise LinkError(f"--out {out}: is a symbolic link; give the folder itself (winclip never writes through links)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    existing = [n for n in (*OUTPUT_TABLES, *OUTPUT_TREES, MANIFEST) if (out / n).exists()]
    if existing and not (overwrite or resume):
        raise OutputExistsError(
            f"{out}: already holds results ({', '.join(existing)}); "
            "pass --overwrite to replace them or --resume to continue"
        )
    return existing


def written_files(out: Path) -> list[str]:
    """Relative paths of the files an earlier run wrote: its manifest, else what its results.jsonl names."""
    names = list(OUTPUT_TABLES)
    if (out / MANIFEST).is_file():
        names += (out / MANIFEST).read_text().splitlines()
    elif (out / "results.jsonl").is_file():
        names += [r[k] for r in read_records(out / "results.jsonl")[1] for k in ("overlay", "mask", "map") if r.get(k)]
    return names


def remove_written(out: Path) -> None:
    """Delete the files an earlier run wrote (and folders left empty by that), nothing else."""
    root = out.resolve()
    folders: set[Path] = set()
    for name in (names := written_files(out)):
        check_no_links(out, name)  # a link there was not made by winclip: refused before anything is removed
    for name in names:
        if (out / name).is_file():  # never a folder
            (out / name).unlink()
            folders.update(p for p in (out / name).parents if root in p.resolve().parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out / MANIFEST).unlink(missing_ok=True)


class ResultWriter:
    """Writes outcomes under `out` as they come: pictures, a results.jsonl line, a results.csv row, errors.csv.

    Use as a context manager; `done` holds the records kept from an earlier run (resume), which must share the
    header's `resume_keys`; `errors`: (path, reason) rows kept in errors.csv (a watched folder's, never retried).
    """

    def __init__(
        self, out: str | Path, header: dict, *, overwrite: bool = False, resume: bool = False,
        resume_keys: Sequence[str] = RESUME_KEYS, errors: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        self.out = Path(out)
        check_output(self.out, overwrite=overwrite, resume=resume)
        if overwrite:
            remove_written(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        jsonl = self.out / "results.jsonl"
        self.done: list[dict] = []
        self._base = header["cwd"]
        if resume and jsonl.exists():
            old, self.done = read_records(jsonl)
            changed = [k for k in resume_keys if old and old.get(k, header[k]) != header[k]]
            if changed:
                raise ValueError(
                    f"{jsonl}: earlier results differ in {', '.join(changed)}; use --overwrite to start again"
                )
            self._base = (old or {}).get("cwd", self._base)
        self._kept_errors = list(errors)
        self._manifest = open_new(self.out, MANIFEST, "a")
        self._note(*OUTPUT_TABLES)
        lines = "".join(json.dumps(r) + "\n" for r in [header, *self.done])  # drops a cut-off line
        write_new(self.out, "results.jsonl", lines.encode(), replace=True)
        self.summary = Summary(labels=Counter(r["label"] for r in self.done), resumed=len(self.done))

    def _note(self, *names: str) -> None:
        """List files in the manifest before they are written."""
        self._manifest.write("".join(f"{name}\n" for name in names))
        self._manifest.flush()

    def todo(self, images: Iterable[InputImage]) -> list[InputImage]:
        """The inputs without a finished record (compared as resolved paths)."""
        finished = {input_key(r["path"], self._base) for r in self.done}
        return [item for item in images if input_key(item.path) not in finished]

    def __enter__(self) -> ResultWriter:
        self._jsonl = open_new(self.out, "results.jsonl", "a")
        self._csv_file = open_new(self.out, "results.csv", "w", newline="")
        self._err_file = open_new(self.out, "errors.csv", "w", newline="")
        self._table, self._errors = csv.writer(self._csv_file), csv.writer(self._err_file)
        self._table.writerow(CSV_COLUMNS)
        self._table.writerows(csv_row(r) for r in self.done)
        self._errors.writerow(("path", "reason"))
        self._errors.writerows((safe_cell(path), reason) for path, reason in self._kept_errors)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.summary.seconds = time.perf_counter() - self._started
        for f in (self._jsonl, self._csv_file, self._err_file, self._manifest):
            try:
                f.close()
            except OSError:
                pass  # a full disk: the error being raised says so

    def write(self, outcome: Outcome) -> None:
        """One outcome: an error line and row, or the pictures and the record (each flushed at once)."""
        if outcome.error is not None:
            say(f"winclip: {outcome.item.path}: {outcome.error}")
            self._errors.writerow((safe_cell(str(outcome.item.path)), outcome.error))
            self._err_file.flush()
            self.summary.failed += 1
            return
        assert outcome.record is not None  # no error: rendered
        self._note(*outcome.files)
        for rel, data in outcome.files.items():
            write_new(self.out, rel, data, replace=True)
        self._jsonl.write(json.dumps(outcome.record) + "\n")
        self._jsonl.flush()
        self._table.writerow(csv_row(outcome.record))
        self._csv_file.flush()
        self.summary.labels[outcome.record["label"]] += 1


def run_predict(
    inspector: Inspector,
    images: Sequence[InputImage],
    out: str | Path,
    *,
    profile_path: str | None = None,
    save_maps: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    batch_size: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> Summary:
    """Inspect `images` batch by batch, writing each image's files and rows as soon as it is done.

    Memory stays at one batch of images and maps. A failure is one stderr line and one
    errors.csv row; KeyboardInterrupt leaves every finished result on disk.
    """
    writer = ResultWriter(out, header_record(inspector, profile_path, save_maps), overwrite=overwrite, resume=resume)
    todo = writer.todo(images)
    with (
        writer,
        progress_bar(len(todo), "predict", enabled=progress) as bar,
    ):
        for outcome in inspect_items(
            inspector, todo, save_maps=save_maps, batch_size=batch_size, max_pixels=max_pixels
        ):
            writer.write(outcome)
            bar.update(1)
    return writer.summary
