"""`winclip report`: write report.html of a finished `winclip eval` run again, encoding nothing.

Rebuild RUN_DIR/report.html (curves, histograms, the gallery of worst false positives and false negatives,
the summary tables) from results.csv, scores.npz, run.json, prototypes.safetensors and the run's feature
cache: the maps are scored again from cached features, without building a model. The masks and photos come
from the dataset the run names; when it has moved, the report keeps its image-level parts and says so.
"""

from __future__ import annotations

import argparse
import sys

from .common import add_command, count

GALLERY = 3  # report_data.GALLERY_SIZE, not imported from there: the command line parses without torch


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    p = add_command(subparsers, "report", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a finished winclip eval")
    p.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument(
        "--gallery",
        type=count(0, 1000),
        default=GALLERY,
        metavar="N",
        help="worst false positives / negatives per setting",
    )
    p.add_argument("--device", help="scores the maps again (default: the run's device when present, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the page; each note (a part left out and why) is one warning line."""
    from ..paper.report.page import write_report

    report = write_report(args.run_dir, args.out, device=args.device, gallery=args.gallery)
    for line in report.notes:
        print(f"winclip: warning: {line}", file=sys.stderr)
    print(f"report: {report.classes} classes; wrote {report.path}")
    return 0
