"""Evaluation reports: results.csv, scores.npz and summary.md with the paper's figures alongside (docs/method.md §5).

``results.csv`` holds fractions in [0, 1] at full precision, one row per
class × shots × seed × metric, each with the mean over the classes of its shots × seed × metric
(``class_mean``) and the population std over seeds of that class mean (``class_mean_seed_std``).
``summary.md`` shows percentages like the paper (Table 1 / Table 4 layouts, then per-class
tables), mean ± std over seeds, the published figure and our difference to it in percentage
points. A mean row's ± is, as in the paper, the mean over classes of the per-class stds (all 36
WinCLIP+ mean cells of the paper's per-class tables agree with that to 0.05).
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..files import open_new, write_file
from .tables import (
    IMAGE_METRICS,
    PIXEL_METRICS,
    TIME_METRIC,
    PaperValue,
    Table,
    TableRow,
    paper_figure,
    paper_figures,
)

METRICS = IMAGE_METRICS + PIXEL_METRICS
METRIC_NAMES = {
    "image_auroc": "AUROC",
    "image_aupr": "AUPR",
    "image_f1max": "F1-max",
    "pixel_auroc": "pixel AUROC",
    "pixel_pro": "PRO",
    "pixel_f1max": "pixel F1-max",
}
PAPER_DATASETS = ("mvtec", "visa")
PAPER_TIME_DEVICE = "T4 GPU"  # where the paper timed Table 8
ZERO_SHOT_SEED = -1  # the seed stored in scores.npz for zero-shot rows (seeds do not apply)


@dataclass(frozen=True)
class RowResult:
    """One evaluated class × shots × seed: metrics (fractions) and every per-image score.

    seed is None for zero-shot. Paths are relative to the dataset root. ``metrics``
    lacks the pixel metrics when the class has no masks.
    """

    cls: str
    shots: int
    seed: int | None
    metrics: dict[str, float]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    defects: tuple[str, ...]
    scores: tuple[float, ...]
    zero_shot: tuple[float, ...]
    references: tuple[str, ...]

    def to_json(self) -> dict:
        """A JSON-ready dict (floats round-trip exactly through JSON)."""
        return {
            "cls": self.cls,
            "shots": self.shots,
            "seed": self.seed,
            "metrics": self.metrics,
            "paths": list(self.paths),
            "labels": list(self.labels),
            "defects": list(self.defects),
            "scores": list(self.scores),
            "zero_shot": list(self.zero_shot),
            "references": list(self.references),
        }

    @staticmethod
    def from_json(data: Mapping) -> RowResult:
        return RowResult(
            str(data["cls"]),
            int(data["shots"]),
            None if data["seed"] is None else int(data["seed"]),
            {str(k): float(v) for k, v in data["metrics"].items()},
            tuple(data["paths"]),
            tuple(int(v) for v in data["labels"]),
            tuple(data["defects"]),
            tuple(float(v) for v in data["scores"]),
            tuple(float(v) for v in data["zero_shot"]),
            tuple(data["references"]),
        )


@functools.cache
def paper_table() -> dict[tuple[str, str, str, int], PaperValue]:
    """WinCLIP (0-shot) and WinCLIP+ (1/2/4-shot) rows of the paper, keyed (dataset, metric, class, shots)."""
    return {
        (dataset, metric, cls, shots): value
        for (source, method, dataset, cls, metric, shots), value in paper_figures().items()
        if source == "per-class" and method in ("WinCLIP", "WinCLIP+")
    }


def paper_value(
    table: Mapping[tuple[str, str, str, int], PaperValue],
    dataset: str,
    metric: str,
    cls: str,
    shots: int,
    classes: Sequence[str] = (),
) -> PaperValue | None:
    """The paper's figure for one class, or for ``cls == "mean"`` the mean over ``classes``.

    The paper's own mean row is used when ``classes`` is exactly its class set;
    for a subset the paper's per-class means are averaged (no std); None when
    the paper has no such figure.
    """
    if cls != "mean":
        return table.get((dataset, metric, cls, shots))
    paper_classes = {c for d, m, c, s in table if d == dataset and m == metric and s == shots and c != "mean"}
    if paper_classes and set(classes) == paper_classes:
        return table.get((dataset, metric, "mean", shots))
    values = [table.get((dataset, metric, c, shots)) for c in classes]
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    return PaperValue(float(np.mean([v.mean for v in present])), None)


def write_results_csv(path: Path, dataset: str, rows: Sequence[RowResult]) -> None:
    """dataset,class,shots,seed,metric,value,class_mean,class_mean_seed_std; value a fraction; seed empty for
    zero-shot.

    class_mean: the mean over the classes of this shots × seed × metric; class_mean_seed_std: the
    population std over seeds of that class mean (0 for zero-shot), repeated on each row it concerns.
    """
    means = {
        (shots, metric): dict(seed_means(rows, metric, shots))
        for shots in sorted({r.shots for r in rows})
        for metric in METRICS
    }
    with open_new(path.parent, path.name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "class", "shots", "seed", "metric", "value", "class_mean", "class_mean_seed_std"])
        for row in rows:
            for metric in METRICS:
                if metric in row.metrics:
                    seed = "" if row.seed is None else row.seed
                    per_seed = means[(row.shots, metric)]
                    std = float(np.std(list(per_seed.values())))
                    cells = [row.metrics[metric], per_seed[row.seed], std]
                    writer.writerow([dataset, row.cls, row.shots, seed, metric, *map(repr, cells)])


def write_scores(path: Path, rows: Sequence[RowResult]) -> None:
    """Every per-image score as flat arrays (no pickle): class, path, defect, label, shots, seed, score, zero_shot."""

    def column(get: Callable[[RowResult], Sequence[object]], dtype: npt.DTypeLike) -> np.ndarray:
        return np.array([v for row in rows for v in get(row)], dtype=dtype)

    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{  # type: ignore[arg-type]  # mypy matches these arrays against allow_pickle: bool; no key is that
            "class": column(lambda r: [r.cls] * len(r.paths), np.str_),
            "path": column(lambda r: r.paths, np.str_),
            "defect": column(lambda r: r.defects, np.str_),
            "label": column(lambda r: r.labels, np.int8),
            "shots": column(lambda r: [r.shots] * len(r.paths), np.int32),
            "seed": column(lambda r: [ZERO_SHOT_SEED if r.seed is None else r.seed] * len(r.paths), np.int32),
            "score": column(lambda r: r.scores, np.float64),
            "zero_shot": column(lambda r: r.zero_shot, np.float64),
        },
    )
    write_file(path, buffer.getvalue())


def seed_means(rows: Sequence[RowResult], metric: str, shots: int) -> list[tuple[int | None, float]]:
    """(seed, mean over the classes having the metric) per seed, seeds in order (None first)."""
    by_seed: dict[int | None, list[float]] = {}
    for r in rows:
        if r.shots == shots and metric in r.metrics:
            by_seed.setdefault(r.seed, []).append(r.metrics[metric])
    ordered = sorted(by_seed.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    return [(seed, float(np.mean(v))) for seed, v in ordered]


def seed_values(rows: Sequence[RowResult], metric: str, cls: str, shots: int) -> list[float]:
    """Per-seed values of one class (``cls == "mean"``: per-seed means over the classes having the metric)."""
    if cls == "mean":
        return [value for _, value in seed_means(rows, metric, shots)]
    return [r.metrics[metric] for r in rows if r.shots == shots and metric in r.metrics and r.cls == cls]


def class_mean(rows: Sequence[RowResult], metric: str, shots: int) -> tuple[float, float | None] | None:
    """The paper's mean row: (mean over classes of the class means, mean over classes of the per-class
    population stds over seeds, None with one seed); None when no class has the metric."""
    classes = list(dict.fromkeys(r.cls for r in rows if r.shots == shots and metric in r.metrics))
    if not classes:
        return None
    values = [seed_values(rows, metric, c, shots) for c in classes]
    std = float(np.mean([np.std(v) for v in values])) if max(len(v) for v in values) > 1 else None
    return float(np.mean([np.mean(v) for v in values])), std


def cell_text(mean: float, std: float | None, paper: PaperValue | None) -> str:
    """``ours ± std (paper P ± s, ±diff)`` in percent from fractions (no ± when std is None)."""
    cell = f"{100.0 * mean:.1f}" + ("" if std is None else f" ± {100.0 * std:.1f}")
    if paper is None:
        return cell
    ref = f"{paper.mean:.1f}" + (f" ± {paper.std:.1f}" if paper.std else "")
    return f"{cell} ({ref}, {100.0 * mean - paper.mean:+.1f})"


def format_cell(values: Sequence[float], paper: PaperValue | None) -> str:
    """``ours ± std (paper P ± s, ±diff)`` in percent; std over seeds is the population std (ddof=0)."""
    if not values:
        return "n/a"
    return cell_text(float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None, paper)


def mean_cell(rows: Sequence[RowResult], metric: str, shots: int, paper: PaperValue | None) -> str:
    """A mean row's cell: the mean over classes ± the mean of the per-class stds (`class_mean`)."""
    stats = class_mean(rows, metric, shots)
    return "n/a" if stats is None else cell_text(*stats, paper)


def _setup(shots: int) -> str:
    return "0-shot WinCLIP" if shots == 0 else f"{shots}-shot WinCLIP+"


def summary_markdown(
    dataset: str,
    rows: Sequence[RowResult],
    settings: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """The whole summary.md: settings, Table 1 and Table 4 layouts, per-class tables, references."""
    table = paper_table() if dataset in PAPER_DATASETS else {}
    classes = list(dict.fromkeys(r.cls for r in rows))
    shots = sorted({r.shots for r in rows})
    has_paper = dataset in PAPER_DATASETS
    lines = [f"# WinCLIP evaluation: {dataset}", ""]
    lines += [f"- {line}" for line in notes]
    if settings:
        lines += ["", "| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in settings]
    lines.append("")
    legend = (
        "Percent; few-shot cells are mean ± std over seeds (population std); a mean row's ± is the mean over "
        "classes of the per-class stds, as in the paper (the std over seeds of the class mean is results.csv's "
        "`class_mean_seed_std`); "
    ) + (
        "in brackets the paper's figure (Jeong et al., CVPR 2023) and our difference in points."
        if has_paper
        else "no paper figures for this layout."
    )
    lines += [legend, ""]

    def main_table(title: str, metrics: tuple[str, ...]) -> None:
        lines.extend([f"## {title}", "", "| setup | " + " | ".join(METRIC_NAMES[m] for m in metrics) + " |"])
        lines.append("|---" * (len(metrics) + 1) + "|")
        for k in shots:
            cells = [mean_cell(rows, m, k, paper_value(table, dataset, m, "mean", k, classes)) for m in metrics]
            lines.append(f"| {_setup(k)} | " + " | ".join(cells) + " |")
        lines.append("")

    n = len(classes)
    main_table(f"Classification (Table 1 layout), mean over {n} class{'es' if n != 1 else ''}", IMAGE_METRICS)
    main_table("Segmentation (Table 4 layout), mean over the classes with masks", PIXEL_METRICS)
    lines += ["## Per class", ""]
    for metric in METRICS:
        lines += [f"### {METRIC_NAMES[metric]}", "", "| class | " + " | ".join(f"{k}-shot" for k in shots) + " |"]
        lines.append("|---" * (len(shots) + 1) + "|")
        for cls in [*classes, "mean"]:
            cells = [
                mean_cell(rows, metric, k, paper_value(table, dataset, metric, cls, k, classes))
                if cls == "mean"
                else format_cell(
                    seed_values(rows, metric, cls, k), paper_value(table, dataset, metric, cls, k, classes)
                )
                for k in shots
            ]
            lines.append(f"| {cls} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## References (few-shot rows)", "", "| class | shots | seed | reference files |", "|---|---|---|---|"]
    lines += [f"| {r.cls} | {r.shots} | {r.seed} | {', '.join(r.references)} |" for r in rows if r.shots > 0]
    return "\n".join(lines) + "\n"


# -- tableN.md: one of the paper's tables, ours beside its figures (winclip.paper.reproduce) --------------


class Outcome(Protocol):
    """What tableN.md reads of one row's outcome (winclip.paper.reproduce.RowOutcome)."""

    @property
    def row(self) -> TableRow: ...
    @property
    def results(self) -> Sequence[RowResult]: ...
    @property
    def time_ms(self) -> tuple[float, float] | None: ...


def _paper_only(paper: PaperValue | None, ours: str = "—") -> str:
    if paper is None:
        return ours
    return f"{ours} ({paper.mean:.1f}" + (f" ± {paper.std:.1f})" if paper.std else ")")


def _time_cells(time_ms: tuple[float, float] | None, paper: PaperValue | None) -> list[str]:
    """Table 8's two time columns: ours on our device, the paper's on its T4 GPU (never their difference)."""
    ours = "—" if time_ms is None else f"{time_ms[0]:.1f} ± {time_ms[1]:.1f}"
    theirs = "—" if paper is None else f"{paper.mean:.1f}" + (f" ± {paper.std:.1f}" if paper.std else "")
    return [ours, theirs]


Figures = Mapping[tuple[str, str, str, str, str, int], PaperValue]


def _row_cells(table: Table, outcome: Outcome, dataset: str | None, figures: Figures) -> list[str]:
    """The figure cells of one row in the table's layout (ours with the paper's beside)."""
    row, results = outcome.row, outcome.results

    def cell(metric: str, shots: int, cls: str = "mean") -> str:
        paper = paper_figure(figures, table, row, dataset, metric, shots, cls) if dataset else None
        if not row.runs:
            return _paper_only(paper)
        if cls != "mean":
            values = seed_values(results, metric, cls, shots)
            return format_cell(values, paper) if values else _paper_only(paper, "n/a")
        stats = class_mean(results, metric, shots)
        return _paper_only(paper, "n/a") if stats is None else cell_text(*stats, paper)

    metric = table.metrics[0]
    if table.layout == "shots":
        return [cell(metric, k) for k in table.shots]
    if table.layout == "classes":
        return [cell(metric, 0, c) for c in table.classes] + [cell(metric, 0)]
    cells = [cell(m, row.shots[0]) for m in table.metrics]
    if table.timed:
        paper = paper_figure(figures, table, row, dataset, TIME_METRIC, 0) if dataset else None
        cells += _time_cells(outcome.time_ms, paper)
    return cells


def table_markdown(
    table: Table, outcomes: Sequence[Outcome], dataset: str, notes: Sequence[str] = (), device: str | None = None
) -> str:
    """``tableN.md``: the paper's layout, each cell ours (its figure, our difference in points); Table 8's time
    per image in two columns, ours on `device` and the paper's on a T4 GPU."""
    figures = paper_figures()
    paper_dataset = dataset if table.dataset in ("both", dataset) else None
    ours = sorted({r.cls for o in outcomes for r in o.results})
    theirs = sorted({k[3] for k in figures if k[0] == "per-class" and k[2] == paper_dataset and k[3] != "mean"})
    lines = [f"# Table {table.key}: {table.title}", ""]
    lines.append(
        f"Ours on `{dataset}` ({len(ours)} classes) with, in brackets, the paper's figure and our difference in "
        "points; percent; few-shot cells are mean ± std over seeds, a mean's ± the mean of the per-class stds "
        "(as the paper). — = not run here (†)."
    )
    lines.append("")
    extra = list(notes) + ([table.note] if table.note else [])
    if paper_dataset is None:
        extra.append(f"The paper's table is on {table.dataset}: no figures beside ours on {dataset}.")
    elif theirs and ours != theirs:
        extra.append(f"The paper's means are over its {len(theirs)} {paper_dataset} classes, ours over {len(ours)}.")
    reasons = dict.fromkeys(o.row.reason for o in outcomes if not o.row.runs)
    extra += [f"† not run: {reason}" for reason in reasons]
    lines += [f"- {line}" for line in extra] + [""]
    head = (["Setup"] if any(o.row.setup for o in outcomes) else []) + ["Method", *table.columns]
    if table.layout == "shots":
        head += [f"{k}-shot" for k in table.shots]
    elif table.layout == "classes":
        head += [*table.classes, "Mean"]
    else:
        head += [METRIC_NAMES[m] for m in table.metrics]
        head += [f"ms/image, ours ({device or 'this run'})", f"ms/image, paper ({PAPER_TIME_DEVICE})"] * table.timed
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for o in outcomes:
        label = o.row.label + ("" if o.row.runs else " †")
        first = ([o.row.setup] if "Setup" in head else []) + [label, *o.row.marks]
        lines.append("| " + " | ".join(first + _row_cells(table, o, paper_dataset, figures)) + " |")
    return "\n".join(lines) + "\n"
