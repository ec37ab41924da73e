"""`winclip eval`: evaluate every class x shots x seed of a dataset and compare with the paper.

Evaluate zero-shot WinCLIP and few-shot WinCLIP+ on a dataset: writes results.csv, scores.npz, summary.md
(the paper's Table 1 / Table 4 layouts with its figures alongside) and report.html into --out. Features are
cached by file content, so reruns and scoring ablations encode nothing, and an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys

from ..data import LAYOUTS
from ..options import AGGREGATIONS, DEFAULT_EVAL_RESOLUTION, DEFAULT_SEEDS, DEFAULT_SHOTS, RESIZE_MODES, MethodOptions
from ..prompts import PROMPT_SETS
from . import add_command, add_model_options, load_model
from .cluster import add_ray_options, eval_encoder

RESOLUTION_HELP = "square size of the pixel metrics, or 'original' (~8 bytes per pixel of a class's test set in memory)"


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
    m = p.add_argument_group("method (the paper's ablations)")
    m.add_argument("--scales", nargs="+", type=int, default=[2, 3], metavar="K", help="window sizes in patches")
    m.add_argument("--no-image-scale", action="store_true", help="leave the image score out of the zero-shot map")
    m.add_argument("--aggregation", default="harmonic", choices=AGGREGATIONS, help="window scores onto patches (Eq. 3)")
    m.add_argument("--prompts", default="winclip", choices=sorted(PROMPT_SETS), help="prompt set")
    m.add_argument("--temperature", type=float, default=0.07, help="τ of Eq. 1")
    m.add_argument("--resize", default="squash", choices=RESIZE_MODES, help="non-square images")
    m.add_argument("--tile-overlap", type=float, default=0.25, help="with --resize tile")
    add_model_options(p)
    add_ray_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the dataset (exit 2 listing every problem) before building the model, then evaluate."""
    from ..evaluate import evaluate, parse_resolution, plan_eval

    resolution = parse_resolution(args.eval_resolution)
    plan = plan_eval(args.dataset, args.root, args.classes, args.shots, args.seeds)
    options = MethodOptions(
        temperature=args.temperature,
        scales=tuple(args.scales),
        image_scale=not args.no_image_scale,
        aggregation=args.aggregation,
        resize=args.resize,
        tile_overlap=args.tile_overlap,
    )
    model = load_model(args, options, prompts=args.prompts)
    n_images = sum(len(c.test) for c in plan.classes)
    print(
        f"eval: {args.dataset} at {args.root}: {len(plan.classes)} classes, {n_images} test images, "
        f"shots {' '.join(map(str, plan.shots))}, {plan.seeds} seeds, {len(plan.runs)} rows",
        file=sys.stderr,
    )
    settings = [
        ("dataset", f"{args.dataset} ({args.root})"),
        ("classes", ", ".join(c.name for c in plan.classes)),
        ("shots / seeds", f"{' '.join(map(str, plan.shots))} / {plan.seeds} (zero-shot: one run)"),
        ("backbone", f"{model.info.name}, weights {model.info.pretrained or 'random'} ({model.info.weights_id})"),
        ("device / precision", f"{model.device} / {model.backbone.precision}"),
        (
            "scales / image scale",
            f"{' '.join(map(str, model.options.scales))} / {'on' if model.options.image_scale else 'off'}",
        ),
        (
            "aggregation / prompts / temperature",
            f"{model.options.aggregation} / {args.prompts} / {model.options.temperature}",
        ),
        (
            "resize",
            model.options.resize
            + (f" (overlap {model.options.tile_overlap})" if model.options.resize == "tile" else ""),
        ),
        ("evaluation resolution", "original" if resolution is None else f"{resolution}x{resolution}"),
    ]
    with eval_encoder(args, model, options) as encoder:  # feature_cache.encode_files, or Ray workers with --ray
        result = evaluate(
            model, plan, args.out, cache=args.cache, resolution=resolution, progress=not args.no_progress,
            settings=settings, encoder=encoder,
        )  # fmt: skip
    for line in result.errors:
        print(f"winclip: warning: {line}", file=sys.stderr)
    computed = len(result.rows) - result.reused_rows
    per_image = f" ({result.encode_seconds / result.encoded:.3f} s/image)" if result.encoded else ""
    per_row = f" ({result.score_seconds / computed:.3f} s/row)" if computed else ""
    print(
        f"eval: {len(result.rows)} rows ({result.reused_rows} reused), {result.encoded} images encoded "
        f"in {result.encode_seconds:.1f} s{per_image}, rows scored in {result.score_seconds:.1f} s{per_row}; "
        f"wrote {result.out / 'summary.md'}, results.csv, scores.npz, report.html"
    )
    return 0
