"""Evaluation runs (docs/method.md §5): every class × shots × seed over a content-keyed feature cache, resumable.

Each test and reference image is encoded once per run into the feature cache
(winclip.paper.feature_cache). Scoring options (prompts, aggregation,
temperature, image scale) are applied to cached features, so their ablations
encode nothing. Each finished class × shots × seed row is saved at once under
``<out>/rows/`` keyed by everything that determines it, so an interrupted run
resumes where it stopped and a changed image recomputes only what it touches.

Pixel metrics use one exact ``PixelMetricAccumulator`` per row (about 8 bytes
per evaluated pixel: at 240×240 that is 0.46 MB per image; at the original
resolution of VisA, about 1.5k×1k, some 12 MB per image, so ~2.4 GB for a
200-image class); maps are never all held at once.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write, digest, write_file
from ..images import file_sha256
from ..method.prompts import OBJECT_NAME_MAPS, TASK_STATES
from ..metrics import PixelMetricAccumulator, image_metrics
from ..model import WinCLIP
from ..options import DEFAULT_EVAL_RESOLUTION
from ..progress import Bar, progress_bar
from .data import Sample
from .feature_cache import (
    CACHE_FORMAT,
    FeatureCache,
    ViewSet,
    check_encoding_model,
    encode_files,
    feature_settings,
)
from .protocol import EvalPlan, Run, image_map, sample_mask, scoring_settings
from .report.page import write_report
from .results import RowResult, summary_markdown, write_results_csv, write_scores
from .run_record import save_run


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation produced."""

    rows: tuple[RowResult, ...]
    out: Path
    encoded: int  # images encoded in this run (0 when every feature came from the cache)
    reused_rows: int  # rows taken from an earlier, interrupted or identical run
    encode_seconds: float  # wall time spent decoding and encoding images
    score_seconds: float  # wall time spent scoring rows and computing their metrics
    errors: tuple[str, ...]  # one line per unreadable image or skipped row


def _set_object(model: WinCLIP, name: str, *, object_names: str, task_states: bool) -> WinCLIP:
    """The class's text prototypes under the run's name map and (Table 7) its task-specific states."""
    extra = TASK_STATES.get(name, ()) if task_states else ()
    return model.set_object(name, anomalous_states=extra, object_names=dict(OBJECT_NAME_MAPS[object_names]))


def evaluate_run(
    model: WinCLIP,
    run: Run,
    test: ViewSet,
    samples: Sequence[Sample],
    references: ViewSet | None,
    resolution: int | None,
    masks: dict[Path, np.ndarray] | None,
    root: Path,
    object_names: str = "clean",
    task_states: bool = False,
) -> RowResult:
    """Score one class × shots × seed from cached features and compute its six metrics.

    `object_names`: the class-name map (prompts.OBJECT_NAME_MAPS); `task_states`: add the
    class's task-specific anomalous states (prompts.TASK_STATES, Table 7).
    """
    _set_object(model, run.data.name, object_names=object_names, task_states=task_states)
    if references is None:
        model.fit(None)
    else:
        model.fit_features(references.features)
    grid = model.score(test.features)
    scores, zero = [], []
    with_masks = all(s.mask is not None for s in samples if s.label == 1)
    acc = PixelMetricAccumulator() if with_masks else None
    for i, sample in enumerate(samples):
        sel = (test.owner == i).nonzero()[:, 0]
        scores.append(model.reduce_views(grid.scores[sel]))
        zero.append(model.reduce_views(grid.zero_shot[sel]))
        if acc is not None:
            amap = image_map(model, grid.maps[sel], test.sizes[i], resolution)
            if masks is not None and sample.path in masks:
                mask = masks[sample.path]
            else:
                mask = sample_mask(sample, test.sizes[i], resolution)
                if masks is not None:
                    masks[sample.path] = mask
            acc.update(amap.numpy()[None], mask[None])
    labels = [s.label for s in samples]
    metrics = image_metrics(np.array(scores), np.array(labels))
    if acc is not None:
        metrics.update(acc.compute())
    return RowResult(
        run.data.name,
        run.shots,
        run.seed,
        metrics,
        tuple(_relative(s.path, root) for s in samples),
        tuple(labels),
        tuple(s.defect for s in samples),
        tuple(scores),
        tuple(zero),
        tuple(_relative(p, root) for p in run.references),
    )


def _relative(path: Path, root: Path) -> str:
    """`path` relative to the dataset root (the CSV's folder when the root is a manifest file)."""
    root = root.parent if root.is_file() else root
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _mask_key(sample: Sample, hashes: dict[Path, str]) -> str | list[str] | None:
    """The masks' part of a row key: one sha256 (as before several masks existed), their list, or None."""
    if len(sample.masks) > 1:
        return [hashes[m] for m in sample.masks]
    return hashes[sample.mask] if sample.mask else None


class _ClassState:
    """Hashes, row keys and lazily loaded features of one class."""

    def __init__(self, runs: list[Run], hashes: dict[Path, str], rows_dir: Path, base: dict, root: Path) -> None:
        self.runs = runs
        self.data = runs[0].data
        self.hashes = hashes
        test = [[_relative(s.path, root), hashes[s.path], s.label, _mask_key(s, hashes)] for s in self.data.test]
        self.keys = [
            digest(
                {
                    **base,
                    "class": self.data.name,
                    "shots": r.shots,
                    "seed": r.seed,
                    "test": test,
                    "references": [hashes[p] for p in r.references],
                }
            )
            for r in runs
        ]
        self.row_paths = [rows_dir / f"{key[:32]}.json" for key in self.keys]

    def pending(self) -> list[int]:
        return [i for i, p in enumerate(self.row_paths) if not p.is_file()]

    def finished(self) -> list[RowResult]:
        """The rows an earlier run already saved."""
        return [RowResult.from_json(json.loads(p.read_text())) for p in self.row_paths if p.is_file()]

    def files(self, pending: list[int]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
        """The (path, sha) of every image the pending runs need: the test images, and their references
        (which never need multi-crop embeddings)."""
        test = [s.path for s in self.data.test]
        tested = set(test)
        refs = [p for i in pending for p in self.runs[i].references if p not in tested]
        return [(p, self.hashes[p]) for p in test], [(p, self.hashes[p]) for p in dict.fromkeys(refs)]

    def missing(self, cache: FeatureCache, crops: bool) -> set[str]:
        """The sha of every file the pending runs need that the cache lacks (crops: for test images)."""
        test, refs = self.files(self.pending())
        return {sha for _, sha in test if not cache.complete(sha, crops)} | {
            sha for _, sha in refs if not cache.has(sha)
        }

    def encode(
        self, encoder: Callable[..., tuple[int, dict]], model: WinCLIP, cache: FeatureCache, crops: bool, bar: Bar
    ) -> tuple[int, dict]:
        """Encode what the pending runs need and the cache lacks with `encoder` (encode_files' contract):
        (images encoded, decode errors by sha). Test images get their multi-crop embeddings when `crops`
        (the encoder reads that from the model it is given)."""
        test, refs = self.files(self.pending())
        with_crops = model if model.options.multi_crop == crops else model.with_options(multi_crop=crops)
        without = model if not model.options.multi_crop else model.with_options(multi_crop=False)
        n, bad = encoder(with_crops, cache, test, bar)
        m, bad_refs = encoder(without, cache, refs, bar)
        return n + m, bad | bad_refs


def _class_states(plan: EvalPlan, rows_dir: Path, base: dict, progress: bool) -> list[_ClassState]:
    """Per class: the sha256 of every file it uses and the keys of its rows."""
    by_class: dict[str, list[Run]] = {}
    for run in plan.runs:
        by_class.setdefault(run.data.name, []).append(run)
    states = []
    with progress_bar(len(by_class), "hash", "class", enabled=progress) as bar:
        for runs in by_class.values():
            states.append(_class_state(runs, rows_dir, base, plan.root))
            bar.update(1)
    return states


def _class_state(runs: list[Run], rows_dir: Path, base: dict, root: Path) -> _ClassState:
    """One class's file hashes and row keys."""
    data = runs[0].data
    paths = [s.path for s in data.test] + [m for s in data.test for m in s.masks]
    paths += [p for r in runs for p in r.references]
    hashes = {p: file_sha256(p) for p in dict.fromkeys(paths)}
    return _ClassState(runs, hashes, rows_dir, base, root)


def evaluate(
    model: WinCLIP,
    plan: EvalPlan,
    out: str | Path,
    *,
    cache: str | Path | None = None,
    resolution: int | None = DEFAULT_EVAL_RESOLUTION,
    progress: bool = True,
    settings: Sequence[tuple[str, str]] = (),
    encoder: Callable[..., tuple[int, dict]] = encode_files,
    encoding_model: WinCLIP | None = None,
    object_names: str = "clean",
    task_states: bool = False,
    rows_dir: str | Path | None = None,
) -> EvalResult:
    """Run every planned class × shots × seed; write results.csv, scores.npz and summary.md into ``out``.

    ``cache``: default ``<out>/cache``; ``resolution``: the square evaluation size, None = each image's own;
    ``encoder`` (``encode_files``' contract, e.g. Ray workers) encodes with ``encoding_model`` (default
    ``model``; more window scales let scale ablations share its cache); ``object_names``, ``task_states``:
    as in ``evaluate_run``; ``rows_dir``: default ``<out>/rows``."""
    out = Path(out)
    rows_dir = out / "rows" if rows_dir is None else Path(rows_dir)
    for folder in (out, rows_dir):
        folder.mkdir(parents=True, exist_ok=True)
    encoding_model = check_encoding_model(model, encoding_model)
    features = FeatureCache(Path(cache) if cache is not None else out / "cache", encoding_model)
    scoring = scoring_settings(model, resolution, object_names, task_states)
    base = {"features": feature_settings(encoding_model), "scoring": scoring, "format": CACHE_FORMAT}
    crops = model.options.multi_crop
    states = _class_states(plan, rows_dir, base, progress)
    missing = set().union(*(st.missing(features, crops) for st in states))

    errors: list[str] = []
    rows: list[RowResult] = []
    encoded = reused = 0
    encode_seconds = score_seconds = 0.0
    encode_bar = progress_bar(len(missing), "encode", enabled=progress, position=0)
    row_bar = progress_bar(len(plan.runs), "evaluate", "row", enabled=progress, position=1)
    try:
        for st in states:
            pending, finished = st.pending(), st.finished()
            rows += finished
            reused += len(finished)
            row_bar.update(len(finished))
            if not pending:
                continue
            start = time.perf_counter()
            n, bad = st.encode(encoder, encoding_model, features, crops, encode_bar)
            encoded += n
            encode_seconds += time.perf_counter() - start
            errors += [str(e) for e in bad.values()]
            samples = [s for s in st.data.test if st.hashes[s.path] not in bad]
            test = ViewSet.load(features, [st.hashes[s.path] for s in samples])
            masks: dict[Path, np.ndarray] | None = {} if resolution is not None else None
            for i in pending:
                run = st.runs[i]
                if any(st.hashes[p] in bad for p in run.references):
                    errors.append(
                        f"{run.data.name} {run.shots}-shot seed {run.seed}: skipped, a reference is unreadable"
                    )
                    row_bar.update(1)
                    continue
                refs = ViewSet.load(features, [st.hashes[p] for p in run.references]) if run.shots else None
                start = time.perf_counter()
                row = evaluate_run(
                    model, run, test, samples, refs, resolution, masks, plan.root, object_names, task_states
                )
                score_seconds += time.perf_counter() - start
                atomic_write(st.row_paths[i], functools.partial(Path.write_text, data=json.dumps(row.to_json())))
                rows.append(row)
                row_bar.update(1)
    finally:
        encode_bar.close()
        row_bar.close()
    ordered = _write_outputs(out, plan, model, rows, errors, settings)
    if model.rescorable:  # what `winclip report` needs to score the rows again (run_record, report_html)
        set_object = functools.partial(_set_object, model, object_names=object_names, task_states=task_states)
        _record_run(out, plan, model, ordered, features.folder, resolution, settings, _notes(model, errors), set_object)
    return EvalResult(ordered, out, encoded, reused, encode_seconds, score_seconds, tuple(errors))


def _record_run(
    out: Path,
    plan: EvalPlan,
    model: WinCLIP,
    rows: Sequence[RowResult],
    folder: Path,
    resolution: int | None,
    settings: Sequence[tuple[str, str]],
    notes: Sequence[str],
    set_object: Callable[[str], object],
) -> None:
    """run.json, prototypes.safetensors and report.html (winclip.paper.run_record, winclip.paper.report.page)."""
    save_run(
        out, plan, model, resolution=resolution, cache=folder, rows=rows, settings=settings, notes=notes,
        set_object=set_object,
    )  # fmt: skip
    write_report(out)


def _notes(model: WinCLIP, errors: Sequence[str]) -> list[str]:
    notes = []
    if model.info.checkpoint is None:
        notes.append("**RANDOM WEIGHTS (--pretrained none): every figure below is meaningless.**")
    return notes + [f"not evaluated: {line}" for line in errors]


def _write_outputs(
    out: Path,
    plan: EvalPlan,
    model: WinCLIP,
    rows: list[RowResult],
    errors: list[str],
    settings: Sequence[tuple[str, str]],
) -> tuple[RowResult, ...]:
    """results.csv, scores.npz and summary.md of the rows in plan order; returns the ordered rows."""
    order = {(r.data.name, r.shots, r.seed): i for i, r in enumerate(plan.runs)}
    rows = sorted(rows, key=lambda r: order[(r.cls, r.shots, r.seed)])
    notes = _notes(model, errors)
    write_results_csv(out / "results.csv", plan.dataset, rows)
    write_scores(out / "scores.npz", rows)
    write_file(out / "summary.md", summary_markdown(plan.dataset, rows, settings, notes).encode())
    return tuple(rows)
