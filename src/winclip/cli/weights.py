"""`winclip weights`: where the weights come from, and carrying them to an offline machine.

`where` says what loading --backbone/--pretrained would read on this machine (file, how it was found, format,
sha256, activation, mean/std), downloading nothing; exit 1 when the weights are not here. `fetch` downloads, on a
connected machine, the files open_clip would load into --out (a cache layout) and records them with their sha256 in
winclip-weights.json; copy the folder and pass --cache-dir FOLDER offline. `verify FOLDER` checks every recorded
file's size and sha256 (exit 1 on any difference; 2 for a malformed, empty or outward-pointing manifest).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..options import DEFAULT_BACKBONE, DEFAULT_PRETRAINED
from .common import EXIT_FAILED, PRETRAINED_HELP, HelpFormatter, add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `weights` and its three verbs."""
    p = add_command(subparsers, "weights", __doc__)
    verbs = p.add_subparsers(title="verbs", metavar="VERB", required=True)

    def verb(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
        v.set_defaults(func=func)
        return v

    for name, help, func in (
        ("where", "what would be loaded, from where, and its sha256 (downloads nothing)", run_where),
        ("fetch", "download the weights into a folder (or the cache) and record their sha256", run_fetch),
    ):
        v = verb(name, help, func)
        v.add_argument("--backbone", default=DEFAULT_BACKBONE, help="open_clip ViT name or model-config .json")
        v.add_argument("--pretrained", default=DEFAULT_PRETRAINED, metavar="TAG|hf-hub:ORG/REPO", help=PRETRAINED_HELP)
        if name == "where":
            v.add_argument("--cache-dir", help="cache folder to look in (e.g. a copied `fetch` folder)")
        else:
            v.add_argument("--out", help="folder to download into (default: the Hugging Face / open_clip cache)")
    v = verb("verify", "check a fetched folder's files against the sha256 recorded by fetch", run_verify)
    v.add_argument("folder", help="folder written by `winclip weights fetch --out`")


def run_where(args: argparse.Namespace) -> int:
    """Print what would be loaded; 1 when it is not on this machine."""
    from ..backbones.weights.carry import where

    found = where(args.backbone, args.pretrained, args.cache_dir)
    for label, value in found.lines:
        print(f"{label:<11} {value}")
    return 0 if found.found else EXIT_FAILED


def run_fetch(args: argparse.Namespace) -> int:
    """Download, record, print the manifest entry."""
    from ..backbones.weights.carry import fetch

    path, entry = fetch(args.backbone, args.pretrained, args.out)
    for rec in entry["files"]:
        print(f"{rec['sha256']}  {rec['bytes']:>13,}  {rec['path']}")
    print(
        f"fetched {entry['backbone']}/{entry['pretrained']} from {entry['source']}; recorded in {path}", file=sys.stderr
    )
    if args.out:
        print(
            f"offline: copy {args.out} and pass --cache-dir {args.out} (check it with winclip weights verify)",
            file=sys.stderr,
        )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """One line per recorded file; 1 when any is missing or differs."""
    from ..backbones.weights.carry import verify

    results = verify(args.folder)
    for path, status in results:
        print(f"{status:<6} {path}" if status == "ok" else f"{path}: {status}")
    bad = sum(status != "ok" for _, status in results)
    print(f"verify: {len(results) - bad} of {len(results)} files match", file=sys.stderr)
    return EXIT_FAILED if bad else 0
