"""`winclip` command line: argument parsing and output formatting only; the library computes."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..backbone import PRECISION_CHOICES, RandomWeightsWarning, WeightsUnavailableError
from ..model import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, WinCLIP

# Each subcommand lives in winclip/cli/<name>.py with `register(subparsers)`; the parser
# it adds sets `func(args) -> int` as its default.
SUBCOMMANDS: tuple[str, ...] = ("eval", "profile", "predict", "serve")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every model-building subcommand shares."""
    g = parser.add_argument_group("model")
    g.add_argument("--backbone", default=DEFAULT_BACKBONE, help="open_clip ViT name or model-config .json (default: %(default)s)")
    g.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        metavar="TAG|FILE|none",
        help="open_clip pretrained tag, a local checkpoint file, or 'none' for random weights (default: %(default)s)",
    )
    g.add_argument("--cache-dir", default=None, help="open_clip / Hugging Face cache folder holding downloaded weights")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto = cuda when available)")
    g.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="auto = fp32 on the CPU, fp16 on CUDA (default: %(default)s)",
    )
    g.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")


def model_from_args(args: argparse.Namespace, **options: object) -> WinCLIP:
    """Build the model the shared options describe; says loudly when weights are random."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        model = WinCLIP(
            args.backbone,
            args.pretrained,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            **options,
        )
    if any(issubclass(w.category, RandomWeightsWarning) for w in caught):
        print("!" * 78 + "\n! RANDOM WEIGHTS (--pretrained none): every score and map below is MEANINGLESS\n" + "!" * 78, file=sys.stderr)
    print(
        f"winclip {__version__}: {model.info.name} ({model.info.pretrained or 'random'}) on {model.device}, {model.precision}, batch {model.batch_size}",
        file=sys.stderr,
    )
    return model


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="winclip",
        description="Zero- and few-shot visual anomaly classification and segmentation with CLIP (WinCLIP / WinCLIP+).",
    )
    parser.add_argument("--version", action="version", version=f"winclip {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `winclip` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as exc:
        print(f"winclip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("winclip: interrupted", file=sys.stderr)
        return 130

