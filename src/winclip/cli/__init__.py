"""`winclip` command line: argument parsing and output formatting only; the library computes.

Parsing imports nothing heavy (no torch, no open_clip): each subcommand module imports the
library inside its `run` function, so `winclip --help` answers at once.

Every command ends with one of the statuses in winclip.cli.common (EXIT_*): a refused input or
option is one line and status 2, a file that cannot be read or written (a full disk, no
permission, ...) one line and status 3, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from .common import EXIT_UNWRITABLE, EXIT_USAGE, HelpFormatter

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
        if isinstance(exc, usage_errors()):
            print(f"winclip: error: {exc}", file=sys.stderr)  # one line, or a list some errors make (layouts)
            return EXIT_USAGE
        if isinstance(exc, OSError):  # the file system: a full disk, no permission, a read-only folder, ...
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"winclip: error: cannot read or write {where}{exc.strerror or one_line(exc)}", file=sys.stderr)
            return EXIT_UNWRITABLE
        raise


def one_line(exc: Exception) -> str:
    """The first line of an error's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def usage_errors() -> tuple[type[Exception], ...]:
    """The library's one-line failures that end a command with status 2 (imported only once one happened)."""
    from ..backbones.weights.locate import WeightsUnavailableError

    return (FileNotFoundError, ValueError, WeightsUnavailableError)
