"""Which precision runs: `auto` without evidence, the faster paths this machine offers, and the CPU's kind.

auto = fp16 on CUDA; on the CPU, fp32, unless a caller that holds evidence for these weights on
this kind of CPU resolved it already (winclip.inspection.evidence: a profile's `winclip precision
check` chooses the fastest path whose evidence holds and passes the concrete precision with its
reason). There is no table of fidelity measured on other weights: random weights cluster scores
and lack a trained CLIP's activation outliers, so that evidence said little about real ones.

The faster paths (`offered_paths`): PyTorch bf16 and OpenVINO bf16 where the CPU does bf16 in
hardware (AVX512-BF16 or AMX, with oneDNN's bf16 kernels; emulated bf16 is several times slower
than fp32), and OpenVINO int8 (an NNCF-quantized export, winclip.backbones.quantize) where
OpenVINO and NNCF are installed.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..options import PRECISION_CHOICES, RunPath
from .kernels import ISA_CAPS, cpu_model

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
# The instruction-set flags that change which kernels run (and so the numbers): part of the CPU's kind.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


FASTER_PATHS = (RunPath("torch", "bf16"), RunPath("openvino", "bf16"), RunPath("openvino", "int8"))


@dataclass(frozen=True)
class PrecisionChoice:
    """The concrete precision and why it was chosen (the banner prints both)."""

    value: str  # fp32, bf16 or fp16
    reason: str


def isa_flags() -> set[str]:
    """The instruction-set flags of ISA_FLAGS this CPU has: torch's cpuinfo probes, else /proc/cpuinfo (Linux)."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    found = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        if line.startswith("flags"):
            return found | (set(line.split(":", 1)[1].split()) & set(ISA_FLAGS))
    return found


def cpu_flags() -> set[str]:
    """The native-bf16 flags of this CPU (BF16_CPU_FLAGS it has)."""
    return isa_flags() & set(BF16_CPU_FLAGS)


def cpu_kind() -> dict[str, object]:
    """What makes two CPUs the same kind for evidence: model name, ISA flags, torch's capability, ISA caps."""
    return {
        "model": cpu_model(),
        "flags": sorted(isa_flags()),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "caps": {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)},
    }


def cpu_summary() -> str:
    """The CPU's name, torch's capability, ISA caps, threads and native bf16 (printed beside every measured figure)."""
    caps = ", ".join(f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k)) or "none"
    flags = ", ".join(sorted(isa_flags())) or "none"
    return (
        f"CPU: {cpu_model()}; torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads; ISA caps: {caps}; native bf16: {native_bf16()}; flags: {flags}"
    )


def native_bf16() -> bool:
    """The CPU does bf16 arithmetic in hardware and oneDNN has bf16 kernels for it."""
    onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return bool(onednn and cpu_flags())


def offered_paths() -> list[RunPath]:
    """The faster paths this machine offers (module docstring): what `winclip precision check` measures."""
    native = native_bf16()
    openvino = importlib.util.find_spec("openvino") is not None
    nncf = importlib.util.find_spec("nncf") is not None
    wanted = {"torch-bf16": native, "openvino-bf16": native and openvino, "openvino-int8": openvino and nncf}
    return [p for p in FASTER_PATHS if wanted[p.name]]


def resolve_precision(
    precision: str, device: torch.device, runtime: str = "torch", reason: str | None = None
) -> PrecisionChoice:
    """The concrete precision for `precision` on `device` and `runtime`; `reason` says why a caller chose it."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 needs a GPU; use bf16 on the CPU")
    if precision == "int8" and runtime != "openvino":
        raise ValueError(
            "int8 runs an int8 OpenVINO export (winclip export --format openvino --precision int8) with "
            "--runtime openvino"
        )
    if precision != "auto":
        return PrecisionChoice(precision, reason or "asked for")
    if device.type == "cuda":
        return PrecisionChoice("fp16", "auto: fp16 on CUDA")
    return PrecisionChoice("fp32", "auto: no evidence for these weights on this CPU (winclip precision check)")
