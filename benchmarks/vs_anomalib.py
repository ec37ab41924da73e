"""winclip against anomalib's WinClip, timed alternately in one process: prints a table of ratios.

    /work/anomalib-venv/bin/python benchmarks/vs_anomalib.py                # batch 1 and 8, 1-shot
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        /work/anomalib-venv/bin/python benchmarks/vs_anomalib.py --batch 8    # capped to AVX2

anomalib is not a dependency of winclip: install it into its own environment (anomalib 2.7
pulls lightning, kornia and more), e.g. a venv whose `.pth` file adds winclip's site-packages,
and run this script with that Python and PYTHONPATH=src; without anomalib it says so and exits 0.

Both sides: ViT-B-16-plus-240 with the same seeded random weights (no download here; speed does
not depend on them), 1 reference image (WinCLIP+), a preprocessed batch of random 240x240 input,
scores and upsampled maps. anomalib: `WinClipModel(class_name, reference_images)(batch)`;
winclip: `WinCLIP.predict(batch)` with the default precision (auto, fp32 on the CPU without a
profile's evidence) and the fused path, and the baseline (open_clip's modules) for context. The
three take turns `--repeats` times after a warm-up; medians per image.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
import winclip  # noqa: E402
from winclip.backbones.precision import cpu_summary  # noqa: E402

BACKBONE = "ViT-B-16-plus-240"


def anomalib_model(reference: torch.Tensor) -> torch.nn.Module:
    """anomalib's WinClipModel with random weights (its module constant PRETRAINED set to None), seeded like ours."""
    from anomalib.models.image.winclip import torch_model

    torch_model.PRETRAINED = None  # open_clip's random init instead of a download
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch_model.WinClipModel(class_name="object", reference_images=reference)
    return model.eval()


def winclip_model(reference: torch.Tensor) -> tuple[winclip.WinCLIP, winclip.WinCLIP]:
    """winclip's default path and its baseline (open_clip's modules), the same weights, fitted to the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        model = winclip.WinCLIP(BACKBONE, None, device="cpu")
    model.set_object("object").fit(reference)
    base = winclip.WinCLIP(model.backbone.unfused()).set_prototypes(*model.prototypes_)
    return model, base.fit_features(model.encode(reference))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if importlib.util.find_spec("anomalib") is None:
        print("anomalib is not installed in this environment: nothing to compare (see the docstring)")
        return 0
    import anomalib

    print(cpu_summary())
    print(f"anomalib {anomalib.__version__}, winclip {winclip.__version__}, torch {torch.__version__}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    torch.manual_seed(1)
    reference = torch.randn(1, 3, 240, 240)
    peer = anomalib_model(reference)
    ours, base = winclip_model(reference)
    print(f"winclip: {ours.backbone.describe()}")
    runs = {
        "anomalib 2.7 WinClip": lambda x: peer(x),
        f"winclip ({ours.backbone.precision}, fused)": lambda x: ours.predict(x, batch_size=len(x)),
        "winclip baseline (open_clip modules)": lambda x: base.predict(x, batch_size=len(x)),
    }
    print(f"\n{'path':<38} {'batch':>5} {'ms/image':>9} {'x anomalib':>10}")
    for batch in args.batch:
        x = torch.randn(batch, 3, 240, 240)
        for run in runs.values():
            with torch.inference_mode():
                run(x[:1])  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    run(x)
                seconds[name].append((time.perf_counter() - start) / batch)
        peer_s = statistics.median(seconds["anomalib 2.7 WinClip"])
        for name, values in seconds.items():
            s = statistics.median(values)
            print(f"{name:<38} {batch:>5} {1000 * s:9.1f} {peer_s / s:10.2f}", flush=True)
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
