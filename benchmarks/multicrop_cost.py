"""What multi-crop costs: encoding time per image with and without the ten crops, in one process.

    python benchmarks/multicrop_cost.py                       # ViT-B-16-plus-240, random weights, CPU
    python benchmarks/multicrop_cost.py --backbone tests/tiny-vit.json --images 8 --repeats 5

Encodes the same decoded images with `multi_crop` off and on (the paper's ten crops through the
plain forward, docs/method.md §3), the two taking turns `--repeats` times so a change of load on a shared
machine touches both alike, and prints a table: seconds per image (median over repeats) and the
ratio to the run without multi-crop. Weights do not change the cost, so random ones (no download)
are the default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from winclip import RandomWeightsWarning, WinCLIP  # noqa: E402
from winclip.paper.reproduce import cpu_name  # noqa: E402


def photos(n: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    small = [rng.random((size[0] // 16, size[1] // 16, 3)) for _ in range(n)]
    return [Image.fromarray((s * 255).astype(np.uint8)).resize(size[::-1], Image.Resampling.BILINEAR) for s in small]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8, help="images per encoding call (one batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        plain = WinCLIP(args.backbone, None, device=args.device, batch_size=args.batch_size)
    multi = plain.with_options(multi_crop=True)
    images = photos(args.images, (480, 640))
    runs = {
        "WinCLIP features": lambda: plain.encode_images(images),
        "+ multi-crop": lambda: multi.encode_images(images),
    }
    runs["ten crops alone"] = lambda: multi.encode_crops(images)
    for run in runs.values():  # warm-up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[name].append((time.perf_counter() - start) / len(images))
    base = statistics.median(seconds["WinCLIP features"])
    print(
        f"{plain.info.name} on {args.device} ({cpu_name()}), {len(images)} images of 640x480, batch {args.batch_size}"
    )
    print(f"{'encoding':<20} {'s/image':>9} {'ratio':>7}")
    for name, values in seconds.items():
        print(f"{name:<20} {statistics.median(values):>9.3f} {statistics.median(values) / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
