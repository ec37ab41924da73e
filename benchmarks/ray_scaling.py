"""What does Ray cost and give on this machine? `winclip predict` locally and on 1 and 2 Ray workers.

    python benchmarks/ray_scaling.py                                   # tiny random ViT, 160 photos
    python benchmarks/ray_scaling.py --backbone ViT-B-16-plus-240 --images 12 --repeats 1

Starts one loopback Ray head with all of this machine's CPUs (tests/ray_cluster.py), makes
synthetic photos, and runs the same command line, interleaved, `--repeats` times each:
locally (torch on every core), on 1 Ray worker holding every CPU, and on 2 workers of half
each. The command's own summary gives the seconds of the run itself (first result to last);
the rest of the wall time is start-up (imports, model loads on the driver or the workers).
Printed per setup (medians): images/s of the run, its ratio to the local run, ms per image and
the overhead per image against the local run, and the start-up seconds. Random weights: speed
does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers.ray_cluster import LocalCluster  # noqa: E402

TINY = str(ROOT / "tests" / "tiny-vit.json")
SUMMARY = re.compile(r"\(([\d.]+) s, ([\d.]+) images/s\)")


def make_photos(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        small = rng.random((size // 8, size // 8, 3))
        img = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
        img.save(folder / f"{i:04d}.png")


def run(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, run seconds) of one winclip command."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "winclip", *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    found = SUMMARY.findall(done.stderr)
    if not found:
        raise RuntimeError(f"no summary line in:\n{done.stderr[-3000:]}")
    return wall, float(found[-1][0])


def driver_cost(folder: Path, n: int = 200) -> tuple[float, int]:
    """(ms, bytes) per image on the driver: unpickling one photo's outcome and writing its files and rows.

    One driver process does this for the whole cluster, so 1000 / ms images/s is its ceiling.
    """
    from winclip import ModelSpec, build_model
    from winclip.inspection.folder_run import ResultWriter, header_record, inspect_items
    from winclip.inspection.inputs import discover
    from winclip.inspection.inspector import Inspector
    from winclip.inspection.profile import Profile

    model = build_model(ModelSpec(TINY, None, "cpu"))  # what the driver writes does not depend on the model
    inspector = Inspector(Profile.create(model, "widget"), model)
    outcome = next(inspect_items(inspector, discover([str(folder / "in")]).images[:1]))
    wire = pickle.dumps(outcome, protocol=5)
    with ResultWriter(folder / "driver", header_record(inspector, None, False), overwrite=True) as writer:
        start = time.perf_counter()
        for i in range(n):
            got = pickle.loads(wire)
            files = {f"{name.split('/')[0]}/{i}.png": data for name, data in got.files.items()}
            writer.write(dataclasses.replace(got, record={**got.record, "path": str(i)}, files=files))
        seconds = time.perf_counter() - start
    return seconds / n * 1000, len(wire)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=TINY, help="open_clip ViT name or config (random weights)")
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--size", type=int, default=256, help="photo side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    make_photos(folder / "in", args.images, args.size)
    model = ["--backbone", args.backbone, "--pretrained", "none", "--device", "cpu"]
    model += ["--batch-size", str(args.batch_size)]
    common = ["predict", str(folder / "in"), "--object", "widget", *model, "--no-progress", "--overwrite"]
    cluster = LocalCluster(cpus=cpus)
    setups = {
        "local": [],
        f"ray, 1 worker x {cpus} CPUs": ["--ray-workers", "1", "--ray-cpus-per-worker", str(cpus)],
        f"ray, 2 workers x {cpus / 2:g} CPUs": ["--ray-workers", "2", "--ray-cpus-per-worker", str(cpus / 2)],
    }
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    try:
        for _ in range(args.repeats):
            for name, extra in setups.items():
                where = [] if name == "local" else ["--ray", cluster.address, *extra]
                out = ["--out", str(folder / name.split(",")[0])]
                timings[name].append(run([*common, *out, *where], {**cluster.env, "HF_HUB_OFFLINE": "1"}))
    finally:
        cluster.stop()
    driver_ms, wire_bytes = driver_cost(folder)
    print(f"{Path(args.backbone).stem}, {args.images} photos of {args.size}x{args.size}, batch {args.batch_size}, "
          f"{cpus} CPUs, load {os.getloadavg()[0]:.1f}, medians of {args.repeats}")  # fmt: skip
    print("| setup | images/s | ratio | ms/image | overhead ms/image | start-up s |")
    print("|---|---|---|---|---|---|")
    base_ms = statistics.median(r for _, r in timings["local"]) / args.images * 1000
    for name, runs in timings.items():
        seconds = statistics.median(r for _, r in runs)
        startup = statistics.median(w - r for w, r in runs)
        ms = seconds / args.images * 1000
        print(f"| {name} | {args.images / seconds:.2f} | {base_ms / ms:.2f} | {ms:.1f} | {ms - base_ms:+.1f} "
              f"| {startup:.1f} |")  # fmt: skip
    print(f"driver: {driver_ms:.2f} ms/image to unpickle and write one photo's outcome ({wire_bytes / 1e3:.0f} kB), "
          f"a ceiling of {1000 / driver_ms:.0f} images/s for one driver")  # fmt: skip


if __name__ == "__main__":
    main()
