"""Fidelity of every faster (and exported) path against PyTorch fp32, as a profile's evidence measures it.

    python benchmarks/precision.py                          # ViT-B-16-plus-240, 64 textured images, 1-shot
    python benchmarks/precision.py --paths bf16 openvino-int8 --images 64
    python benchmarks/precision.py --paths openvino-int8 --keep-float "blocks.11" --int8-export DIR

Random weights (no download here) with seeded random text prototypes; one textured reference
image (WinCLIP+ 1-shot) and `--images` textured images at the backbone's input size. Each path
is compared with the fused PyTorch fp32 path (itself equal to open_clip's modules within 1e-5,
tests/backbones/test_tower.py) with the figures `winclip precision check` stores in a profile
(winclip.inspection.evidence): Spearman of the image scores, the labels that flip at a threshold
(here the fp32 scores' 90th percentile, as if calibrated at 10% false alarms on these images),
the largest |score difference| relative to the margin (the closest fp32 score's distance from
that threshold) and to the spread of the fp32 scores, and the largest |map difference| relative
to the map's maximum; a path holds at Spearman >= 0.999, no flip and maps <= 1e-2. Random
weights cluster the scores (a spread of a few hundredths), so the ranking bar is harder here
than with trained weights, whose scores spread out: this is not the evidence `auto` uses (that
is measured per profile, on the user's weights and photos), it shows what each path reaches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

import winclip
from winclip.backbones.export import export_backbone
from winclip.backbones.precision import cpu_summary
from winclip.backbones.quantize import quantize_export
from winclip.inspection.evidence import MAX_FLIPS, MAX_MAP_REL, MIN_SPEARMAN

PATHS = {  # name → (runtime, precision); the reference is ("torch", "fp32")
    "bf16": ("torch", "bf16"),
    "onnxruntime": ("onnxruntime", "fp32"),
    "openvino": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-int8": ("openvino", "int8"),
}
THRESHOLD_QUANTILE = 0.9


def textured(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random RGB image (as tests/conftest.py makes them)."""
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    return Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)


def compare(reference: winclip.Prediction, got: winclip.Prediction) -> dict[str, float]:
    """The evidence's figures (module docstring), the score change against the spread and zero-shot Spearman."""
    n = len(got.scores)
    ref_scores, ref_maps = reference.scores[:n], reference.maps[:n]
    spread = float(ref_scores.max() - ref_scores.min())
    threshold = float(np.quantile(ref_scores.numpy(), THRESHOLD_QUANTILE))
    flips = int(((ref_scores >= threshold) != (got.scores >= threshold)).sum())
    diff = float((ref_scores - got.scores).abs().max())
    margin = float((ref_scores - threshold).abs().min())
    return {
        "spearman": float(spearmanr(ref_scores.numpy(), got.scores.numpy()).statistic),
        "flips": flips,
        "margin_rel": diff / margin if margin > 0 else float("inf"),
        "score_rel": diff / spread,
        "map_rel": max(((m - r).abs().max() / r.abs().max()).item() for m, r in zip(got.maps, ref_maps, strict=True)),
        "zero_spearman": float(spearmanr(reference.zero_shot[:n].numpy(), got.zero_shot.numpy()).statistic),
        "spread": spread,
        "images": n,
    }


def build(args: argparse.Namespace, runtime: str, precision: str, export_dir: str | None) -> winclip.WinCLIP:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        model = winclip.WinCLIP(
            args.backbone, None, device="cpu", precision=precision, runtime=runtime, export_dir=export_dir
        )
    protos = torch.randn(2, model.backbone.embed_dim, generator=torch.Generator().manual_seed(0))
    return model.set_prototypes(protos[0], protos[1])


def export_for(args: argparse.Namespace, reference_model: winclip.WinCLIP, tmp: Path, precision: str) -> str:
    """The export a runtime path runs: ONNX (fp32, bf16), or int8 (--int8-export, else quantized here)."""
    if precision != "int8":
        if not (tmp / "onnx").exists():
            export_backbone(reference_model.backbone, tmp / "onnx", "onnx")
        return str(tmp / "onnx")
    if args.int8_export:
        return args.int8_export
    export_backbone(reference_model.backbone, tmp / "openvino", "openvino")
    rng = np.random.default_rng(1)  # calibration images: other textured "good" images than the scored ones
    size = reference_model.info.image_size
    good = [reference_model.backbone.preprocess(textured(rng, *size)) for _ in range(args.calibration_images)]
    quantize_export(tmp / "openvino", tmp / "int8", good, keep_float=args.keep_float)
    return str(tmp / "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=winclip.DEFAULT_BACKBONE)
    parser.add_argument("--images", type=int, default=64, help="textured images scored by each path")
    parser.add_argument(
        "--fp32-images", type=int, help="of those, how many the fp32 exported paths score (default all)"
    )
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--int8-export", metavar="DIR", help="an int8 export to measure (default: quantized here)")
    parser.add_argument("--calibration-images", type=int, default=16, help="textured images NNCF calibrates on")
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="REGEX", help="OpenVINO ops left unquantized")
    args = parser.parse_args()
    print(cpu_summary(), flush=True)
    reference_model = build(args, "torch", "fp32", None)
    size = reference_model.info.image_size
    rng = np.random.default_rng(0)
    images = [textured(rng, *size) for _ in range(args.images)]
    refs = [textured(rng, *size)]
    start = time.perf_counter()
    reference = reference_model.fit(refs).predict(images, batch_size=args.batch)
    print(f"{args.backbone}, random weights, 1-shot, {args.images} textured images; fp32 reference "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="winclip-precision-") as tmp:
        for name in args.paths:
            runtime, precision = PATHS[name]
            folder = None if runtime == "torch" else export_for(args, reference_model, Path(tmp), precision)
            model = build(args, runtime, precision, folder)
            n = args.images if precision != "fp32" or args.fp32_images is None else args.fp32_images
            start = time.perf_counter()
            got = model.fit(refs).predict(images[:n], batch_size=args.batch)
            rows.append((name, runtime, precision, compare(reference, got), time.perf_counter() - start))
            del model
    print(
        f"\n{'path':>14} {'runtime':>11} {'prec':>5} {'images':>6} {'spearman':>9} {'zero-shot':>9} {'flips':>5} "
        f"{'|ds|/margin':>11} {'|ds|/spread':>11} {'max rel map':>11} {'s':>6}  "
        f"bar (>= {MIN_SPEARMAN}, {MAX_FLIPS} flips, <= {MAX_MAP_REL:.0e})"
    )
    for name, runtime, precision, f, sec in rows:
        holds = f["spearman"] >= MIN_SPEARMAN and f["flips"] <= MAX_FLIPS and f["map_rel"] <= MAX_MAP_REL
        print(
            f"{name:>14} {runtime:>11} {precision:>5} {f['images']:>6} {f['spearman']:9.4f} {f['zero_spearman']:9.4f} "
            f"{f['flips']:>5} {f['margin_rel']:11.2f} {f['score_rel']:11.2e} {f['map_rel']:11.2e} {sec:6.0f}  "
            f"{'holds' if holds else 'MISSES'}",
            flush=True,
        )
    print(f"\nfp32 score spread (max - min): {rows[0][3]['spread'] if rows else float('nan'):.4f}")


if __name__ == "__main__":
    main()
