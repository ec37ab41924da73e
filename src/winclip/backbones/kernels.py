"""Which kernel runs each fp32 matrix product of the fused path on this CPU: measured once, cached per machine.

The fused tower's products can go to ATen's `F.linear` (MKL's sgemm here: what open_clip's own
modules, the baseline, use) or to oneDNN's matmul (`torch.ops.mkldnn._linear_pointwise`), and
the MLP's first product can have its GELU fused into oneDNN's kernel. Which is fastest depends on
the CPU, its instruction set and the library versions: oneDNN won on an Intel Xeon and on AVX-512
here, but lost on an AVX2-only AMD EPYC (issue 23). So nothing is assumed: on the first load of
a model on a CPU, each candidate is timed at the tower's own shapes, interleaved (medians), and
the fastest is kept in a small JSON under the user's cache dir (`cache_file()`), keyed by the
CPU model, torch version and capability, the ISA caps in the environment, the thread count and
the shapes; later loads read it. Delete the file to measure again. `WINCLIP_KERNELS=aten` (or `onednn`:
oneDNN everywhere, the GELU fused where one follows) pins every product instead, nothing measured: the
same numerics in every process of a run (the candidates differ in summation order, about 1e-6).

The candidates compute the same product up to summation order (tests/backbones/test_kernels.py).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .weights.registry import cache_root

PLAIN = ("aten", "onednn")  # kernels of a product
WITH_GELU = ("aten", "onednn", "onednn-gelu")  # kernels of a product followed by nn.GELU (the last fuses it)
MEASURE_ROWS = 2048  # rows timed per product (the fused path's MLP chunk, tower.MLP_CHUNK_ROWS)
MEASURE_ROUNDS = 5  # interleaved rounds per product; the median decides
CACHE_NAME = "kernels.json"
PIN_VARIABLE = "WINCLIP_KERNELS"  # aten | onednn: every product runs that kernel, nothing measured
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@dataclass(frozen=True)
class Product:
    """One matrix product of the tower: x `(M, k)` @ weight.T `(k, n)` [+ GELU when `gelu`]."""

    k: int
    n: int
    gelu: bool = False

    @property
    def key(self) -> str:
        return f"{self.k}x{self.n}{'+gelu' if self.gelu else ''}"

    @property
    def candidates(self) -> tuple[str, ...]:
        if not ONEDNN:
            return ("aten",)
        return WITH_GELU if self.gelu else PLAIN


def cache_file() -> Path:
    """kernels.json in winclip's cache folder ($WINCLIP_CACHE, else $XDG_CACHE_HOME/winclip, else ~/.cache/winclip)."""
    return cache_root() / CACHE_NAME


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def machine_key() -> str:
    """What the measurement depends on besides the shapes: CPU, torch, its capability, ISA caps, threads."""
    caps = ",".join(f"{k}={os.environ[k]}" for k in ISA_CAPS if os.environ.get(k))
    return (
        f"{cpu_model()} | torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"
        f" | caps {caps or 'none'} | threads {torch.get_num_threads()}"
    )


def run(kernel: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None) -> torch.Tensor:
    """x @ weight.T + bias through `kernel`, then GELU when `act` is its `approximate` ("none"/"tanh")."""
    if kernel == "onednn-gelu":
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "gelu", [], act or "none")
    if kernel == "onednn":
        out = torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
    else:
        out = torch.nn.functional.linear(x, weight, bias)
    return out if act is None else torch.nn.functional.gelu(out, approximate=act)


def fastest(seconds: dict[str, list[float]]) -> str:
    """The kernel with the lowest median time; ties go to the earlier candidate (ATen first)."""
    return min(seconds, key=lambda name: statistics.median(seconds[name]))


def time_candidates(
    product: Product,
    rows: int = MEASURE_ROWS,
    rounds: int = MEASURE_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each candidate kernel per round, the candidates taking turns (so load hits them alike)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, product.k, generator=gen)
    weight = torch.randn(product.n, product.k, generator=gen) / product.k**0.5
    bias = torch.randn(product.n, generator=gen)
    act = "none" if product.gelu else None
    seconds: dict[str, list[float]] = {name: [] for name in product.candidates}
    with torch.inference_mode():
        for name in seconds:
            run(name, x, weight, bias, act)  # warm-up: oneDNN builds its primitive here
        for _ in range(rounds):
            for name in seconds:
                start = clock()
                run(name, x, weight, bias, act)
                seconds[name].append(clock() - start)
    return seconds


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or unreadable: measured again and rewritten
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    """Atomically (a temporary file renamed over it), so two processes never leave half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the choice holds for this process and is measured again next time


@dataclass(frozen=True)
class KernelChoice:
    """The kernel of each product (by `Product.key`) and where the choice came from."""

    kernels: dict[str, str]
    source: str  # "measured now", "cached" (cache_file()), or why nothing was measured

    def of(self, product: Product) -> str:
        """The kernel for `product` (ATen, the baseline's own, when it was not measured)."""
        return self.kernels.get(product.key, "aten")

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for name in self.kernels.values():
            counts[name] = counts.get(name, 0) + 1
        text = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "aten"
        return f"fp32 products: {text} ({self.source})"


def choose(
    products: Iterable[Product], measure: Callable[[Product], dict[str, list[float]]] | None = None
) -> KernelChoice:
    """The fastest kernel of each product on this machine: from the cache, else measured now and cached
    (or what `WINCLIP_KERNELS` pins)."""
    products = list(products)
    pinned = os.environ.get(PIN_VARIABLE, "")
    if pinned:
        if pinned not in PLAIN:
            raise ValueError(f"{PIN_VARIABLE}={pinned!r}: use one of {', '.join(PLAIN)} (or unset it to measure)")
        wanted = {p.key: "onednn-gelu" if pinned == "onednn" and p.gelu else pinned for p in products}
        kernels = {p.key: wanted[p.key] if wanted[p.key] in p.candidates else "aten" for p in products}
        return KernelChoice(kernels, f"pinned by {PIN_VARIABLE}={pinned}")
    path = cache_file()
    data = _read(path)
    machine = data.setdefault(machine_key(), {})
    measured = False
    for product in products:
        entry = machine.get(product.key)
        if not isinstance(entry, dict) or entry.get("kernel") not in product.candidates:
            seconds = (measure or time_candidates)(product)
            ms = {name: round(1000 * statistics.median(s), 3) for name, s in seconds.items()}
            machine[product.key] = {"kernel": fastest(seconds), "ms": ms, "rows": MEASURE_ROWS}
            measured = True
    if measured:
        _write(path, data)
    kernels = {p.key: machine[p.key]["kernel"] for p in products}
    return KernelChoice(kernels, f"measured now on this CPU, cached in {path}" if measured else f"cached in {path}")
