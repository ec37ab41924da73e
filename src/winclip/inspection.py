"""The `winclip predict` workflow: find inputs, run them through a profile, write every result at once.

Outputs under `out/` (each tree mirrors the input folders; a loose file or glob match lands at
the top):

- `overlays/<rel>.png`: the photo at its own size blended with the anomaly map on a FIXED colour
  scale anchored at the threshold t (never per-image min-max): `v = 0.5·m/t` below t and
  `v = 0.5 + 0.5·(m − t)/(1 − t)` from t up, so v = 0.5 (yellow) exactly at the threshold,
  blues below, orange to red above; colour = `COLORMAP(v)`, blended with alpha 0.5; regions
  are outlined in white.
- `masks/<rel>.png`: 0/255, 255 where map >= threshold.
- `maps/<rel>.tiff` with `save_maps`: the raw float32 map (Pillow mode "F"), MVTec layout.
- `results.jsonl`: a header record (provenance) then one record per image, flushed as each
  is done; `results.csv`: the same rows; `errors.csv`: path, reason of every failure.

A record's `regions` are the profile's (see winclip.profile); labels normal / review /
anomalous; `confidence` is the logistic of (score − threshold)/scale, 0.5 at the threshold.
`resume` reads results.jsonl back, keeps the finished images and runs the rest (failures are
retried); without `overwrite` or `resume` an output folder holding results is refused.
"""

from __future__ import annotations

import csv
import glob
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from . import __version__
from .images import IMAGE_EXTENSIONS, ImageError, load_image
from .profile import Inspection, Inspector, Profile, Region

OUTPUT_TABLES = ("results.jsonl", "results.csv", "errors.csv")
OUTPUT_TREES = ("overlays", "masks", "maps")
CSV_COLUMNS = (
    "path", "score", "threshold", "label", "confidence", "n_regions", "regions",
    "model_score", "zero_shot", "width", "height", "overlay", "mask", "map",
)  # fmt: skip
# Colour scale of the overlays: (v, RGB) anchors, linearly interpolated; v = 0.5 at the threshold.
COLORMAP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (20, 30, 140)),
    (0.3, (30, 110, 230)),
    (0.45, (90, 200, 220)),
    (0.5, (255, 230, 0)),
    (0.75, (255, 120, 0)),
    (1.0, (200, 0, 0)),
)
OVERLAY_ALPHA = 0.5


class OutputExistsError(FileExistsError, ValueError):
    """The output folder already holds results and neither overwrite nor resume was asked for."""


@dataclass(frozen=True)
class InputImage:
    """One input file and where its outputs go: `rel` is its relative output path without suffix."""

    path: Path
    rel: PurePosixPath


@dataclass(frozen=True)
class Discovery:
    """Inputs found, in order, and the arguments that matched nothing."""

    images: tuple[InputImage, ...]
    unmatched: tuple[str, ...]


def discover(inputs: Sequence[str]) -> Discovery:
    """Expand files, folders (recursed, image extensions only, hidden entries skipped) and globs.

    Raises ValueError when two inputs would write the same output (e.g. `a.png` and `a.jpg`).
    """
    found: list[InputImage] = []
    unmatched: list[str] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
            found += [InputImage(p, PurePosixPath(p.relative_to(path).with_suffix("").as_posix())) for p in files]
        elif path.exists() or not glob.has_magic(arg):
            found.append(InputImage(path, PurePosixPath(path.stem)))  # a missing file becomes an error row
        else:
            matches = sorted(Path(m) for m in glob.glob(arg, recursive=True) if Path(m).is_file())
            if not matches:
                unmatched.append(arg)
            found += [InputImage(m, PurePosixPath(m.stem)) for m in matches]
    seen: dict[PurePosixPath, Path] = {}
    for item in found:
        other = seen.setdefault(item.rel, item.path)
        if other != item.path:
            raise ValueError(f"{other} and {item.path} would both write outputs named {item.rel}; rename one")
    unique = list({item.path: item for item in found}.values())
    return Discovery(tuple(unique), tuple(unmatched))


# -- pictures ---------------------------------------------------------------------------------


def scale_values(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """Map values → colour-scale position v in [0, 1]: 0.5·m/t below t, 0.5 + 0.5·(m−t)/(1−t) above."""
    m = score_map.astype(np.float64)
    below = 0.5 * m / threshold
    above = 0.5 + 0.5 * (m - threshold) / max(1.0 - threshold, 1e-12)
    return np.clip(np.where(m < threshold, below, above), 0.0, 1.0)


def colorize(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """`(H, W)` map → `(H, W, 3)` uint8 colours on the fixed threshold-anchored scale."""
    v = scale_values(score_map, threshold)
    xs = [a for a, _ in COLORMAP]
    rgb = [np.interp(v, xs, [c[ch] for _, c in COLORMAP]) for ch in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def overlay(image: Image.Image, score_map: np.ndarray, threshold: float, regions: Sequence[Region] = ()) -> Image.Image:
    """The photo blended with the coloured map (alpha OVERLAY_ALPHA), regions outlined in white."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1.0 - OVERLAY_ALPHA) * photo + OVERLAY_ALPHA * colorize(score_map, threshold)
    out = Image.fromarray(blended.round().astype(np.uint8))
    draw = ImageDraw.Draw(out)
    line = max(1, round(min(out.size) / 200))
    for r in regions:
        draw.rectangle((r.x, r.y, r.x + r.width - 1, r.y + r.height - 1), outline=(255, 255, 255), width=line)
    return out


def mask_image(score_map: np.ndarray, threshold: float) -> Image.Image:
    """Binary mask PNG: 255 where map >= threshold, else 0 (mode L)."""
    return Image.fromarray(np.where(score_map >= threshold, 255, 0).astype(np.uint8))


# -- records -------------------------------------------------------------------------------


def header_record(inspector: Inspector, profile_path: str | None, save_maps: bool) -> dict:
    """Provenance: package version, backbone, weights, profile identity, decision settings."""
    p = inspector.profile
    return {
        "type": "header",
        "winclip_version": __version__,
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


def result_record(item: InputImage, r: Inspection, threshold: float, files: dict[str, str | None]) -> dict:
    """One image's JSON record."""
    return {
        "type": "result",
        "path": str(item.path),
        "score": r.score,
        "threshold": threshold,
        "label": r.label,
        "confidence": r.confidence,
        "regions": [
            {"x": g.x, "y": g.y, "width": g.width, "height": g.height, "area": g.area, "peak": g.peak} for g in r.regions
        ],
        "model_score": r.model_score,
        "zero_shot": r.zero_shot,
        "width": int(r.map.shape[1]),
        "height": int(r.map.shape[0]),
        **files,
    }


def csv_row(record: dict) -> list:
    """A results.csv row of a result record."""
    row = {**record, "n_regions": len(record["regions"]), "regions": json.dumps(record["regions"], separators=(",", ":"))}
    return ["" if row[c] is None else row[c] for c in CSV_COLUMNS]


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


# -- the run ---------------------------------------------------------------------------------


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
    existing = [n for n in (*OUTPUT_TABLES, *OUTPUT_TREES) if (out / n).exists()]
    if existing and not (overwrite or resume):
        raise OutputExistsError(
            f"{out}: already holds results ({', '.join(existing)}); pass --overwrite to replace them or --resume to continue"
        )
    return existing


def prepare_output(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber earlier results unless asked; with overwrite, remove only winclip's outputs."""
    existing = check_output(out, overwrite=overwrite, resume=resume)
    if overwrite:
        for name in existing:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _batches(items: Sequence[InputImage], size: int) -> Iterator[Sequence[InputImage]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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
    progress: bool = True,
) -> Summary:
    """Inspect `images` batch by batch, writing each image's files and rows as soon as it is done.

    Memory stays at one batch of images and maps. A failure is one stderr line and one
    errors.csv row; KeyboardInterrupt leaves every finished result on disk.
    """
    out = Path(out)
    prepare_output(out, overwrite=overwrite, resume=resume)
    header = header_record(inspector, profile_path, save_maps)
    jsonl_path = out / "results.jsonl"
    done: list[dict] = []
    if resume and jsonl_path.exists():
        old_header, done = read_records(jsonl_path)
        changed = [k for k in ("profile_digest", "min_area", "save_maps") if old_header and old_header[k] != header[k]]
        if changed:
            raise ValueError(f"{jsonl_path}: earlier results differ in {', '.join(changed)}; use --overwrite to start again")
        jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in ([header] + done)))  # drops a cut-off line
    else:
        jsonl_path.write_text(json.dumps(header) + "\n")
    finished = {r["path"] for r in done}
    todo = [item for item in images if str(item.path) not in finished]
    summary = Summary(labels=Counter(r["label"] for r in done), resumed=len(done))
    threshold = inspector.profile.threshold
    bs = batch_size or inspector.model.batch_size
    start = time.perf_counter()
    with (
        jsonl_path.open("a") as jsonl,
        (out / "results.csv").open("w", newline="") as csv_file,
        (out / "errors.csv").open("w", newline="") as err_file,
        tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, file=sys.stderr) as bar,
    ):
        table, errors = csv.writer(csv_file), csv.writer(err_file)
        table.writerow(CSV_COLUMNS)
        table.writerows(csv_row(r) for r in done)
        errors.writerow(("path", "reason"))

        def fail(item: InputImage, reason: str) -> None:
            tqdm.write(f"winclip: {item.path}: {reason}", file=sys.stderr)
            errors.writerow((str(item.path), reason))
            err_file.flush()
            summary.failed += 1

        for batch in _batches(todo, bs):
            loaded: list[tuple[InputImage, Image.Image]] = []
            for item in batch:
                try:
                    loaded.append((item, load_image(item.path, str(item.path), inspector.model.min_size)))
                except ImageError as err:
                    fail(item, err.reason)
            results = inspector.inspect([img for _, img in loaded], batch_size=bs)
            for (item, img), r in zip(loaded, results, strict=True):
                if r.error is not None:
                    fail(item, r.error.reason)
                    continue
                record = result_record(item, r, threshold, write_pictures(out, item, img, r, threshold, save_maps))
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
                table.writerow(csv_row(record))
                csv_file.flush()
                summary.labels[r.label] += 1
            bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    return summary


def write_pictures(
    out: Path, item: InputImage, image: Image.Image, r: Inspection, threshold: float, save_maps: bool
) -> dict[str, str | None]:
    """Overlay, mask (and float map) of one image; returns their paths relative to `out`."""
    files = {
        "overlay": PurePosixPath("overlays", f"{item.rel}.png"),
        "mask": PurePosixPath("masks", f"{item.rel}.png"),
        "map": PurePosixPath("maps", f"{item.rel}.tiff") if save_maps else None,
    }
    for rel in files.values():
        if rel is not None:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
    overlay(image, r.map, threshold, r.regions).save(out / files["overlay"])
    mask_image(r.map, threshold).save(out / files["mask"])
    if save_maps:
        Image.fromarray(r.map.astype(np.float32)).save(out / files["map"])
    return {k: None if v is None else str(v) for k, v in files.items()}


def profile_label(profile: Profile, profile_path: str | None) -> str:
    """How the banner names the decision rule."""
    if profile_path is None:
        return f"no profile: object {profile.object_name!r}, {profile.shots} reference(s), threshold {profile.threshold:g}"
    cal = "calibrated" if profile.calibration is not None else "NOT calibrated"
    return f"profile {profile_path} ({cal}): object {profile.object_name!r}, {profile.shots} reference(s), threshold {profile.threshold:.6g}"
