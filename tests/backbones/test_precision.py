"""Which precision auto runs (winclip.backbones.precision), and bf16's fidelity against fp32."""

from pathlib import Path

import pytest
import torch

import winclip
from helpers import make_model, textured
from helpers.features import fidelity
from winclip.backbones import precision
from winclip.backbones.precision import resolve_precision


def half_model(dtype: torch.dtype, refs: list) -> winclip.WinCLIP:
    """The tiny model with its visual tower in `dtype` on the CPU (fp16 here only to measure fidelity)."""
    m = make_model(precision="fp32").set_object("bottle")
    m.clip.visual.to(dtype)
    m.backbone.dtype = dtype
    return m.fit(refs)


def test_fidelity_on_textured_images(rng):
    images = [textured(rng, 64, 64) for _ in range(12)]
    refs = [textured(rng, 64, 64)]
    reference = winclip.WinCLIP(make_model(precision="fp32").backbone.unfused()).set_object("bottle").fit(refs)
    fused = make_model(precision="fp32").set_object("bottle").fit(refs)
    rho, rel = fidelity(fused, reference, images)
    assert rho == pytest.approx(1.0) and rel < 1e-5
    rho, rel = fidelity(half_model(torch.float16, refs), reference, images)
    assert rho == pytest.approx(1.0) and rel < 1e-3  # measured: 1.0 and 3.4e-4, hence auto = fp16 on CUDA
    rho, rel = fidelity(half_model(torch.bfloat16, refs), reference, images)
    assert rho > 0.9 and rel < 1e-2  # measured: 0.965 and 3.5e-3: bf16 swaps close scores of random weights


def test_auto_precision_is_resolved_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda).value == "fp16"
    assert [resolve_precision(p, cuda).value for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert resolve_precision("bf16", cpu) == precision.PrecisionChoice("bf16", "asked for")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; use one of auto, fp32, bf16, fp16"):
        resolve_precision("fp8", cpu)
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    no_bf16 = resolve_precision("auto", cpu, "ViT-B-16-plus-240")
    assert no_bf16.value == "fp32" and "no native bf16" in no_bf16.reason
    m = make_model()
    assert m.backbone.precision == "fp32" and m.backbone.dtype == torch.float32
    assert "precision fp32 (auto: this CPU has no native bf16" in winclip.model.banner(m)


def test_auto_picks_bf16_only_on_native_bf16_with_fidelity_that_holds(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    held = precision.Fidelity(spearman=0.9995, score_rel=0.01, map_rel=3e-3, images=64)
    missed = precision.Fidelity(spearman=0.99, score_rel=0.05, map_rel=3e-3, images=64)
    monkeypatch.setattr(precision, "BF16_FIDELITY", {"tiny-vit": held, "ViT-B-32": missed})
    choice = resolve_precision("auto", cpu, "tiny-vit")
    assert choice.value == "bf16" and choice.reason.startswith("auto: native bf16 and measured fidelity")
    assert resolve_precision("auto", cpu, "ViT-B-32").reason.startswith(
        "auto: native bf16, but its measured fidelity misses"
    )
    assert "not measured for ViT-L-14" in resolve_precision("auto", cpu, "ViT-L-14").reason
    m = make_model()
    assert m.backbone.precision == "bf16" and m.backbone.tower.matmuls.low == torch.bfloat16
    assert "precision bf16 (auto: native bf16 and measured fidelity (Spearman 0.9995" in winclip.model.banner(m)
    assert resolve_precision("fp32", cpu, "tiny-vit").value == "fp32"  # an explicit choice stays
    monkeypatch.setattr(precision, "OPENVINO_BF16_FIDELITY", {"ViT-B-32": held})
    assert resolve_precision("auto", cpu, "ViT-B-32", "openvino").value == "bf16"  # each runtime its own evidence
    assert resolve_precision("auto", cpu, "tiny-vit", "openvino").value == "fp32"
    assert resolve_precision("auto", cpu, "ViT-B-32", "onnxruntime").reason == "auto: onnxruntime runs fp32"


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    assert precision.native_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(precision, "cpu_flags", lambda: set())
    assert precision.native_bf16() is False
    monkeypatch.undo()
    info = Path("/proc/cpuinfo")
    if info.is_file():  # Linux: every bf16 flag the kernel lists is found
        flags = next(line for line in info.read_text().splitlines() if line.startswith("flags")).split()
        assert {f for f in flags if f in precision.BF16_CPU_FLAGS} <= precision.cpu_flags()
