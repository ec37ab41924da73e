"""`winclip eval --table N`: run the rows of one of the paper's tables and write ``tableN.md``.

Every runnable row (winclip.paper.tables) becomes a model: the run's backbone (or Table 9's own) with
the row's method options, prompts and baseline, evaluated by `evaluate` into
``<out>/table<N>/<row>/`` (results.csv, scores.npz, summary.md). All rows share one feature
cache (``<out>/cache``) and one folder of finished rows (``<out>/rows``): scoring ablations
encode nothing, a row with fewer window scales reads the full encoding, multi-crop rows add only
the crops, and a row two tables share (Tables 1 and 4) is computed once. Table 8's time per
image is measured here, on this machine, one image at a time.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import Encoder, load_backbone
from ..backbones.openclip import RandomWeightsWarning
from ..files import write_file
from ..method.prompts import PROMPT_SETS
from ..model import WinCLIP
from ..options import DEFAULT_EVAL_RESOLUTION, ModelSpec
from ..progress import plural
from .baselines import make_baseline
from .evaluate import evaluate
from .protocol import EvalPlan
from .results import RowResult, table_markdown
from .tables import TABLES, Table, TableRow

TIMING_IMAGES = 5  # Table 8: test images timed per row (after one warm-up prediction)


@dataclass(frozen=True)
class RowOutcome:
    """What one table row produced: its per-class results (none when not run) and its time per image."""

    row: TableRow
    results: tuple[RowResult, ...] = ()
    time_ms: tuple[float, float] | None = None  # mean and std over the timed images
    backbone: str = ""


@dataclass(frozen=True)
class TableRun:
    """A finished table: where tableN.md is and what each row produced."""

    path: Path
    outcomes: tuple[RowOutcome, ...]


def select_shots(plan: EvalPlan, shots: Sequence[int]) -> EvalPlan:
    """The plan's runs at these shot counts only (the plan must have been made with them)."""
    missing = sorted(set(shots) - set(plan.shots))
    if missing:
        raise ValueError(f"the plan lacks shots {missing}")
    runs = tuple(r for r in plan.runs if r.shots in shots)
    return dataclasses.replace(plan, shots=tuple(sorted(set(shots))), runs=runs)


def slug(row: TableRow) -> str:
    """A folder name for a row: its setup and label in lower-case words."""
    return re.sub(r"[^a-z0-9]+", "-", f"{row.setup} {row.label}".lower()).strip("-")


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's (`cpu_name`)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it (else platform's word), its SIMD level and torch's threads."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def time_per_image(models: Sequence[WinCLIP], images: Sequence, object_name: str) -> list[tuple[float, float]]:
    """Per model: mean and std (ms) of one-image predictions (decoded image to full map).

    After one warm-up prediction each, the models take turns on every image, so a change of
    load on a shared machine touches them all alike.
    """
    for model in models:
        model.set_object(object_name)
        model.predict([images[0]])
    times: list[list[float]] = [[] for _ in models]
    for img in images:
        for model, spent in zip(models, times, strict=True):
            start = time.perf_counter()
            model.predict([img])
            spent.append(1000.0 * (time.perf_counter() - start))
    return [(float(np.mean(t)), float(np.std(t))) for t in times]


class _Models:
    """Row models on the run's backbone or on Table 9's, each backbone loaded once."""

    def __init__(self, base: WinCLIP, spec: ModelSpec, backbones: Sequence[tuple[str, str | None]] | None) -> None:
        self.base = base
        self.spec = spec
        self.overrides = list(backbones or [])
        self.loaded: dict[tuple[str, str | None], Encoder] = {(base.info.name, base.info.pretrained): base.backbone}

    def backbone(self, table: Table, row: TableRow) -> Encoder:
        if row.backbone is None:
            return self.base.backbone
        wanted: tuple[str, str | None] = row.backbone
        if self.overrides:
            runnable = [r for r in table.rows if r.runs and r.backbone is not None]
            wanted = self.overrides[runnable.index(row)]
        if wanted not in self.loaded:
            with warnings.catch_warnings():  # tableN.md says it louder
                warnings.simplefilter("ignore", RandomWeightsWarning)
                spec = dataclasses.replace(self.spec, backbone=wanted[0], pretrained=wanted[1])
                self.loaded[wanted] = load_backbone(spec)
        return self.loaded[wanted]

    def model(self, table: Table, row: TableRow) -> tuple[WinCLIP, WinCLIP]:
        """The row's model and the one encoding its features (itself, or with all scales for a scale ablation)."""
        opt = self.base.options
        model = WinCLIP(
            self.backbone(table, row),
            resize=opt.resize,
            tile_overlap=opt.tile_overlap,
            tile_reduce=opt.tile_reduce,
            **dict(row.options),
            batch_size=self.base.batch_size,
            prompts=PROMPT_SETS[row.prompts],
        )
        if row.method != "winclip":
            baseline = make_baseline(row.method, model)
            return baseline, baseline
        full = opt.scales
        if set(model.options.scales) < set(full):
            return model, model.with_options(scales=full, vision_scales=None)
        return model, model


def run_table(
    key: str,
    plan: EvalPlan,
    model: WinCLIP,
    spec: ModelSpec,
    out: str | Path,
    *,
    cache: str | Path | None = None,
    resolution: int | None = DEFAULT_EVAL_RESOLUTION,
    progress: bool = True,
    backbones: Sequence[tuple[str, str | None]] | None = None,
    timing_images: int = TIMING_IMAGES,
    object_names: str = "clean",
) -> TableRun:
    """Evaluate every runnable row of table `key` (winclip.paper.tables.TABLES) and write ``<out>/table<key>.md``.

    `plan` must cover the table's shots (`Table.shots_needed`); `model` is the run's backbone with
    its view options (squash or tiles); `spec` loads Table 9's other backbones, or `backbones`
    (name, tag) replace its ViT rows in order.
    """
    table = TABLES[key]
    out = Path(out)
    cache = out / "cache" if cache is None else Path(cache)
    models = _Models(model, spec, backbones)
    if backbones and len(backbones) != len([r for r in table.rows if r.runs and r.backbone is not None]):
        raise ValueError(f"table {key} has {sum(r.backbone is not None for r in table.rows if r.runs)} backbone rows")
    outcomes, timed, random = [], [], False
    for row in table.rows:
        if not row.runs:
            outcomes.append(RowOutcome(row))
            continue
        row_model, encoding = models.model(table, row)
        settings = [("table", f"{key}: {table.title}"), ("row", f"{row.setup} {row.label}".strip())]
        result = evaluate(
            row_model,
            select_shots(plan, row.shots),
            out / f"table{key}" / slug(row),
            cache=cache,
            resolution=resolution,
            progress=progress,
            settings=settings,
            encoding_model=encoding,
            object_names=object_names,
            task_states=row.task_states,
            rows_dir=out / "rows",
        )
        info = row_model.info
        random = random or info.checkpoint is None
        outcomes.append(RowOutcome(row, result.rows, None, f"{info.name} ({info.pretrained or 'random'})"))
        timed.append(row_model)
    notes: list[str] = []
    where = None
    if table.timed:
        first = plan.classes[0]
        images = [model.load(s.path) for s in first.test[:timing_images]]
        times = iter(time_per_image(timed, images, first.name))
        outcomes = [dataclasses.replace(o, time_ms=next(times)) if o.row.runs else o for o in outcomes]
        where = device_name(model.device)
        shown = plural(len(images), "image")
        notes.append(f"times: {shown} of {first.name}, one at a time, rows taking turns, on {where}")
    if random:
        notes.append("**RANDOM WEIGHTS (--pretrained none): every figure of ours is meaningless.**")
    path = out / f"table{key}.md"
    write_file(path, table_markdown(table, tuple(outcomes), plan.dataset, notes, device=where).encode())
    return TableRun(path, tuple(outcomes))
