"""`winclip eval`: evaluate every class x shots x seed of a dataset and compare with the paper.

Evaluate zero-shot WinCLIP and few-shot WinCLIP+ on a dataset: writes results.csv, scores.npz, summary.md
(the paper's Table 1 / Table 4 layouts with its figures alongside) and report.html into --out. Features are
cached by file content, so reruns and scoring ablations encode nothing, and an interrupted run resumes. The
defaults are the paper's protocol: ten-crop classification, VisA tiled with tile predictions averaged.
--table N runs every row of one of the paper's tables instead and writes <out>/tableN.md beside each row's
own results.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..method.prompts import OBJECT_NAME_MAPS, PROMPT_SETS
from ..options import (
    AGGREGATIONS,
    DEFAULT_EVAL_RESOLUTION,
    DEFAULT_SEEDS,
    DEFAULT_SHOTS,
    FEWSHOT_AGGREGATIONS,
    FEWSHOT_FUSIONS,
    FEWSHOT_SCORES,
    PAPER_TILE_OVERLAP,
    PAPER_TILE_REDUCE,
    PATCH_FEATURES,
    RESIZE_MODES,
    TILE_REDUCTIONS,
)
from ..paper.data import LAYOUTS
from ..progress import plural
from .cluster import eval_encoder
from .common import add_command, add_model_options, add_ray_options, count, load_model, method_option
from .requests import EvalRequest

if TYPE_CHECKING:
    from ..model import WinCLIP
    from ..paper.protocol import EvalPlan

RESOLUTION_HELP = "square size of the pixel metrics, or 'original' (~8 bytes per pixel of a class's test set in memory)"
TABLE_CHOICES = ("1", "3", "4", "5", "6", "7", "8", "9", "patchcore")  # winclip.paper.tables.TABLES, without torch
TABLE_KEEPS = ("resize", "tile_overlap", "tile_reduce", "object_names")  # the method options a table run honours
BASELINE_CHOICES = ("patch-token", "image-tiling", "patchcore-hidden", "patchcore-last")  # winclip.paper.baselines


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = add_command(subparsers, "eval", __doc__)
    g = p.add_argument_group("evaluation")
    g.add_argument("--dataset", required=True, choices=LAYOUTS, help="dataset layout")
    g.add_argument("--root", required=True, help="dataset root folder (the CSV file for --dataset manifest)")
    g.add_argument("--classes", nargs="+", metavar="CLASS", help="evaluate only these classes")
    g.add_argument(
        "--shots",
        nargs="+",
        type=count(0, 1000),
        default=list(DEFAULT_SHOTS),
        metavar="K",
        help="few-shot K (0 = zero-shot)",
    )
    g.add_argument(
        "--seeds", type=count(1, 1000), default=DEFAULT_SEEDS, help="reference draws per few-shot K, seeds 0..S-1"
    )
    g.add_argument("--out", required=True, help="output folder (results.csv, scores.npz, summary.md, report.html)")
    g.add_argument("--cache", help="feature cache folder (default: <out>/cache)")
    g.add_argument(
        "--eval-resolution", default=str(DEFAULT_EVAL_RESOLUTION), metavar="N|original", help=RESOLUTION_HELP
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    t = p.add_argument_group("the paper's tables")
    t.add_argument("--table", choices=TABLE_CHOICES, help="run every row of this table (its own settings and shots)")
    t.add_argument(
        "--table-backbones",
        nargs="+",
        metavar="NAME:TAG",
        help="with --table 9: open_clip backbones for its ViT-B/16, ViT-B/16+ and ViT-L/14 rows (tag 'none' = random)",
    )
    t.add_argument(
        "--timing-images", type=count(1, 10_000), default=5, help="with --table 8: test images timed per row"
    )
    m = p.add_argument_group("method (the paper's ablations and open choices)")
    m.add_argument(
        "--scales", nargs="+", type=method_option("scales"), default=[2, 3], metavar="K", help="window sizes in patches"
    )
    m.add_argument("--no-image-scale", action="store_true", help="leave the image score out of the zero-shot map")
    m.add_argument("--aggregation", default="harmonic", choices=AGGREGATIONS, help="window scores onto patches (Eq. 3)")
    m.add_argument("--prompts", default="winclip", choices=sorted(PROMPT_SETS), help="prompt set (Table 3 rows)")
    m.add_argument("--temperature", type=method_option("temperature"), default=0.07, help="τ of Eq. 1")
    m.add_argument(
        "--multi-crop", action=argparse.BooleanOptionalAction, default=True, help="ten-crop image score (Table 3 d)"
    )
    m.add_argument("--resize", choices=RESIZE_MODES, help="non-square images (default: tile for VisA, else squash)")
    m.add_argument(
        "--tile-overlap",
        type=method_option("tile_overlap"),
        default=PAPER_TILE_OVERLAP,
        help="tiles: least overlap (paper 0.2)",
    )
    m.add_argument("--tile-reduce", default=PAPER_TILE_REDUCE, choices=TILE_REDUCTIONS, help="tiles: image score")
    m.add_argument("--object-names", default="clean", choices=sorted(OBJECT_NAME_MAPS), help="VisA class names")
    m.add_argument(
        "--task-states", action=argparse.BooleanOptionalAction, default=False, help="Table 7's task-specific states"
    )
    m.add_argument("--fewshot-score", default="both", choices=FEWSHOT_SCORES, help="Eq. 6 terms (Table 5)")
    m.add_argument(
        "--vision-scales",
        nargs="*",
        type=method_option("vision_scales"),
        metavar="K",
        help="window maps in Eq. 5 (Table 6; default all)",
    )
    m.add_argument("--fewshot-aggregation", default="same", choices=FEWSHOT_AGGREGATIONS, help="window distances")
    m.add_argument("--fewshot-fusion", default="mean", choices=FEWSHOT_FUSIONS, help="final few-shot map")
    m.add_argument("--patch-features", default="tokens", choices=PATCH_FEATURES, help="patch memories (M^P)")
    m.add_argument("--baseline", choices=BASELINE_CHOICES, help="a baseline instead of WinCLIP (Table 8, supplement)")
    # what --table N sets per row itself: given with --table, these options are refused, not ignored
    own = [a for a in m._group_actions if a.dest not in TABLE_KEEPS]
    p.set_defaults(table_sets=tuple((a.option_strings[0], a.dest, a.default) for a in own))
    add_model_options(p)
    add_ray_options(p)
    p.set_defaults(func=run, precision="fp32")  # the reproduction: other precisions by --precision


def run(args: argparse.Namespace) -> int:
    """`winclip eval`: the request, then one evaluation or one of the paper's tables."""
    return evaluate(EvalRequest.of(args))


def evaluate(request: EvalRequest) -> int:
    """Validate the dataset (exit 2 listing every problem) before building the model, then evaluate."""
    from ..paper.protocol import plan_eval

    if request.table:
        return run_table(request)
    plan = plan_eval(request.dataset, request.root, request.classes, request.shots, request.seeds)
    model = load_model(request.model, request.options, prompts=request.prompts)
    if request.baseline:
        from ..paper.baselines import make_baseline

        model = make_baseline(request.baseline, model)
    n_images = sum(len(c.test) for c in plan.classes)
    print(
        f"eval: {request.dataset} at {request.root}: {len(plan.classes)} classes, {n_images} test images, "
        f"shots {' '.join(map(str, plan.shots))}, {plan.seeds} seeds, {len(plan.runs)} rows",
        file=sys.stderr,
    )
    return _evaluate(request, plan, model)


def _settings(request: EvalRequest, plan: EvalPlan, model: WinCLIP) -> list[tuple[str, str]]:
    opt, res = model.options, request.resolution
    tiles = (
        f" (overlap ≥ {opt.tile_overlap}, image score = {opt.tile_reduce} over tiles)" if opt.resize == "tile" else ""
    )
    vision = "all" if opt.vision_scales is None else " ".join(map(str, opt.vision_scales)) or "none"
    return [
        ("dataset", f"{request.dataset} ({request.root})"),
        ("classes", ", ".join(c.name for c in plan.classes)),
        ("shots / seeds", f"{' '.join(map(str, plan.shots))} / {plan.seeds} (zero-shot: one run)"),
        ("backbone", f"{model.info.name}, weights {model.info.pretrained or 'random'} ({model.info.weights_id})"),
        ("device / precision", f"{model.device} / {model.backbone.precision}"),
        ("method", model.method),
        ("scales / image scale", f"{' '.join(map(str, opt.scales))} / {'on' if opt.image_scale else 'off'}"),
        ("aggregation / prompts / temperature", f"{opt.aggregation} / {request.prompts} / {opt.temperature}"),
        ("multi-crop", "on (ten crops)" if opt.multi_crop else "off"),
        ("object names / task states", f"{request.object_names} / {'on' if request.task_states else 'off'}"),
        (
            "few-shot score / vision scales / aggregation / fusion / patch features",
            f"{opt.fewshot_score} / {vision} / {opt.fewshot_aggregation} / {opt.fewshot_fusion} / {opt.patch_features}",
        ),
        ("resize", opt.resize + tiles),
        ("evaluation resolution", "original" if res is None else f"{res}x{res}"),
    ]


def _evaluate(request: EvalRequest, plan: EvalPlan, model: WinCLIP) -> int:
    from ..paper.evaluate import evaluate

    with eval_encoder(request, model) as encoder:  # feature_cache.encode_files, or Ray workers
        result = evaluate(
            model,
            plan,
            request.out,
            cache=request.cache,
            resolution=request.resolution,
            progress=request.progress,
            settings=_settings(request, plan, model),
            encoder=encoder,
            object_names=request.object_names,
            task_states=request.task_states,
        )
    for line in result.errors:
        print(f"winclip: warning: {line}", file=sys.stderr)
    computed = len(result.rows) - result.reused_rows
    per_image = f" ({result.encode_seconds / result.encoded:.3f} s/image)" if result.encoded else ""
    per_row = f" ({result.score_seconds / computed:.3f} s/row)" if computed else ""
    print(
        f"eval: {plural(len(result.rows), 'row')} ({result.reused_rows} reused), "
        f"{plural(result.encoded, 'image')} encoded "
        f"in {result.encode_seconds:.1f} s{per_image}, rows scored in {result.score_seconds:.1f} s{per_row}; "
        f"wrote {result.out / 'summary.md'}, results.csv, scores.npz"
        + (", report.html" if (result.out / "report.html").is_file() else "")
    )
    return 0


def run_table(request: EvalRequest) -> int:
    """Every runnable row of one of the paper's tables, and tableN.md."""
    from ..paper.protocol import plan_eval
    from ..paper.reproduce import run_table as run_rows
    from ..paper.tables import TABLES

    assert request.table is not None
    table = TABLES[request.table]
    plan = plan_eval(request.dataset, request.root, request.classes, table.shots_needed(), request.seeds)
    model = load_model(request.model, request.options)
    print(
        f"eval: table {request.table} ({table.title}) on {request.dataset}: {len(plan.classes)} classes",
        file=sys.stderr,
    )
    done = run_rows(
        request.table,
        plan,
        model,
        request.model.spec(),
        request.out,
        cache=request.cache,
        resolution=request.resolution,
        progress=request.progress,
        backbones=request.table_backbones,
        timing_images=request.timing_images,
        object_names=request.object_names,
    )
    print(f"eval: table {request.table}: {sum(o.row.runs for o in done.outcomes)} rows run; wrote {done.path}")
    return 0
