"""Few-shot reference memories and their association with a query (docs/method.md §4, Eq. 4-6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .zero_shot import harmonic_fusion


@dataclass(frozen=True)
class ReferenceMemory:
    """L2-normalised features of K normal images, every position of every reference pooled.

    patches `(K*L, C)`; windows {k: `(K*W_k, D)`}; `shots` = K.
    """

    patches: torch.Tensor
    windows: dict[int, torch.Tensor]
    shots: int

    @classmethod
    def from_features(cls, patches: torch.Tensor, windows: dict[int, torch.Tensor]) -> ReferenceMemory:
        """Build from per-image features: patches `(K, L, C)`, windows {k: `(K, W, D)`}."""
        return cls(
            patches=F.normalize(patches.float().flatten(0, 1), dim=-1),
            windows={k: F.normalize(v.float().flatten(0, 1), dim=-1) for k, v in windows.items()},
            shots=patches.shape[0],
        )

    def to(self, device: torch.device | str) -> ReferenceMemory:
        """The same memory on another device."""
        return ReferenceMemory(self.patches.to(device), {k: v.to(device) for k, v in self.windows.items()}, self.shots)


def nearest_distance(queries: torch.Tensor, memory: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Eq. 4: d(q) = min_r ½(1 − <q, r>) over a normalised memory.

    queries `(N, Q, D)`, memory `(M, D)` L2-normalised → `(N, Q)` in [0, 1].
    The memory is scanned in chunks of `chunk` rows so the similarity matrix
    stays `(N·Q, chunk)` however many shots there are.
    """
    q = F.normalize(queries.float(), dim=-1).flatten(0, 1)
    best = torch.full((q.shape[0],), -1.0, device=q.device)
    for start in range(0, memory.shape[0], chunk):
        sims = q @ memory[start : start + chunk].to(q.device, torch.float32).T
        best = torch.maximum(best, sims.amax(dim=1))
    return (0.5 * (1.0 - best)).clamp(0.0, 1.0).view(queries.shape[:2])


def vision_map(maps: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 5: M^W = mean of the patch-level association maps (M^P, M^W_s, M^W_m)."""
    return torch.stack(maps).mean(dim=0)


def few_shot_score(zero_shot: torch.Tensor, vision: torch.Tensor, terms: str = "both") -> torch.Tensor:
    """Eq. 6: ascore_W = ½ (ascore0(F^I) + max_ij M^W_ij). zero_shot `(N,)`, vision `(N, L)` → `(N,)`.

    terms "vision" / "zero-shot": max M^W alone / ascore0 alone (the paper's Table 5 rows).
    """
    if terms == "both":
        return 0.5 * (zero_shot + vision.amax(dim=1))
    if terms == "vision":
        return vision.amax(dim=1)
    if terms == "zero-shot":
        return zero_shot.clone()
    raise ValueError(f"unknown few-shot score terms {terms!r}; use 'both', 'vision' or 'zero-shot'")


def few_shot_map(zero_shot_map: torch.Tensor, vision: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """Few-shot segmentation (docs/method.md §4): (M0 + M^W) / 2 ("mean") or 2 / (1/M0 + 1/M^W) ("harmonic")."""
    if fusion == "mean":
        return 0.5 * (zero_shot_map + vision)
    if fusion == "harmonic":
        return harmonic_fusion([zero_shot_map, vision])
    raise ValueError(f"unknown few-shot fusion {fusion!r}; use 'mean' or 'harmonic'")
