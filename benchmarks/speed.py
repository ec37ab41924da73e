"""Time per image of WinCLIP (zero-shot) and WinCLIP+ (few-shot): prints a table.

    python benchmarks/speed.py --batch 1 8 --shots 0 1

Random weights (speed does not depend on them); scoring and upsampling included.
Ratios are against the first configuration's fp32 row measured in this same process.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch

import winclip


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_predict(model: winclip.WinCLIP, batch: int, repeats: int) -> float:
    """Best-of-`repeats` seconds per image for one batch of preprocessed images."""
    x = torch.randn(batch, 3, *model.info.image_size)
    model.predict(x, batch_size=batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.predict(x, batch_size=batch)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=winclip.DEFAULT_BACKBONE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone {args.backbone}")
    print(f"{'device':>6} {'prec':>5} {'batch':>5} {'shots':>5} {'img/s':>8} {'ms/img':>9} {'peak MB':>8} {'ratio':>6}")
    baseline: dict[tuple[int, int], float] = {}
    for precision in args.precision:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
            model = winclip.WinCLIP(args.backbone, None, device=args.device, precision=precision)
        model.set_prototypes(torch.randn(model.embed_dim), torch.randn(model.embed_dim))
        for shots in args.shots:
            model.fit(torch.randn(shots, 3, *model.info.image_size) if shots else None)
            for batch in args.batch:
                sec = time_predict(model, batch, args.repeats)
                base = baseline.setdefault((shots, batch), sec)
                print(
                    f"{model.device.type:>6} {precision:>5} {batch:>5} {shots:>5} {1 / sec:8.2f} "
                    f"{1000 * sec:9.1f} {peak_rss_mb():8.0f} {base / sec:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
