"""Text prototypes, zero-shot scores, window aggregation, multi-scale fusion (docs/method.md §1, §3). Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    """1/x with x ≥ 0 clamped to the smallest normal float, so a zero score stays an exact limit."""
    return 1.0 / x.clamp_min(torch.finfo(x.dtype).tiny)


def prototype(embeddings: torch.Tensor) -> torch.Tensor:
    """docs/method.md §1: L2-normalise each prompt embedding, average, L2-normalise the mean: `(T, D)` → `(D,)`."""
    return F.normalize(F.normalize(embeddings.float(), dim=-1).mean(0), dim=-1)


def ascore0(emb: torch.Tensor, t_n: torch.Tensor, t_a: torch.Tensor, temperature: float) -> torch.Tensor:
    """Two-class zero-shot anomaly score, Eq. 1: softmax([<e,t_n>, <e,t_a>]/τ)[1].

    emb `(..., D)`, prototypes `(D,)` → `(...)` in [0, 1].
    """
    e = F.normalize(emb.float(), dim=-1)
    protos = torch.stack([F.normalize(t_n.float(), dim=-1), F.normalize(t_a.float(), dim=-1)], dim=-1)
    return torch.softmax(e @ protos.to(e.device) / temperature, dim=-1)[..., 1]


def aggregate_windows(scores: torch.Tensor, coverage: torch.Tensor, mode: str = "harmonic") -> torch.Tensor:
    """Window scores → patch scores, Eq. 3: M[j] = |U_j| / Σ_{w∈U_j} 1/s_w.

    scores `(N, W)`, coverage `(L, W)` 0/1 → `(N, L)`. `mode="mean"` is the
    arithmetic mean over U_j (the paper's "without harmonic averaging" ablation).
    """
    cov = coverage.to(device=scores.device, dtype=torch.float32)
    count = cov.sum(dim=1)
    s = scores.float()
    if mode == "harmonic":
        return count / (_reciprocal(s) @ cov.T)
    if mode == "mean":
        return (s @ cov.T) / count
    raise ValueError(f"unknown aggregation {mode!r}; use 'harmonic' or 'mean'")


def harmonic_fusion(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Harmonic mean of same-shape score maps (docs/method.md §3 multi-scale: M0 = n / Σ 1/M_i)."""
    if not maps:
        raise ValueError("harmonic_fusion needs at least one map")
    stacked = torch.stack([m.float() for m in maps])
    return len(maps) / _reciprocal(stacked).sum(dim=0)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False): `(N, h, w)` → `(N, *size)`."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def _gaussian(radius: int, sigma: float, device: torch.device) -> torch.Tensor:
    """A Gaussian kernel of `2 * radius + 1` taps, normalised to sum 1."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of `(N, H, W)` maps (truncated at 4σ, reflect padding).

    Along an axis shorter than the kernel the kernel is cut to radius `side - 1` (reflect padding cannot go
    further) and renormalised; a 1-pixel axis is left as it is.
    """
    radius = max(1, int(4.0 * sigma + 0.5))
    out = maps[:, None].float()
    height, width = out.shape[-2:]
    across, down = min(radius, width - 1), min(radius, height - 1)
    if across > 0:
        kernel = _gaussian(across, sigma, maps.device).view(1, 1, 1, -1)
        out = F.conv2d(F.pad(out, (across, across, 0, 0), mode="reflect"), kernel)
    if down > 0:
        kernel = _gaussian(down, sigma, maps.device).view(1, 1, -1, 1)
        out = F.conv2d(F.pad(out, (0, 0, down, down), mode="reflect"), kernel)
    return out[:, 0]
