"""`winclip` command line: argument parsing and output formatting only; the library computes.

Parsing imports nothing heavy (no torch, no open_clip): each subcommand module imports the
library inside its `run` function, so `winclip --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..options import (
    DEFAULT_BACKBONE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PRETRAINED,
    PRECISION_CHOICES,
    RUNTIME_CHOICES,
    ModelSpec,
)

# Each subcommand lives in winclip/cli/<name>.py with `register(subparsers)`; the parser
# it adds sets `func(args) -> int` as its default.
SUBCOMMANDS: tuple[str, ...] = ("eval", "report", "profile", "predict", "serve", "weights", "export")


PRETRAINED_HELP = (
    "open_clip pretrained tag, hf-hub:ORG/REPO, local-dir:FOLDER, a local checkpoint file, or 'none' for random weights"
)
PRECISION_HELP = "auto = bf16 on CPUs with native bf16 where its measured fidelity holds, else fp32; fp16 on CUDA"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, except when there is no default to tell."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def add_command(subparsers: argparse._SubParsersAction, name: str, doc: str) -> argparse.ArgumentParser:
    """A subcommand documented by its module's docstring: the first line (after "`winclip x`: ") is its
    one-line help, the paragraphs after it its description."""
    summary, _, rest = doc.partition("\n\n")
    short = summary.split(": ", 1)[-1].rstrip(".")
    return subparsers.add_parser(
        name, help=short, description=" ".join(rest.split()) or short, formatter_class=HelpFormatter
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every model-building subcommand shares."""
    g = parser.add_argument_group("model")
    g.add_argument("--backbone", default=DEFAULT_BACKBONE, help="open_clip ViT name or model-config .json")
    g.add_argument("--pretrained", default=DEFAULT_PRETRAINED, metavar="TAG|FILE|none", help=PRETRAINED_HELP)
    g.add_argument("--cache-dir", help="open_clip / Hugging Face cache folder holding downloaded weights")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto = cuda when available)")
    g.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per forward pass")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--runtime and --export-dir: run an exported vision tower (`winclip export`) instead of PyTorch's."""
    g = parser.add_argument_group("runtime (an exported model; text prototypes come from the profile)")
    g.add_argument("--runtime", default="torch", choices=RUNTIME_CHOICES, help="what runs the vision tower")
    g.add_argument("--export-dir", metavar="DIR", help="folder written by `winclip export` (with --runtime)")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The weights the shared model options ask for (and the runtime, where the command has one)."""
    runtime, export_dir = getattr(args, "runtime", "torch"), getattr(args, "export_dir", None)
    return ModelSpec(args.backbone, args.pretrained, args.device, args.precision, args.cache_dir, runtime, export_dir)


def load_model(args: argparse.Namespace, options=None, *, prompts: str = "winclip"):
    """Build the model the shared options describe (winclip.build_model) and print the banner to stderr."""
    from ..backbones.openclip import RandomWeightsWarning
    from ..model import banner, build_model

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the banner says it louder
        model = build_model(model_spec(args), options, batch_size=args.batch_size, prompts=prompts)
    print(banner(model), file=sys.stderr)
    return model


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="winclip",
        description="Zero- and few-shot visual anomaly classification and segmentation with CLIP (WinCLIP / WinCLIP+).",
        formatter_class=HelpFormatter,
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
    except KeyboardInterrupt:
        print("winclip: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, usage_errors()):
            raise
        print(f"winclip: error: {exc}", file=sys.stderr)
        return 2


def usage_errors() -> tuple[type[Exception], ...]:
    """The library's one-line failures that end a command with status 2 (imported only once one happened)."""
    from ..backbones.weights.locate import WeightsUnavailableError

    return (FileNotFoundError, ValueError, WeightsUnavailableError)
