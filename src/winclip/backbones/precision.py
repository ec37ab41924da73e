"""Which precision `precision="auto"` runs, chosen by the hardware and by measured fidelity.

auto = fp16 on CUDA; on the CPU bf16 where the CPU does bf16 arithmetic in hardware
(AVX512-BF16 or AMX, with oneDNN's bf16 kernels) *and* bf16's fidelity against fp32 was
measured for the backbone on that runtime (PyTorch or OpenVINO) and holds (`BF16_FIDELITY`,
`OPENVINO_BF16_FIDELITY`: Spearman ≥ 0.999 of image scores, maps within 1e-2 relative);
fp32 everywhere else. On CPUs without native bf16 it is
emulated and several times slower than fp32, so there fp32 is also the fast choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..options import PRECISION_CHOICES

MIN_SPEARMAN = 0.999  # image-score ranking kept (issue 12's bar)
MAX_MAP_REL = 1e-2  # max |map - fp32 map| / max |fp32 map|
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


@dataclass(frozen=True)
class Fidelity:
    """bf16 against fp32 on `images` textured images, 1-shot (benchmarks/precision.py)."""

    spearman: float  # of the image scores
    score_rel: float  # max |score difference| / spread of the fp32 scores
    map_rel: float  # max |map difference| / max |fp32 map|
    images: int

    @property
    def holds(self) -> bool:
        """Within the bars auto needs."""
        return self.spearman >= MIN_SPEARMAN and self.map_rel <= MAX_MAP_REL


# Measured with random weights by `python benchmarks/precision.py --paths bf16` (README, Performance): the
# fused bf16 path (bf16 products over an fp32 residual stream, vision.Matmuls) against the fused fp32 path,
# 64 textured images, 1-shot, on an Intel Xeon with AMX. (The earlier all-bf16 tower missed the ranking
# bar: Spearman 0.9944, scores moved by 4.3% of their 0.047 spread.)
BF16_FIDELITY: dict[str, Fidelity] = {
    "ViT-B-16-plus-240": Fidelity(spearman=0.9993, score_rel=0.0111, map_rel=1.35e-3, images=64),
}
# The same run, OpenVINO's bf16 (its inference precision hint) on the exported graph, against PyTorch fp32:
# it keeps the ranking too, so auto = bf16 with OpenVINO there.
OPENVINO_BF16_FIDELITY: dict[str, Fidelity] = {
    "ViT-B-16-plus-240": Fidelity(spearman=0.9995, score_rel=0.0112, map_rel=3.19e-3, images=64),
}
BF16_RUNTIMES = ("torch", "openvino")  # the runtimes that run bf16, each with its own evidence


@dataclass(frozen=True)
class PrecisionChoice:
    """The concrete precision and why it was chosen (the banner prints both)."""

    value: str  # fp32, bf16 or fp16
    reason: str


def cpu_flags() -> set[str]:
    """The native-bf16 flags of this CPU: torch's cpuinfo probes, else /proc/cpuinfo (Linux)."""
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    found = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        if line.startswith("flags"):
            return found | (set(line.split(":", 1)[1].split()) & set(BF16_CPU_FLAGS))
    return found


def cpu_summary() -> str:
    """The CPU's name, torch's capability, threads and native bf16 (printed beside every measured figure)."""
    name = "unknown CPU"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), name)
    except OSError:
        pass
    flags = ", ".join(sorted(cpu_flags())) or "none"
    return (
        f"CPU: {name}; torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads; native bf16: {native_bf16()} (flags: {flags})"
    )


def native_bf16() -> bool:
    """The CPU does bf16 arithmetic in hardware and oneDNN has bf16 kernels for it."""
    onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return bool(onednn and cpu_flags() & set(BF16_CPU_FLAGS))


def resolve_precision(
    precision: str, device: torch.device, backbone: str = "", runtime: str = "torch"
) -> PrecisionChoice:
    """The concrete precision for `precision` on `device` (and `backbone` on `runtime`, whose measured bf16 fidelity
    counts; a runtime without bf16 runs fp32)."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 needs a GPU; use bf16 on the CPU")
    if precision != "auto":
        return PrecisionChoice(precision, "asked for")
    if device.type == "cuda":
        return PrecisionChoice("fp16", "auto: fp16 on CUDA")
    if runtime not in BF16_RUNTIMES:
        return PrecisionChoice("fp32", f"auto: {runtime} runs fp32")
    if not native_bf16():
        return PrecisionChoice("fp32", "auto: this CPU has no native bf16 (AVX512-BF16/AMX), emulated bf16 is slower")
    evidence = (BF16_FIDELITY if runtime == "torch" else OPENVINO_BF16_FIDELITY).get(backbone)
    if evidence is None:
        return PrecisionChoice("fp32", f"auto: native bf16, but its fidelity was not measured for {backbone}")
    figures = f"Spearman {evidence.spearman:.4f}, maps {evidence.map_rel:.1e} on {evidence.images} images"
    if not evidence.holds:
        return PrecisionChoice("fp32", f"auto: native bf16, but its measured fidelity misses the bar ({figures})")
    return PrecisionChoice("bf16", f"auto: native bf16 and measured fidelity ({figures})")
