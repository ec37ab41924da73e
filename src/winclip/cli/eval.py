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
    TILED_DATASETS,
    MethodOptions,
)
from ..paper.data import LAYOUTS
from . import add_command, add_model_options, load_model, model_spec
from .cluster import add_ray_options, eval_encoder

RESOLUTION_HELP = "square size of the pixel metrics, or 'original' (~8 bytes per pixel of a class's test set in memory)"
TABLE_CHOICES = ("1", "3", "4", "5", "6", "7", "8", "9", "patchcore")  # winclip.paper.tables.TABLES, without torch
BASELINE_CHOICES = ("patch-token", "image-tiling", "patchcore-hidden", "patchcore-last")  # winclip.paper.baselines


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = add_command(subparsers, "eval", __doc__)
    g = p.add_argument_group("evaluation")
    g.add_argument("--dataset", required=True, choices=LAYOUTS, help="dataset layout")
    g.add_argument("--root", required=True, help="dataset root folder (the CSV file for --dataset manifest)")
    g.add_argument("--classes", nargs="+", metavar="CLASS", help="evaluate only these classes")
    g.add_argument(
        "--shots", nargs="+", type=int, default=list(DEFAULT_SHOTS), metavar="K", help="few-shot K (0 = zero-shot)"
    )
    g.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="reference draws per few-shot K, seeds 0..S-1")
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
    t.add_argument("--timing-images", type=int, default=5, help="with --table 8: test images timed per row")
    m = p.add_argument_group("method (the paper's ablations and open choices)")
    m.add_argument("--scales", nargs="+", type=int, default=[2, 3], metavar="K", help="window sizes in patches")
    m.add_argument("--no-image-scale", action="store_true", help="leave the image score out of the zero-shot map")
    m.add_argument("--aggregation", default="harmonic", choices=AGGREGATIONS, help="window scores onto patches (Eq. 3)")
    m.add_argument("--prompts", default="winclip", choices=sorted(PROMPT_SETS), help="prompt set (Table 3 rows)")
    m.add_argument("--temperature", type=float, default=0.07, help="τ of Eq. 1")
    m.add_argument(
        "--multi-crop", action=argparse.BooleanOptionalAction, default=True, help="ten-crop image score (Table 3 d)"
    )
    m.add_argument("--resize", choices=RESIZE_MODES, help="non-square images (default: tile for VisA, else squash)")
    m.add_argument("--tile-overlap", type=float, default=PAPER_TILE_OVERLAP, help="tiles: least overlap (paper 0.2)")
    m.add_argument("--tile-reduce", default=PAPER_TILE_REDUCE, choices=TILE_REDUCTIONS, help="tiles: image score")
    m.add_argument("--object-names", default="clean", choices=sorted(OBJECT_NAME_MAPS), help="VisA class names")
    m.add_argument(
        "--task-states", action=argparse.BooleanOptionalAction, default=False, help="Table 7's task-specific states"
    )
    m.add_argument("--fewshot-score", default="both", choices=FEWSHOT_SCORES, help="Eq. 6 terms (Table 5)")
    m.add_argument(
        "--vision-scales", nargs="*", type=int, metavar="K", help="window maps in Eq. 5 (Table 6; default all)"
    )
    m.add_argument("--fewshot-aggregation", default="same", choices=FEWSHOT_AGGREGATIONS, help="window distances")
    m.add_argument("--fewshot-fusion", default="mean", choices=FEWSHOT_FUSIONS, help="final few-shot map")
    m.add_argument("--patch-features", default="tokens", choices=PATCH_FEATURES, help="patch memories (M^P)")
    m.add_argument("--baseline", choices=BASELINE_CHOICES, help="a baseline instead of WinCLIP (Table 8, supplement)")
    add_model_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


def _view_options(args: argparse.Namespace) -> dict:
    resize = args.resize or ("tile" if args.dataset in TILED_DATASETS else "squash")
    return {"resize": resize, "tile_overlap": args.tile_overlap, "tile_reduce": args.tile_reduce}


def _method_options(args: argparse.Namespace) -> MethodOptions:
    return MethodOptions(
        temperature=args.temperature,
        scales=tuple(args.scales),
        image_scale=not args.no_image_scale,
        aggregation=args.aggregation,
        multi_crop=args.multi_crop,
        fewshot_score=args.fewshot_score,
        vision_scales=None if args.vision_scales is None else tuple(args.vision_scales),
        fewshot_aggregation=args.fewshot_aggregation,
        fewshot_fusion=args.fewshot_fusion,
        patch_features=args.patch_features,
        **_view_options(args),
    )


def run(args: argparse.Namespace) -> int:
    """Validate the dataset (exit 2 listing every problem) before building the model, then evaluate."""
    from ..paper.protocol import parse_resolution, plan_eval

    resolution = parse_resolution(args.eval_resolution)
    if args.ray and (args.table or args.baseline):
        raise ValueError("--ray encodes WinCLIP's own features: it does not go with --table or --baseline")
    if args.table:
        return _run_table(args, resolution)
    if args.baseline and args.baseline.startswith("patchcore") and 0 in args.shots:
        raise ValueError(f"--baseline {args.baseline} needs references: leave 0 out of --shots")
    plan = plan_eval(args.dataset, args.root, args.classes, args.shots, args.seeds)
    model = load_model(args, _method_options(args), prompts=args.prompts)
    if args.baseline:
        from ..paper.baselines import make_baseline

        model = make_baseline(args.baseline, model)
    n_images = sum(len(c.test) for c in plan.classes)
    print(
        f"eval: {args.dataset} at {args.root}: {len(plan.classes)} classes, {n_images} test images, "
        f"shots {' '.join(map(str, plan.shots))}, {plan.seeds} seeds, {len(plan.runs)} rows",
        file=sys.stderr,
    )
    return _evaluate(args, plan, model, resolution)


def _settings(args: argparse.Namespace, plan, model, resolution: int | None) -> list[tuple[str, str]]:
    opt = model.options
    tiles = (
        f" (overlap ≥ {opt.tile_overlap}, image score = {opt.tile_reduce} over tiles)" if opt.resize == "tile" else ""
    )
    vision = "all" if opt.vision_scales is None else " ".join(map(str, opt.vision_scales)) or "none"
    return [
        ("dataset", f"{args.dataset} ({args.root})"),
        ("classes", ", ".join(c.name for c in plan.classes)),
        ("shots / seeds", f"{' '.join(map(str, plan.shots))} / {plan.seeds} (zero-shot: one run)"),
        ("backbone", f"{model.info.name}, weights {model.info.pretrained or 'random'} ({model.info.weights_id})"),
        ("device / precision", f"{model.device} / {model.backbone.precision}"),
        ("method", model.method),
        ("scales / image scale", f"{' '.join(map(str, opt.scales))} / {'on' if opt.image_scale else 'off'}"),
        ("aggregation / prompts / temperature", f"{opt.aggregation} / {args.prompts} / {opt.temperature}"),
        ("multi-crop", "on (ten crops)" if opt.multi_crop else "off"),
        ("object names / task states", f"{args.object_names} / {'on' if args.task_states else 'off'}"),
        (
            "few-shot score / vision scales / aggregation / fusion / patch features",
            f"{opt.fewshot_score} / {vision} / {opt.fewshot_aggregation} / {opt.fewshot_fusion} / {opt.patch_features}",
        ),
        ("resize", opt.resize + tiles),
        ("evaluation resolution", "original" if resolution is None else f"{resolution}x{resolution}"),
    ]


def _evaluate(args: argparse.Namespace, plan, model, resolution: int | None) -> int:
    from ..paper.evaluate import evaluate

    with eval_encoder(args, model) as encoder:  # feature_cache.encode_files, or Ray workers
        result = evaluate(
            model,
            plan,
            args.out,
            cache=args.cache,
            resolution=resolution,
            progress=not args.no_progress,
            settings=_settings(args, plan, model, resolution),
            encoder=encoder,
            object_names=args.object_names,
            task_states=args.task_states,
        )
    for line in result.errors:
        print(f"winclip: warning: {line}", file=sys.stderr)
    computed = len(result.rows) - result.reused_rows
    per_image = f" ({result.encode_seconds / result.encoded:.3f} s/image)" if result.encoded else ""
    per_row = f" ({result.score_seconds / computed:.3f} s/row)" if computed else ""
    print(
        f"eval: {len(result.rows)} rows ({result.reused_rows} reused), {result.encoded} images encoded "
        f"in {result.encode_seconds:.1f} s{per_image}, rows scored in {result.score_seconds:.1f} s{per_row}; "
        f"wrote {result.out / 'summary.md'}, results.csv, scores.npz"
        + (", report.html" if (result.out / "report.html").is_file() else "")
    )
    return 0


def parse_backbones(specs: list[str] | None) -> list[tuple[str, str | None]] | None:
    """``NAME:TAG`` → (name, tag); tag 'none' = random weights."""
    if not specs:
        return None
    out = []
    for spec in specs:
        name, _, tag = spec.rpartition(":")
        if not name or not tag:
            raise ValueError(f"--table-backbones: {spec!r} is not NAME:TAG (e.g. ViT-B-16:openai, config.json:none)")
        out.append((name, None if tag.lower() == "none" else tag))
    return out


def _run_table(args: argparse.Namespace, resolution: int | None) -> int:
    from ..paper.protocol import plan_eval
    from ..paper.reproduce import run_table
    from ..paper.tables import TABLES

    table = TABLES[args.table]
    if args.table_backbones and args.table != "9":
        raise ValueError("--table-backbones goes with --table 9")
    plan = plan_eval(args.dataset, args.root, args.classes, table.shots_needed(), args.seeds)
    model = load_model(args, MethodOptions(**_view_options(args)))
    print(f"eval: table {args.table} ({table.title}) on {args.dataset}: {len(plan.classes)} classes", file=sys.stderr)
    done = run_table(
        args.table,
        plan,
        model,
        model_spec(args),
        args.out,
        cache=args.cache,
        resolution=resolution,
        progress=not args.no_progress,
        backbones=parse_backbones(args.table_backbones),
        timing_images=args.timing_images,
        object_names=args.object_names,
    )
    print(f"eval: table {args.table}: {sum(o.row.runs for o in done.outcomes)} rows run; wrote {done.path}")
    return 0
