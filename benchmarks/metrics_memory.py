"""Peak memory and time of PixelMetricAccumulator on VisA-sized input (random maps, random blob masks).

    python benchmarks/metrics_memory.py [--images 220 2200] [--size 240] [--batch 32]

Each image count runs in a fresh process. Printed per row: pixels, seconds in
update / compute, the peak resident memory above the process's baseline after
imports (ru_maxrss) and per pixel, and tracemalloc's peak of allocated buffers
(an upper bound: it counts the merge target and the storage blocks in full,
although pages are touched only as blocks are filled and freed as they are merged).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from winclip.metrics import PixelMetricAccumulator


def _batch(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 maps and blob masks (thresholded smooth noise); every other image is normal."""
    noise = ndimage.gaussian_filter(rng.random((n, size, size), dtype=np.float32), sigma=(0, 6, 6))
    masks = noise > np.quantile(noise, 0.97)
    masks[::2] = False
    maps = rng.random((n, size, size), dtype=np.float32) + 0.2 * masks
    return maps, masks


def run(n_images: int, size: int, batch: int) -> dict[str, float]:
    """Feed n_images in batches and compute; returns pixels, timings and peaks."""
    rng = np.random.default_rng(0)
    acc = PixelMetricAccumulator()
    baseline = _max_rss()
    tracemalloc.start()
    t_update = 0.0
    for start in range(0, n_images, batch):
        maps, masks = _batch(rng, min(batch, n_images - start), size)
        t0 = time.perf_counter()
        acc.update(maps, masks)
        t_update += time.perf_counter() - t0
    t0 = time.perf_counter()
    acc.compute()
    t_compute = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pixels = n_images * size * size
    return {
        "pixels": pixels,
        "update_s": t_update,
        "compute_s": t_compute,
        "rss_mb": (_max_rss() - baseline) / 2**20,
        "rss_bytes_per_pixel": (_max_rss() - baseline) / pixels,
        "traced_mb": peak / 2**20,
    }


def _max_rss() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[220, 2200])
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--row", action="store_true", help="measure one image count in this process, print its row")
    args = parser.parse_args()
    if args.row:
        r = run(args.images[0], args.size, args.batch)
        print(
            f"{args.images[0]:>7} {r['pixels']:>12,} {r['update_s']:>9.1f} {r['compute_s']:>10.1f} "
            f"{r['rss_mb']:>9.0f} {r['rss_bytes_per_pixel']:>8.2f} {r['traced_mb']:>10.0f}",
            flush=True,
        )
        return
    header = ("images", "pixels", "update s", "compute s", "+RSS MB", "B/pixel", "traced MB")
    print("{:>7} {:>12} {:>9} {:>10} {:>9} {:>8} {:>10}".format(*header), flush=True)
    for n in args.images:
        options = ["--images", str(n), "--size", str(args.size), "--batch", str(args.batch)]
        subprocess.run([sys.executable, __file__, "--row", *options], check=True)


if __name__ == "__main__":
    main()
