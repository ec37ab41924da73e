"""What report.html shows, from a finished run alone: rows, exact curves and the gallery (docs/method.md §5).

Image-level curves come from scores.npz. Pixel curves and the gallery need each image's map:
they are scored again as `winclip eval` scored them (`protocol.image_map`, `protocol.sample_mask`,
one `PixelMetricAccumulator` per row) from the feature cache and the prototypes the run saved
(`winclip.paper.run_record`), by a weightless `Scorer`: nothing is encoded, no model is built. Masks and
photos come from the dataset on disk (run.json names it); without it, only image-level parts
are made, and one note says why. Per class, the zero-shot row and, for each K, the row of the
first seed are shown; only the gallery's maps are kept.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ...images import file_sha256, load_image
from ...inspection.render import overlay
from ...method.few_shot import ReferenceMemory
from ...method.scorer import Scorer
from ...metrics import PixelMetricAccumulator, f1_max_threshold
from ...metrics.curves import PLOT_CELLS, Curve
from ...metrics.image import pr_curve, roc_curve
from ...metrics.pixel import PixelCurves
from ..data import DatasetError, Sample, load_dataset, load_mask, resize_mask
from ..feature_cache import FeatureCache, ViewSet
from ..protocol import image_map, sample_mask
from ..results import ZERO_SHOT_SEED, RowResult
from ..run_record import RowKey, RunRecord, load_prototypes, load_run

GALLERY_SIZE = 3  # worst false positives and worst false negatives shown per setting
THUMBNAIL_SIDE = 224  # longest side of the gallery's pictures, in pixels
OUTLINE_RGB = (255, 255, 255)  # the ground-truth mask's outline on the overlay
MATCH_TOLERANCE = 1e-6  # re-scored values further than this from the run's are named in a note


@dataclass(frozen=True)
class GalleryItem:
    """One test image of the gallery: thumbnail and overlay (same size, ground truth outlined)."""

    path: str  # relative to the dataset root
    label: int
    score: float
    photo: Image.Image
    overlay: Image.Image


@dataclass(frozen=True)
class Setting:
    """One shown row: its exact curves, its threshold and gallery."""

    row: RowResult
    threshold: float  # the row's image F1-max threshold (metrics.f1_max_threshold)
    roc: Curve
    pr: Curve
    pixel: PixelCurves | None  # None without masks, or when not scored again
    rescored: bool  # its maps were scored again from the cache (False without the dataset, cache or prototypes)
    false_positives: tuple[GalleryItem, ...]  # the highest-scored good images, highest first
    false_negatives: tuple[GalleryItem, ...]  # the lowest-scored defective images, lowest first


@dataclass(frozen=True)
class ClassSection:
    """One class: its shown settings, zero-shot first."""

    name: str
    settings: tuple[Setting, ...]


@dataclass(frozen=True)
class ReportData:
    """Everything report.html shows."""

    run_dir: Path
    dataset: str
    rows: tuple[RowResult, ...]  # every row of the run (the tables' mean ± std over seeds)
    sections: tuple[ClassSection, ...]  # one per class, in the run's order
    record: RunRecord | None  # None for a run without run.json
    notes: tuple[str, ...]  # one line per part left out, or re-scored differently from the run


def setting_name(row: RowResult) -> str:
    """``0-shot`` or ``K-shot seed S``."""
    return f"{row.shots}-shot" + ("" if row.seed is None else f" seed {row.seed}")


def load_rows(run_dir: Path, references: Mapping[RowKey, tuple[str, ...]]) -> tuple[str, list[RowResult]]:
    """The dataset name and the run's rows, from results.csv (metrics) and scores.npz (per-image scores)."""
    for name in ("results.csv", "scores.npz"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name}: missing; is {run_dir} a finished winclip eval run?")
    metrics: dict[RowKey, dict[str, float]] = {}
    dataset = ""
    with (run_dir / "results.csv").open(newline="") as handle:
        for r in csv.DictReader(handle):
            key = (r["class"], int(r["shots"]), None if r["seed"] == "" else int(r["seed"]))
            metrics.setdefault(key, {})[r["metric"]] = float(r["value"])
            dataset = r["dataset"]
    with np.load(run_dir / "scores.npz") as npz:
        cols = {k: npz[k] for k in npz.files}
    groups: dict[RowKey, list[int]] = {}
    for i, (cls, shots, seed) in enumerate(zip(cols["class"], cols["shots"], cols["seed"], strict=True)):
        groups.setdefault((str(cls), int(shots), None if seed == ZERO_SHOT_SEED else int(seed)), []).append(i)
    rows = [
        RowResult(
            key[0],
            key[1],
            key[2],
            metrics.get(key, {}),
            tuple(str(p) for p in cols["path"][idx]),
            tuple(int(v) for v in cols["label"][idx]),
            tuple(str(d) for d in cols["defect"][idx]),
            tuple(float(v) for v in cols["score"][idx]),
            tuple(float(v) for v in cols["zero_shot"][idx]),
            references.get(key, ()),
        )
        for key, idx in groups.items()
    ]
    return dataset, rows


def shown_rows(rows: Sequence[RowResult], cls: str) -> list[RowResult]:
    """A class's zero-shot row and, per K, the row of its first seed, by K."""
    first: dict[int, RowResult] = {}
    for row in rows:
        if row.cls == cls and (row.shots not in first or (row.seed or 0) < (first[row.shots].seed or 0)):
            first[row.shots] = row
    return [first[k] for k in sorted(first)]


class _Source:
    """The dataset's samples, the feature cache and the prototypes of a run; None parts are noted as missing."""

    def __init__(self, run_dir: Path, record: RunRecord, device: str, notes: list[str]) -> None:
        self.record = record
        self.scorer = Scorer(record.options, record.grid, device)
        self.samples: dict[Path, Sample] | None = None
        self.cache: FeatureCache | None = None
        self.prototypes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        try:
            found = load_dataset(record.dataset, record.root, record.classes)
            self.samples = {s.path: s for data in found for s in data.test}
        except DatasetError as err:
            more = f" and {len(err.problems) - 1} more problems" if len(err.problems) > 1 else ""
            what = "not found (moved?)" if not record.root.exists() else f"changed ({err.problems[0]}{more})"
            notes.append(
                f"dataset {what} at {record.root}: image-level parts only; "
                "the pixel curves and the gallery need its images and masks"
            )
            return
        try:
            self.cache = FeatureCache.open(record.feature_cache)
            self.prototypes = load_prototypes(run_dir, record)
        except (FileNotFoundError, ValueError) as err:
            self.cache = None
            notes.append(f"{err}: image-level parts only; the pixel curves and the gallery need the run's features")

    def test_views(self, row: RowResult, notes: list[str]) -> tuple[list[Sample], ViewSet] | None:
        """The row's test samples in the run's order and their cached features, or None with a note."""
        if self.samples is None or self.cache is None:
            return None
        paths = [self.record.paths_root / p for p in row.paths]
        samples = [self.samples.get(p) for p in paths]
        shas = self._shas([p for p, s in zip(paths, samples, strict=True) if s is not None])
        lost = [p for p, s in zip(paths, samples, strict=True) if s is None or p not in shas]
        if lost:
            notes.append(
                f"{row.cls}: {len(lost)} test images of the run are gone from the dataset or changed since "
                f"(e.g. {lost[0]}): its pixel curves and gallery are left out"
            )
            return None
        present = [s for s in samples if s is not None]  # all of them: none was lost
        return present, ViewSet.load(self.cache, [shas[p] for p in paths])

    def references(self, row: RowResult, notes: list[str]) -> ViewSet | None:
        """The row's cached reference features (None for zero-shot); LookupError, after a note, when lost."""
        if not row.shots:
            return None
        paths = [self.record.paths_root / p for p in row.references]
        shas = self._shas(paths)
        if len(shas) != len(paths) or not row.references:
            notes.append(f"{row.cls} {setting_name(row)}: its references are gone or changed since the run")
            raise LookupError(row.cls)
        assert self.cache is not None  # test_views found it first
        return ViewSet.load(self.cache, [shas[p] for p in paths])

    def _shas(self, paths: Sequence[Path]) -> dict[Path, str]:
        """sha256 of each file that exists and whose features are in the cache."""
        shas = {p: file_sha256(p) for p in paths if p.is_file()}
        assert self.cache is not None  # test_views checked it
        return {p: sha for p, sha in shas.items() if self.cache.has(sha)}


@dataclass(frozen=True)
class _Rescored:
    scores: np.ndarray  # (N,) image scores
    pixel: PixelCurves | None
    maps: dict[int, np.ndarray]  # test index → (H', W') map at the evaluation resolution, for the gallery


def _rescore(
    source: _Source,
    row: RowResult,
    views: tuple[list[Sample], ViewSet],
    refs: ViewSet | None,
    picks: set[int],
    cells: int | None,
) -> _Rescored:
    """One row scored as `evaluate.evaluate_run` scores it, keeping the maps of ``picks`` only."""

    samples, test = views
    scorer, options, resolution = source.scorer, source.record.options, source.record.resolution
    memory = None
    if refs is not None:
        windows = {k: refs.features.windows[k] for k in options.scales}
        memory = ReferenceMemory.from_features(refs.features.patches, windows).to(scorer.device)
    grid = scorer.score(test.features, source.prototypes[row.cls], memory)
    with_masks = all(s.mask is not None for s in samples if s.label == 1)
    acc = PixelMetricAccumulator() if with_masks else None
    scores, maps = [], {}
    for i, sample in enumerate(samples):
        sel = (test.owner == i).nonzero()[:, 0]
        scores.append(scorer.reduce_views(grid.scores[sel]))
        if acc is None and i not in picks:
            continue
        # a Scorer has what image_map reads of a model: options and full_map
        amap = image_map(scorer, grid.maps[sel], test.sizes[i], resolution).numpy()
        if acc is not None:
            acc.update(amap[None], sample_mask(sample, test.sizes[i], resolution)[None])
        if i in picks:
            maps[i] = amap
    return _Rescored(np.array(scores), None if acc is None else acc.compute_curves(cells), maps)


def _gallery_item(sample: Sample, path: str, label: int, score: float, amap: np.ndarray, t: float) -> GalleryItem:
    """Thumbnail, and the overlay on the fixed colour scale anchored at ``t`` with the ground truth outlined."""
    photo = load_image(sample.path, str(sample.path))
    mask = load_mask(sample.masks, (photo.height, photo.width)) if sample.masks else None
    photo.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    size = (photo.width, photo.height)
    small = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    pixels = np.array(overlay(photo, small, t))
    if mask is not None:
        inside = resize_mask(mask, (photo.height, photo.width))
        pixels[ndimage.binary_dilation(inside) & ~ndimage.binary_erosion(inside)] = OUTLINE_RGB
    return GalleryItem(path, label, score, photo, Image.fromarray(pixels))


def _picks(row: RowResult, n: int) -> tuple[list[int], list[int]]:
    """Indices of the n highest-scored good images and the n lowest-scored defective ones."""
    order = np.argsort(np.array(row.scores), kind="stable")
    labels = np.array(row.labels)
    return [int(i) for i in order[::-1] if labels[i] == 0][:n], [int(i) for i in order if labels[i] == 1][:n]


def _setting(
    source: _Source | None,
    row: RowResult,
    views: tuple[list[Sample], ViewSet] | None,
    *,
    gallery: int,
    cells: int | None,
    notes: list[str],
) -> Setting:
    """A shown row: image curves from its scores; pixel curves and gallery re-scored when ``views`` are there."""
    scores, labels = np.array(row.scores), np.array(row.labels)
    threshold = f1_max_threshold(scores, labels)[0]
    curves = (threshold, roc_curve(scores, labels), pr_curve(scores, labels))
    if source is None or views is None:
        return Setting(row, *curves, None, False, (), ())
    good, bad = _picks(row, gallery)
    try:
        refs = source.references(row, notes)
    except LookupError:
        return Setting(row, *curves, None, False, (), ())
    done = _rescore(source, row, views, refs, set(good + bad), cells)
    _check(row, done, notes)
    samples = views[0]
    items = {
        i: _gallery_item(samples[i], row.paths[i], row.labels[i], row.scores[i], done.maps[i], threshold)
        for i in good + bad
    }
    return Setting(row, *curves, done.pixel, True, tuple(items[i] for i in good), tuple(items[i] for i in bad))


def _check(row: RowResult, done: _Rescored, notes: list[str]) -> None:
    """A note when the re-scored row does not reproduce the run's scores or pixel metrics."""
    gaps = [float(np.max(np.abs(done.scores - np.array(row.scores))))]
    if done.pixel is not None:
        gaps += [abs(v - row.metrics[m]) for m, v in done.pixel.metrics.items() if m in row.metrics]
    if max(gaps) > MATCH_TOLERANCE:
        notes.append(
            f"{row.cls} {setting_name(row)}: re-scored from the cache, it differs from the run by up to "
            f"{max(gaps):.2g} (another device, or files changed since); its pixel curves and gallery are re-scored"
        )


def _run_device(record: RunRecord) -> str:
    """The device the run scored on, when this machine has it; else the CPU."""
    if torch.device(record.device).type == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return record.device


def collect(
    run_dir: str | Path, *, device: str | None = None, gallery: int = GALLERY_SIZE, cells: int | None = PLOT_CELLS
) -> ReportData:
    """Everything report.html shows, from ``run_dir`` and the dataset and feature cache its run.json names.

    ``device`` scores the maps again; None = the run's own device when this machine has it, else the CPU.
    """
    run_dir = Path(run_dir)
    notes: list[str] = []
    try:
        record = load_run(run_dir)
    except (FileNotFoundError, ValueError) as err:
        record = None
        notes.append(f"{err}: image-level parts only")
    dataset, rows = load_rows(run_dir, record.references if record else {})
    source = _Source(run_dir, record, device or _run_device(record), notes) if record else None
    sections = []
    for cls in dict.fromkeys(r.cls for r in rows):
        shown = shown_rows(rows, cls)
        views = source.test_views(shown[0], notes) if source else None
        settings = [_setting(source, r, views, gallery=gallery, cells=cells, notes=notes) for r in shown]
        sections.append(ClassSection(cls, tuple(settings)))
    dataset = dataset or (record.dataset if record else "")
    return ReportData(run_dir, dataset, tuple(rows), tuple(sections), record, tuple(notes))
