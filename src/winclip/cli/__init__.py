"""`winclip` command line: argument parsing and output formatting only; the library computes.

Parsing imports nothing heavy (no torch, no open_clip): each subcommand module imports the
library inside its `run` function, so `winclip --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from .common import HelpFormatter

# Each subcommand lives in winclip/cli/<name>.py with `register(subparsers)`; the parser
# it adds sets `func(args) -> int` as its default. What they share is in winclip/cli/common.py,
# the typed requests they build from `args` in winclip/cli/requests.py.
SUBCOMMANDS: tuple[str, ...] = (
    "eval",
    "report",
    "profile",
    "precision",
    "predict",
    "watch",
    "serve",
    "weights",
    "export",
)


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
