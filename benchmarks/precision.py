"""Fidelity of every reduced-precision and exported path against PyTorch fp32: the evidence for `precision="auto"`.

    python benchmarks/precision.py                          # ViT-B-16-plus-240, 64 textured images, 1-shot
    python benchmarks/precision.py --paths bf16 --images 64
    python benchmarks/precision.py --paths bf16 onnxruntime openvino openvino-bf16 --fp32-images 16

Random weights (no download here) with seeded random text prototypes; one textured reference
image (WinCLIP+ 1-shot) and `--images` textured images at the backbone's input size. Each path
is compared with the fused PyTorch fp32 path (itself equal to open_clip's modules within 1e-5,
tests/backbones/test_tower.py): Spearman of the image scores, the largest |score difference|
relative to the spread (max - min) of the fp32 scores, and the largest |map difference|
relative to the map's maximum. The bar for auto is Spearman >= 0.999 and maps <= 1e-2
(winclip.backbones.precision). Random weights give tightly clustered scores (a spread of a few
hundredths), so a tiny score change can swap ranks: the Spearman bar is harder here than it
would be with trained weights, whose scores spread out.
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
from winclip.backbones.precision import MAX_MAP_REL, MIN_SPEARMAN, cpu_summary

PATHS = {  # name → (runtime, precision); the reference is ("torch", "fp32")
    "bf16": ("torch", "bf16"),
    "onnxruntime": ("onnxruntime", "fp32"),
    "openvino": ("openvino", "fp32"),
    "openvino-bf16": ("openvino", "bf16"),
}


def textured(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random RGB image (as tests/conftest.py makes them)."""
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    return Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)


def compare(reference: winclip.Prediction, got: winclip.Prediction) -> dict[str, float]:
    """Spearman, max |Δscore| / fp32 score spread, max relative map difference, zero-shot Spearman."""
    n = len(got.scores)
    ref_scores, ref_maps = reference.scores[:n], reference.maps[:n]
    spread = float(ref_scores.max() - ref_scores.min())
    return {
        "spearman": float(spearmanr(ref_scores.numpy(), got.scores.numpy()).statistic),
        "score_rel": float((ref_scores - got.scores).abs().max()) / spread,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=winclip.DEFAULT_BACKBONE)
    parser.add_argument("--images", type=int, default=64, help="textured images scored by fp32 and bf16 paths")
    parser.add_argument(
        "--fp32-images", type=int, help="of those, how many the fp32 exported paths score (default all)"
    )
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--batch", type=int, default=8)
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
        if any(PATHS[p][0] != "torch" for p in args.paths):
            export_backbone(reference_model.backbone, Path(tmp) / "onnx", "onnx")
        for name in args.paths:
            runtime, precision = PATHS[name]
            model = build(args, runtime, precision, None if runtime == "torch" else str(Path(tmp) / "onnx"))
            n = args.images if precision != "fp32" or args.fp32_images is None else args.fp32_images
            start = time.perf_counter()
            got = model.fit(refs).predict(images[:n], batch_size=args.batch)
            rows.append((name, runtime, precision, compare(reference, got), time.perf_counter() - start))
            del model
    print(
        f"\n{'path':>14} {'runtime':>11} {'prec':>5} {'images':>6} {'spearman':>9} {'zero-shot':>9} "
        f"{'max|dscore|/spread':>18} {'max rel map':>11} {'s':>6}  bar (>= {MIN_SPEARMAN}, <= {MAX_MAP_REL:.0e})"
    )
    for name, runtime, precision, f, sec in rows:
        holds = f["spearman"] >= MIN_SPEARMAN and f["map_rel"] <= MAX_MAP_REL
        print(
            f"{name:>14} {runtime:>11} {precision:>5} {f['images']:>6} {f['spearman']:9.4f} {f['zero_spearman']:9.4f} "
            f"{f['score_rel']:18.2e} {f['map_rel']:11.2e} {sec:6.0f}  {'holds' if holds else 'MISSES'}",
            flush=True,
        )
    print(f"\nfp32 score spread (max - min): {rows[0][3]['spread'] if rows else float('nan'):.4f}")
    for name, _, _, f, _ in rows:
        if name == "bf16":
            print(
                f"winclip.backbones.precision.BF16_FIDELITY[{reference_model.info.name!r}] = "
                f"Fidelity(spearman={f['spearman']:.4f}, score_rel={f['score_rel']:.3g}, map_rel={f['map_rel']:.3g}, "
                f"images={f['images']})"
            )


if __name__ == "__main__":
    main()
