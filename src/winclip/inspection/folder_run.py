"""The `winclip predict` workflow: find inputs, run them through a profile, write every result at once.

Outputs under `out/` (each tree mirrors the input folders; a loose file or glob match lands at
the top):

- `overlays/<rel>.png`: the photo at its own size blended with the anomaly map on the fixed
  colour scale of winclip.inspection.render (yellow exactly at the threshold); regions outlined in white.
- `masks/<rel>.png`: 0/255, 255 where map >= threshold.
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
anything else a user put in the folder. An output folder inside an input folder is refused (a
resumed run would read its own overlays as photos). Photos over `max_pixels` pixels (read from
the header, before decoding), folders named like images, broken or looping symbolic links, and
linked folders that lead back above themselves (others are searched: winclip.files.walk) get
an error row. Nothing is written through a link: an `out` that is one, or one inside it where
a file is written or removed, is refused in one line (winclip.files.write_new, open_new).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .. import __version__
from ..files import LinkError, check_no_links, open_new, walk, write_new
from ..images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageError, image_size
from ..spreadsheet import safe_cell
from .inspector import Inspection, Inspector
from .render import mask_image, overlay

OUTPUT_TABLES = ("results.jsonl", "results.csv", "errors.csv")
OUTPUT_TREES = ("overlays", "masks", "maps")
MANIFEST = ".winclip-written"  # every file the writer made, one relative path a line
CSV_COLUMNS = (
    "path", "score", "threshold", "label", "confidence", "n_regions", "regions",
    "model_score", "zero_shot", "width", "height", "overlay", "mask", "map",
)  # fmt: skip
RESUME_KEYS = ("profile_digest", "min_area", "save_maps")  # header fields a resumed run must share


class OutputExistsError(FileExistsError, ValueError):
    """The output folder already holds results and neither overwrite nor resume was asked for."""


@dataclass(frozen=True)
class InputImage:
    """One input file and where its outputs go: `rel` is its relative output path without suffix."""

    path: Path
    rel: PurePosixPath
    problem: str | None = None  # why it cannot be inspected, found while searching (a link loop)


@dataclass(frozen=True)
class Discovery:
    """Inputs found, in order, and the arguments that matched nothing."""

    images: tuple[InputImage, ...]
    unmatched: tuple[str, ...]


def _searched(path: Path, top: Path) -> bool:
    """An entry a folder search yields: an image name (file or not: a folder or a broken link gets an error
    row), not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in path.relative_to(top).parts)


def discover(inputs: Sequence[str]) -> Discovery:
    """Expand files, folders (recursed, image names only, hidden entries skipped) and globs.

    Raises ValueError when two inputs would write the same output (e.g. `a.png` and `a.jpg`).
    """
    found: list[InputImage] = []
    unmatched: list[str] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            for p, why in sorted((p, why) for p, why in walk(path) if why is not None or _searched(p, path)):
                found.append(InputImage(p, PurePosixPath(p.relative_to(path).with_suffix("").as_posix()), why))
        elif path.exists() or path.is_symlink() or not glob.has_magic(arg):
            found.append(InputImage(path, PurePosixPath(path.stem)))  # a missing file becomes an error row
        else:
            matches = sorted(
                Path(m) for m in glob.glob(arg, recursive=True)
                if Path(m).is_file() or Path(m).suffix.lower() in IMAGE_EXTENSIONS
            )  # fmt: skip
            if not matches:
                unmatched.append(arg)
            found += [InputImage(m, PurePosixPath(m.stem)) for m in matches]
    unique = list({_key(item.path): item for item in found}.values())
    seen: dict[PurePosixPath, Path] = {}
    for item in unique:
        other = seen.setdefault(item.rel, item.path)
        if other != item.path:
            raise ValueError(f"{other} and {item.path} would both write outputs named {item.rel}; rename one")
    return Discovery(tuple(unique), tuple(unmatched))


def _key(path: Path | str, base: str | None = None) -> str:
    """The identity of an input: its resolved path (relative paths taken from `base`, else the current folder)."""
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return os.path.realpath(path)  # Path.resolve raises on a symbolic link loop


def check_out_not_inside(out: Path, inputs: Sequence[str]) -> None:
    """ValueError when `out` is an input folder or lies inside one (or inside the folder a `**` glob searches)."""
    target = Path(out).resolve()
    for arg in inputs:
        folder = Path(arg) if Path(arg).is_dir() else None
        if folder is None and glob.has_magic(arg) and "**" in arg:
            folder = Path(arg[: arg.index("**")] or ".")
        if folder is not None and (target == folder.resolve() or folder.resolve() in target.parents):
            raise ValueError(
                f"--out {out} is inside the input folder {arg}: its overlays would be read as photos; "
                "choose an output folder outside the inputs"
            )


# -- outcomes: one input's result, ready to write ------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the writer needs of one input: its record and pictures (`files`: relative path → bytes), or an error."""

    item: InputImage
    record: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def render(item: InputImage, r: Inspection, save_maps: bool) -> Outcome:
    """The record of one inspected image and its overlay, mask (and float map) as file bytes."""
    paths = {
        "overlay": f"overlays/{item.rel}.png",
        "mask": f"masks/{item.rel}.png",
        "map": f"maps/{item.rel}.tiff" if save_maps else None,
    }
    files = {
        paths["overlay"]: _png(overlay(r.image, r.map, r.threshold, r.regions)),
        paths["mask"]: _png(mask_image(r.map, r.threshold)),
    }
    if save_maps:
        files[paths["map"]] = _png(Image.fromarray(r.map.astype(np.float32)), "TIFF")
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
        **paths,
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
            yield Outcome(item, error=r.error.reason) if r.error is not None else render(item, r, save_maps)


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
    }


def csv_row(record: dict) -> list:
    """A results.csv row of a result record."""
    row = {
        **record,
        "n_regions": len(record["regions"]),
        "regions": json.dumps(record["regions"], separators=(",", ":")),
    }
    return ["" if row[c] is None else safe_cell(row[c]) for c in CSV_COLUMNS]


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
        return f"{done} images: {counts}; {self.failed} failed; {self.resumed} resumed ({self.seconds:.1f} s{rate})"


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
    folders = set()
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

    Use as a context manager; `done` holds the records kept from an earlier run (resume).
    """

    def __init__(self, out: str | Path, header: dict, *, overwrite: bool = False, resume: bool = False) -> None:
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
            changed = [k for k in RESUME_KEYS if old and old[k] != header[k]]
            if changed:
                raise ValueError(
                    f"{jsonl}: earlier results differ in {', '.join(changed)}; use --overwrite to start again"
                )
            self._base = (old or {}).get("cwd", self._base)
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
        finished = {_key(r["path"], self._base) for r in self.done}
        return [item for item in images if _key(item.path) not in finished]

    def __enter__(self) -> ResultWriter:
        self._jsonl = open_new(self.out, "results.jsonl", "a")
        self._csv_file = open_new(self.out, "results.csv", "w", newline="")
        self._err_file = open_new(self.out, "errors.csv", "w", newline="")
        self._table, self._errors = csv.writer(self._csv_file), csv.writer(self._err_file)
        self._table.writerow(CSV_COLUMNS)
        self._table.writerows(csv_row(r) for r in self.done)
        self._errors.writerow(("path", "reason"))
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
            tqdm.write(f"winclip: {outcome.item.path}: {outcome.error}", file=sys.stderr)
            self._errors.writerow((safe_cell(str(outcome.item.path)), outcome.error))
            self._err_file.flush()
            self.summary.failed += 1
            return
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
        tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, file=sys.stderr) as bar,
    ):
        for outcome in inspect_items(
            inspector, todo, save_maps=save_maps, batch_size=batch_size, max_pixels=max_pixels
        ):
            writer.write(outcome)
            bar.update(1)
    return writer.summary
