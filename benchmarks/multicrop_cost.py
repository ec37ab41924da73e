"""What multi-crop costs: encoding time per image with and without the ten crops, in one process, per runtime.

    python benchmarks/multicrop_cost.py                       # ViT-B-16-plus-240, random weights, CPU, PyTorch
    python benchmarks/multicrop_cost.py --runtimes torch onnxruntime openvino   # + the exported graphs
    python benchmarks/multicrop_cost.py --backbone tests/tiny-vit.json --images 8 --repeats 5

Encodes the same decoded images with `multi_crop` off and on (the paper's ten crops through the
plain forward, docs/method.md §3), the runs taking turns `--repeats` times so a change of load on a
shared machine touches all alike, and prints a table per runtime: seconds per image (median over
repeats) and the ratio to that runtime's run without multi-crop. The exported runtimes run an
export of the same weights made into a temporary folder: the crops go through its image-only
graph (class token of the full view, no windows). Weights do not change the cost, so random
ones (no download) are the default.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from winclip import RandomWeightsWarning, WinCLIP  # noqa: E402
from winclip.backbones.export import export_backbone  # noqa: E402
from winclip.backbones.precision import cpu_summary  # noqa: E402


def photos(n: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    small = [rng.random((size[0] // 16, size[1] // 16, 3)) for _ in range(n)]
    return [Image.fromarray((s * 255).astype(np.uint8)).resize(size[::-1], Image.Resampling.BILINEAR) for s in small]


def model(args: argparse.Namespace, runtime: str, export_dir: Path) -> WinCLIP:
    """The plain (no multi-crop) model of `runtime`: PyTorch, or the export of the same weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        if runtime == "torch":
            return WinCLIP(args.backbone, None, device=args.device, batch_size=args.batch_size)
        folder = export_dir / ("onnx" if runtime == "onnxruntime" else "openvino")
        if not folder.exists():
            torch_model = WinCLIP(args.backbone, None, device="cpu", precision="fp32")
            export_backbone(torch_model.backbone, folder, folder.name)
        plain = WinCLIP(args.backbone, None, runtime=runtime, export_dir=str(folder), batch_size=args.batch_size)
    return plain.set_prototypes(*torch.randn(2, plain.backbone.embed_dim, generator=torch.Generator().manual_seed(0)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8, help="images per encoding call (one batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runtimes", nargs="+", default=["torch"], choices=["torch", "onnxruntime", "openvino"])
    args = parser.parse_args()
    images = photos(args.images, (480, 640))
    runs: dict[tuple[str, str], Callable[[], object]] = {}
    with tempfile.TemporaryDirectory(prefix="winclip-multicrop-") as tmp:
        for runtime in args.runtimes:
            plain = model(args, runtime, Path(tmp))
            multi = plain.with_options(multi_crop=True)
            runs[runtime, "WinCLIP features"] = lambda p=plain: p.encode_images(images)
            runs[runtime, "+ multi-crop"] = lambda m=multi: m.encode_images(images)
            runs[runtime, "ten crops alone"] = lambda m=multi: m.encode_crops(images)
        for run in runs.values():  # warm-up
            run()
        seconds: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[key].append((time.perf_counter() - start) / len(images))
    print(cpu_summary())
    print(f"{args.backbone} on {args.device}, {len(images)} images of 640x480, batch {args.batch_size}")
    print(f"{'runtime':<12} {'encoding':<20} {'s/image':>9} {'ratio':>7}")
    for (runtime, name), values in seconds.items():
        base = statistics.median(seconds[runtime, "WinCLIP features"])
        print(f"{runtime:<12} {name:<20} {statistics.median(values):>9.3f} {statistics.median(values) / base:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
