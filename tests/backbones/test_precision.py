"""Which precision auto runs (winclip.backbones.precision), and bf16's fidelity against fp32."""

from pathlib import Path

import pytest
import torch

import winclip
from helpers import TINY, make_model, textured
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
    with pytest.raises(ValueError, match="unknown precision 'fp8'; use one of auto, fp32, bf16, fp16, int8"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ValueError, match="^int8 runs an int8 OpenVINO export"):
        resolve_precision("int8", cpu)
    assert resolve_precision("int8", cpu, "openvino").value == "int8"


@pytest.mark.parametrize("native", [False, True])
def test_auto_on_the_cpu_is_fp32_without_evidence_whatever_the_cpu(monkeypatch, native):
    """No table measured on other (random) weights decides any more: auto on the CPU is fp32 until a profile's
    evidence resolves it (winclip.inspection.evidence), on CPUs with native bf16 too."""
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    choice = resolve_precision("auto", torch.device("cpu"))
    assert choice == precision.PrecisionChoice(
        "fp32", "auto: no evidence for these weights on this CPU (winclip precision check)"
    )
    assert not hasattr(precision, "BF16_FIDELITY") and not hasattr(precision, "OPENVINO_BF16_FIDELITY")
    m = make_model()
    assert m.backbone.precision == "fp32" and m.backbone.dtype == torch.float32
    assert "precision fp32 (auto: no evidence for these weights on this CPU" in winclip.model.banner(m)


def test_a_reason_given_with_a_concrete_precision_reaches_the_banner():
    spec = winclip.ModelSpec(str(TINY), None, "cpu", "fp32", precision_reason="auto: evidence says so")
    with pytest.warns(winclip.RandomWeightsWarning):
        m = winclip.build_model(spec)
    assert "precision fp32 (auto: evidence says so)" in winclip.model.banner(m)


def test_offered_paths_follow_native_bf16_and_what_is_installed(monkeypatch):
    installed = {"openvino", "nncf"}
    monkeypatch.setattr(precision.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert [p.name for p in precision.offered_paths()] == ["torch-bf16", "openvino-bf16", "openvino-int8"]
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert [p.name for p in precision.offered_paths()] == ["openvino-int8"]
    installed.discard("nncf")
    assert precision.offered_paths() == []
    assert precision.RunPath.parse("openvino-int8") == precision.RunPath("openvino", "int8")
    with pytest.raises(ValueError, match="unknown path 'gpu-fp8'"):
        precision.RunPath.parse("gpu-fp8")


def test_cpu_kind_names_the_model_flags_capability_and_caps(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    kind = precision.cpu_kind()
    assert kind["model"] == precision.cpu_model() and kind["capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(kind["flags"]) <= set(precision.ISA_FLAGS) and kind["caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "ISA caps: ONEDNN_MAX_CPU_ISA=AVX2" in precision.cpu_summary()


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
