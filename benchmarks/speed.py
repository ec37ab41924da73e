"""Speed, memory and fidelity of WinCLIP+ (few-shot) and WinCLIP (zero-shot) on every path: prints tables.

    python benchmarks/speed.py                                  # CPU: every path this machine offers, batch 1 and 8
    python benchmarks/speed.py --precision fp32 --runtimes --batch 8   # the baseline and the fused fp32 path only
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/speed.py                              # the same, capped to AVX2 (see the CPU line)
    python benchmarks/speed.py --device cuda --precision fp32 bf16 fp16 --batch 1 64
    python benchmarks/speed.py --batch 1 --fidelity-images 0 --profile-batch 1   # + top operators

Random weights (speed does not depend on them); preprocessed input at the backbone's size;
scoring and upsampling included. The baseline is the fp32 forward through open_clip's own
modules (`Backbone.unfused()`). Every other path is timed interleaved with it in this same
process, several rounds, medians, so the ratios hold on a noisy shared machine: the fused fp32
path (its products through the kernels measured fastest on this CPU, winclip.backbones.kernels),
the fused path with every product on oneDNN (the choice before that measurement), the fused
path at each other --precision, and the exported runtimes (the same weights exported by
`winclip export` into a temporary folder): ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16
(native bf16 only) and OpenVINO int8 (NNCF, calibrated on textured "good" images, or
--int8-export). Fidelity: each path against the baseline on textured images, 1-shot: Spearman
of image scores and the largest map difference relative to the map's maximum (the evidence
proper is per profile, `winclip precision check`; benchmarks/precision.py measures 64 images).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

import winclip
from winclip.backbones.export import export_backbone
from winclip.backbones.kernels import MEASURE_ROWS, KernelChoice, fastest, time_candidates
from winclip.backbones.precision import cpu_summary, native_bf16, resolve_precision
from winclip.backbones.quantize import quantize_export
from winclip.backbones.tower import Matmuls, VisionTower, tower_products
from winclip.options import PRECISION_CHOICES

TINY = str(Path(__file__).resolve().parent.parent / "tests" / "tiny-vit.json")
RUNTIMES = ("onnxruntime", "openvino")


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator, or the process's RSS high-water mark on Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak stays the process's lifetime peak


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_mb(device: torch.device) -> float:
    """Memory in use now, MB: CUDA allocated, else resident set size."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _status_mb("VmRSS") or 0.0


def peak_mb(device: torch.device) -> float:
    """Peak memory since reset_peak, MB: CUDA allocated, else resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def textured(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random RGB image (as tests/conftest.py makes them)."""
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    return Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)


class LazyImages(Sequence):
    """`count` textured images made on access, so that only what the consumer holds stays in memory."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Image.Image:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return textured(np.random.default_rng(i), self.size, self.size)


def build(
    backbone: str, device: str, precision: str, *, runtime: str = "torch", export_dir: str | None = None
) -> winclip.WinCLIP:
    """A random-weight model with seeded random text prototypes (the same for every precision and runtime)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        model = winclip.WinCLIP(
            backbone, None, device=device, precision=precision, runtime=runtime, export_dir=export_dir
        )
    protos = torch.randn(2, model.backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    return model.set_prototypes(protos[0], protos[1])


def time_predict(model: winclip.WinCLIP, x: torch.Tensor) -> tuple[float, float]:
    """Seconds per image and peak memory above what was in use before (MB) of one predict over `x`."""
    before = current_mb(model.device)
    reset_peak(model.device)
    synchronize(model.device)
    start = time.perf_counter()
    model.predict(x, batch_size=len(x))
    synchronize(model.device)
    return (time.perf_counter() - start) / len(x), max(0.0, peak_mb(model.device) - before)  # under an old peak: 0


def fidelity(model: winclip.WinCLIP, reference: winclip.Prediction, images: list) -> tuple[float, float]:
    """Spearman of image scores and max |map - reference map| / max |reference map| over the images."""
    got = model.predict(images, batch_size=len(images))
    rho = float(spearmanr(reference.scores.numpy(), got.scores.numpy()).statistic)
    rel = max(((m - r).abs().max() / r.abs().max()).item() for m, r in zip(got.maps, reference.maps, strict=True))
    return rho, rel


@dataclass
class Contender:
    """One timed path: a row label (path, precision) and its model."""

    path: str
    prec: str
    model: winclip.WinCLIP


def all_onednn(model: winclip.WinCLIP) -> winclip.WinCLIP:
    """The same weights through the fused path with every fp32 product on oneDNN (the choice before issue 23)."""
    backbone = copy.copy(model.backbone)
    backbone.tower = VisionTower(backbone.clip.visual)
    products = tower_products(backbone.clip.visual)
    backbone.tower.matmuls = Matmuls(
        kernels=KernelChoice({p.key: "onednn-gelu" if p.gelu else "onednn" for p in products}, "forced")
    )
    return winclip.WinCLIP(backbone).set_prototypes(*model.prototypes_)


def int8_export(args: argparse.Namespace, fast32: winclip.WinCLIP, folder: Path) -> Path:
    """--int8-export, or the fp32 OpenVINO export quantized by NNCF on textured "good" images."""
    if args.int8_export:
        return Path(args.int8_export)
    export_backbone(fast32.backbone, folder / "openvino", "openvino")
    rng = np.random.default_rng(1)
    size = fast32.info.image_size
    good = [fast32.backbone.preprocess(textured(rng, *size)) for _ in range(args.calibration_images)]
    start = time.perf_counter()
    quantize_export(folder / "openvino", folder / "int8", good)
    print(f"int8: NNCF on {len(good)} textured images, {time.perf_counter() - start:.0f} s", flush=True)
    return folder / "int8"


def contenders(args: argparse.Namespace, fast32: winclip.WinCLIP, export_dir: Path) -> list[Contender]:
    """The baseline, the fused paths, and each --runtimes export at each precision it runs here."""
    base = winclip.WinCLIP(fast32.backbone.unfused())  # the same weights through open_clip's own modules
    rows = [Contender("baseline", "fp32", base.set_prototypes(*fast32.prototypes_))]
    rows.append(Contender("fused", "fp32", fast32))
    cpu = fast32.device.type == "cpu"
    if cpu and args.onednn_row:
        rows.append(Contender("fused-onednn", "fp32", all_onednn(fast32)))
    resolved = {resolve_precision(p, base.device).value for p in args.precision} - {"fp32"}
    for precision in sorted(resolved):
        rows.append(Contender("fused", precision, build(args.backbone, args.device, precision)))
    if args.runtimes:
        export_backbone(fast32.backbone, export_dir / "onnx", "onnx")
    for runtime in args.runtimes:
        precisions = ["fp32"] + (["bf16"] if runtime == "openvino" and (native_bf16() or "bf16" in resolved) else [])
        for precision in precisions:
            model = build(args.backbone, "cpu", precision, runtime=runtime, export_dir=str(export_dir / "onnx"))
            rows.append(Contender(runtime, precision, model))
        if runtime == "openvino" and args.int8 and importlib.util.find_spec("nncf"):
            folder = str(int8_export(args, fast32, export_dir))
            model = build(args.backbone, "cpu", "int8", runtime=runtime, export_dir=folder)
            rows.append(Contender(runtime, "int8", model))
    return rows


def speed_table(args: argparse.Namespace, export_dir: Path) -> winclip.WinCLIP:
    """Time the baseline and every path, interleaved; returns the fused fp32 model."""
    rng = np.random.default_rng(0)
    fast32 = build(args.backbone, args.device, "fp32")
    size = fast32.info.image_size
    print(cpu_summary())
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    print(f"backbone {args.backbone}, device {fast32.device}" + (
        f" ({torch.cuda.get_device_name(fast32.device)})" if fast32.device.type == "cuda" else ""
    ))  # fmt: skip
    tower = fast32.backbone.tower
    kernels = tower.matmuls.kernels
    print(f"fast path: {'fused' if tower.fused else 'fallback: ' + str(tower.fallback_reason)}; "
          f"{kernels.summary() if kernels else 'products: ATen'}")  # fmt: skip
    rows = contenders(args, fast32, export_dir)
    base = rows[0].model
    images = [textured(rng, *size) for _ in range(args.fidelity_images)]
    references = [textured(rng, *size)]
    fid = {}
    if args.fidelity_images:
        ref_pred = base.fit(references).predict(images, batch_size=len(images))
        for i, row in enumerate(rows[1:], 1):
            fid[i] = fidelity(row.model.fit(references), ref_pred, images)
    torch.manual_seed(0)
    shot_sets = {k: torch.randn(k, 3, *size) for k in args.shots if k}
    inputs = {b: torch.randn(b, 3, *size) for b in args.batch}
    print(
        f"\n{'device':>6} {'path':>12} {'prec':>5} {'batch':>5} {'shots':>5} {'img/s':>8} {'ms/img':>9} "
        f"{'+peak MB':>8} {'ratio':>6} {'x fused':>7} {'spearman':>9} {'max rel map':>11}",
        flush=True,
    )
    for shots in args.shots:
        for row in rows:
            row.model.fit(shot_sets.get(shots))
        for batch in args.batch:
            timed = time_interleaved([row.model for row in rows], inputs[batch], args.repeats)
            for i, row in enumerate(rows):
                sec, mb = timed[i]
                rho, rel = fid.get(i, (1.0, 0.0))
                print(
                    f"{row.model.device.type:>6} {row.path:>12} {row.prec:>5} {batch:>5} {shots:>5} {1 / sec:8.3f} "
                    f"{1000 * sec:9.1f} {mb:8.0f} {timed[0][0] / sec:6.2f} {timed[1][0] / sec:7.2f} {rho:9.4f} "
                    f"{rel:11.2e}",
                    flush=True,
                )
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    return fast32


def time_interleaved(models: list[winclip.WinCLIP], x: torch.Tensor, repeats: int) -> list[tuple[float, float]]:
    """Median seconds per image and largest +peak MB of each model over `repeats` rounds, the models taking turns."""
    for model in models:
        time_predict(model, x[:1])  # warm-up (plans, kernels, compiled runtimes)
    seconds: list[list[float]] = [[] for _ in models]
    peaks = [0.0] * len(models)
    for _ in range(repeats):  # interleaved, so every path sees the same machine load
        for i, model in enumerate(models):
            sec, mb = time_predict(model, x)
            seconds[i].append(sec)
            peaks[i] = max(peaks[i], mb)
    return [(statistics.median(s), mb) for s, mb in zip(seconds, peaks, strict=True)]


def nn_table(model: winclip.WinCLIP, shots: list[int], repeats: int) -> None:
    """Time of model.score (nearest neighbours over K references + fusion) vs encode, one image."""
    size = model.info.image_size
    x = torch.randn(1, 3, *size)
    model.encode(x)
    encode = float("inf")
    for _ in range(repeats):
        synchronize(model.device)
        start = time.perf_counter()
        feats = model.encode(x)
        synchronize(model.device)
        encode = min(encode, time.perf_counter() - start)
    print(f"\nnearest-neighbour search (model.score, 1 image) vs encode ({1000 * encode:.0f} ms/image):")
    print(f"{'shots':>5} {'score ms':>9} {'share':>7}")
    for k in shots:
        # K references' features: random values, the right shapes (the time does not depend on them)
        refs = winclip.Features(
            torch.randn(k, model.backbone.embed_dim),
            {s: torch.randn(k, f.shape[1], f.shape[2]) for s, f in feats.windows.items()},
            torch.randn(k, *feats.patches.shape[1:]),
        )
        model.fit_features(refs.to(model.device))
        model.score(feats)
        sec = float("inf")
        for _ in range(repeats):
            synchronize(model.device)
            start = time.perf_counter()
            model.score(feats)
            synchronize(model.device)
            sec = min(sec, time.perf_counter() - start)
        print(f"{k:>5} {1000 * sec:9.1f} {sec / (sec + encode):7.1%}", flush=True)


def op_profile(model: winclip.WinCLIP, batch: int, rows: int = 12) -> None:
    """torch.profiler's top operators (self time) of one encode of `batch` images on the fast path."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(batch, 3, *model.info.image_size)
    model.encode(x)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if model.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        model.encode(x)
        synchronize(model.device)
    key = "self_device_time_total" if model.device.type == "cuda" else "self_cpu_time_total"
    print(f"\noperators of one encode, batch {batch}, {model.backbone.precision} (torch.profiler, by {key}):")
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


def gemm_table(device: torch.device, backbone: winclip.WinCLIP) -> None:
    """GFLOP/s of each candidate kernel at each of the tower's fp32 products (2048 rows), and the one chosen."""
    if device.type != "cpu":
        return
    print(f"\nfp32 products of the tower, {MEASURE_ROWS} rows, GFLOP/s per kernel (medians, interleaved):")
    print(f"{'product':>14} {'aten':>8} {'onednn':>8} {'onednn-gelu':>12}  chosen")
    for product in tower_products(backbone.clip.visual):
        seconds = time_candidates(product)
        rate = {k: 2 * MEASURE_ROWS * product.k * product.n / statistics.median(v) / 1e9 for k, v in seconds.items()}
        cells = [f"{rate[k]:8.1f}" if k in rate else f"{'-':>8}" for k in ("aten", "onednn")]
        gelu = f"{rate['onednn-gelu']:12.1f}" if "onednn-gelu" in rate else f"{'-':>12}"
        print(f"{product.key:>14} {' '.join(cells)} {gelu}  {fastest(seconds)}", flush=True)


def memory_check(backbone: str, device: str, counts: list[int], batch: int, size: int) -> None:
    """Peak memory of iter_predict over more and more images: it should stay flat (one batch held)."""
    model = build(backbone, device, "auto")
    model.fit([textured(np.random.default_rng(999), size, size)])
    print(
        f"\nstreaming memory: iter_predict, {backbone}, batch {batch}, {size}x{size} images "
        f"(one batch of maps = {batch * size * size * 4 / 2**20:.0f} MB)"
    )
    print(f"{'images':>6} {'peak MB':>8} {'+peak MB':>8} {'s':>6}")
    for _ in model.iter_predict(LazyImages(batch, size), batch_size=batch):
        pass  # warm-up
    for count in counts:
        before = current_mb(model.device)
        reset_peak(model.device)
        start = time.perf_counter()
        done = sum(1 for r in model.iter_predict(LazyImages(count, size), batch_size=batch) if r.error is None)
        assert done == count
        peak = peak_mb(model.device)
        print(f"{count:>6} {peak:8.0f} {peak - before:8.0f} {time.perf_counter() - start:6.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=winclip.DEFAULT_BACKBONE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=[c for c in PRECISION_CHOICES if c != "int8"],
        help="fused PyTorch precisions (bf16 on the CPU only where native unless named alone)",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--shots", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--runtimes",
        nargs="*",
        default=[r for r in RUNTIMES if importlib.util.find_spec(r)],
        choices=RUNTIMES,
        help="exported runtimes to time beside PyTorch (default: those installed)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are printed")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip OpenVINO int8")
    parser.add_argument("--int8-export", metavar="DIR", help="an int8 export to time (default: quantized here)")
    parser.add_argument("--calibration-images", type=int, default=16, help="textured images NNCF calibrates on")
    parser.add_argument("--no-onednn-row", dest="onednn_row", action="store_false", help="skip the all-oneDNN row")
    parser.add_argument("--fidelity-images", type=int, default=8, help="textured images for fidelity (0: skip)")
    parser.add_argument("--nn-shots", type=int, nargs="*", default=[1, 8, 64], help="K for the search timing")
    parser.add_argument("--memory-images", type=int, nargs="*", default=[16, 64], help="image counts, streaming")
    parser.add_argument("--memory-backbone", default=TINY, help="(default: the tiny test ViT)")
    parser.add_argument("--memory-size", type=int, default=512, help="side of the streamed images")
    parser.add_argument("--no-gemm", dest="gemm", action="store_false", help="skip the per-kernel product rates")
    parser.add_argument("--profile-batch", type=int, default=0, help="print the profiler's top operators (0: skip)")
    args = parser.parse_args()

    if args.device != "cpu":
        args.runtimes = []  # the exported runtimes run on the CPU
    elif not native_bf16() and args.precision != ["bf16"]:
        args.precision = [p for p in args.precision if p != "bf16"]  # emulated bf16: many times slower, not a path
    with tempfile.TemporaryDirectory(prefix="winclip-speed-") as tmp:
        fast = speed_table(args, Path(tmp))
    if args.gemm:
        gemm_table(torch.device(args.device), fast)
    if args.profile_batch:
        op_profile(fast, args.profile_batch)
    if args.nn_shots:
        nn_table(fast, args.nn_shots, args.repeats)
    if args.memory_images:
        memory_check(args.memory_backbone, args.device, args.memory_images, 8, args.memory_size)


if __name__ == "__main__":
    main()
