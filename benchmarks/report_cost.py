"""What report.html costs on a VisA-sized class, against the evaluation's own scoring: prints a table.

    python benchmarks/report_cost.py [--images 200] [--size 1000 1500] [--shots 0 1] [--resolution 240]

One synthetic VisA-layout class (tests/synthetic.py; half good, half defective) is evaluated by
`winclip eval` with the tiny random-weight test ViT, then `winclip report` rebuilds the page from
the run alone. Each command runs in its own process, which reports its wall time and peak resident
memory (ru_maxrss); the eval's phases come from its own last line. The baseline is the eval's row
scoring (scores, maps and the exact pixel metrics), the work the report repeats per shown row.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "tiny-vit.json")


def child(argv: list[str]) -> None:
    """Run one winclip command in this process; print its wall time and peak RSS as JSON on the last line."""
    from winclip.cli import main

    start = time.perf_counter()
    status = main(argv)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"status": status, "seconds": seconds, "peak_mb": peak / 2**20}))


def measure(argv: list[str]) -> tuple[dict, str]:
    """One command in a fresh process: its JSON figures and everything it printed."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(argv)], capture_output=True, text=True, check=True
    ).stdout
    lines = out.strip().splitlines()
    figures = json.loads(lines[-1])
    if figures["status"] != 0:
        raise SystemExit(f"winclip {' '.join(argv)} exited {figures['status']}:\n{out}")
    return figures, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="test images (half good, half defective)")
    parser.add_argument("--size", type=int, nargs=2, default=(1000, 1500), metavar=("H", "W"))
    parser.add_argument("--shots", nargs="+", default=["0", "1"])
    parser.add_argument("--resolution", default="240", help="--eval-resolution")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.synthetic import make_visa

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        start = time.perf_counter()
        half = args.images // 2
        root = make_visa(base / "data", classes=("candle",), n_train=4, n_good=half, n_bad=half, size=tuple(args.size))
        made = time.perf_counter() - start
        common = ["--backbone", TINY, "--pretrained", "none", "--no-progress"]
        run = [
            "eval", "--dataset", "visa", "--root", str(root), "--out", str(base / "out"), "--shots", *args.shots,
            "--seeds", "1", "--eval-resolution", args.resolution, *common,
        ]  # fmt: skip
        ev, printed = measure(run)
        phases = re.search(r"in ([\d.]+) s .*rows scored in ([\d.]+) s", printed)
        encode, score = float(phases.group(1)), float(phases.group(2))
        rep, _ = measure(["report", str(base / "out")])
        page = (base / "out" / "report.html").stat().st_size
    h, w = args.size
    print(f"{args.images} test images of {w}x{h}, shots {' '.join(args.shots)}, eval resolution {args.resolution}")
    print(f"(dataset written in {made:.0f} s; report.html {page / 2**20:.2f} MB)\n")
    rows = [
        ("eval: decode + encode", encode, None),
        ("eval: row scoring + metrics (baseline)", score, None),
        ("eval: whole command, report included", ev["seconds"], ev["peak_mb"]),
        ("winclip report RUN_DIR", rep["seconds"], rep["peak_mb"]),
    ]
    print("| phase | seconds | x eval row scoring | peak RSS MB |")
    print("|---|---|---|---|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / score:.2f} | {'' if peak is None else f'{peak:.0f}'} |")


if __name__ == "__main__":
    main()
