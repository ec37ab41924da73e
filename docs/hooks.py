"""mkdocs hook: the command-line reference rendered from winclip's own parsers.

`on_files` adds `cli.md`, rendered by `cli_markdown` from `winclip.cli.build_parser()` (which imports
no torch), so the reference is the parsers' own help and cannot drift from them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100  # columns of the rendered help


def commands(parser: argparse.ArgumentParser, depth: int = 1) -> Iterator[tuple[int, argparse.ArgumentParser]]:
    """Every subcommand's parser under `parser`, depth first, with its depth (1 = `winclip X`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield depth, sub
                yield from commands(sub, depth + 1)


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """The reference page: each command's description and its `--help` as argparse prints it."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to the terminal's width
    try:
        lines = [
            "# Command line reference",
            "",
            "Rendered from the parsers themselves (`winclip.cli.build_parser()`) when the site is built: each "
            "section is what `--help` prints. The [inspection workflow](workflow.md) shows the commands in use.",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
            "",
        ]
        for depth, sub in commands(parser):
            lines += [f"{'#' * (depth + 1)} `{sub.prog}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """mkdocs' hook: add the generated reference."""
    from mkdocs.structure.files import File

    sys.path.insert(0, str(ROOT / "src"))
    from winclip.cli import build_parser

    files.append(File.generated(config, "cli.md", content=cli_markdown(build_parser())))
    return files
