"""The method's equations over encoded features (docs/method.md §3-§4): no weights needed.

A `Scorer` holds the method options, the patch grid and the device; `score` turns encoded
features, the two text prototypes and an optional reference memory into image scores and
patch-grid maps (Eq. 1, 3, 4-6), `full_map` brings view maps to an image's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..options import MethodOptions
from .features import Features
from .few_shot import ReferenceMemory, few_shot_map, few_shot_score, nearest_distance, vision_map
from .tiling import Tile
from .windows import coverage_matrix
from .zero_shot import aggregate_windows, ascore0, gaussian_smooth, harmonic_fusion, upsample

SCORE_CHUNK = 64  # views scored together: bounds the (views, L, K*L) nearest-neighbour similarities


@dataclass(frozen=True)
class GridScores:
    """Scores of N encoded views on the patch grid.

    scores `(N,)` final score; zero_shot `(N,)` = ascore0(F^I) (the mean over the ten crops under
    multi-crop); maps `(N, h, w)` final patch map.
    """

    scores: torch.Tensor
    zero_shot: torch.Tensor
    maps: torch.Tensor

    @staticmethod
    def cat(parts: list[GridScores]) -> GridScores:
        """Concatenate along the view axis."""
        return GridScores(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(GridScores)))


class Scorer:
    """Scores and maps of encoded views under one set of method options (docs/method.md §3-§4)."""

    def __init__(self, options: MethodOptions, grid: tuple[int, int], device: torch.device | str = "cpu") -> None:
        for k in options.scales:
            coverage_matrix(grid, k)  # validates that every window size fits the grid
        self.options = options
        self.grid = tuple(grid)
        self.device = torch.device(device)
        self._coverages: dict[int, torch.Tensor] = {}

    def score(
        self, feats: Features, prototypes: tuple[torch.Tensor, torch.Tensor], memory: ReferenceMemory | None = None
    ) -> GridScores:
        """Zero-shot (docs/method.md §3) or, with a reference memory, few-shot (docs/method.md §4) scores and maps.

        Scored SCORE_CHUNK views at a time.
        """
        if len(feats) > SCORE_CHUNK:
            chunks = range(0, len(feats), SCORE_CHUNK)
            return GridScores.cat([self.score(feats[i : i + SCORE_CHUNK], prototypes, memory) for i in chunks])
        feats = feats.to(self.device, torch.float32)
        opt = self.options
        t_n, t_a = prototypes
        n, (h, w) = len(feats), self.grid
        full_view = ascore0(feats.image, t_n, t_a, opt.temperature)
        zero = self.zero_shot(feats, prototypes) if opt.multi_crop else full_view
        maps = [
            aggregate_windows(ascore0(feats.windows[k], t_n, t_a, opt.temperature), self.coverage(k), opt.aggregation)
            for k in opt.scales
        ]
        if opt.image_scale:  # the full view's score, also under multi-crop (docs/method.md §3)
            maps.append(full_view[:, None].expand(n, h * w))
        m0 = harmonic_fusion(maps)
        if memory is None:
            return GridScores(zero, zero, m0.view(n, h, w))
        mw = self.association_map(feats, memory)
        return GridScores(
            few_shot_score(zero, mw, opt.fewshot_score), zero, few_shot_map(m0, mw, opt.fewshot_fusion).view(n, h, w)
        )

    def zero_shot(self, feats: Features, prototypes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The image-level zero-shot score `(N,)` under multi-crop: the mean of ascore0 over each view's crops."""
        if feats.crops is None:
            raise ValueError("multi-crop scoring needs the crop embeddings (Features.crops): encode with multi_crop")
        crops = feats.crops.to(self.device, torch.float32)
        return ascore0(crops, prototypes[0], prototypes[1], self.options.temperature).mean(dim=1)

    def association_map(self, feats: Features, memory: ReferenceMemory) -> torch.Tensor:
        """Eq. 4-5: M^W `(N, L)` from M^P and the association maps of `vision_scales` (default all scales)."""
        opt = self.options
        aggregation = opt.aggregation if opt.fewshot_aggregation == "same" else opt.fewshot_aggregation
        scales = opt.scales if opt.vision_scales is None else opt.vision_scales
        assoc = [nearest_distance(feats.patches, memory.patches)] + [
            aggregate_windows(nearest_distance(feats.windows[k], memory.windows[k]), self.coverage(k), aggregation)
            for k in scales
        ]
        return vision_map(assoc)

    def coverage(self, k: int) -> torch.Tensor:
        """Eq. 3's coverage matrix for window size k, kept on the device (no copy per call)."""
        if k not in self._coverages:
            self._coverages[k] = coverage_matrix(self.grid, k).to(self.device)
        return self._coverages[k]

    def full_map(self, grid_maps: torch.Tensor, tiles: Sequence[Tile | None], size: tuple[int, int]) -> torch.Tensor:
        """Upsample view maps `(V, h, w)` to the image size, averaging tiles over their overlaps; on the CPU."""
        if tiles[0] is None:
            full = upsample(grid_maps[:1], size)[0]
        else:
            total = torch.zeros(size, device=grid_maps.device)
            count = torch.zeros(size, device=grid_maps.device)
            for m, t in zip(grid_maps, tiles, strict=True):
                assert t is not None  # tiled: every view is a tile
                total[t.top : t.top + t.side, t.left : t.left + t.side] += upsample(m[None], (t.side, t.side))[0]
                count[t.top : t.top + t.side, t.left : t.left + t.side] += 1.0
            full = total / count
        if self.options.smooth_sigma > 0:
            full = gaussian_smooth(full[None], self.options.smooth_sigma)[0]
        return full.cpu()

    def reduce_views(self, values: torch.Tensor) -> float:
        """One image's score from its views' scores (`tile_reduce`: max or mean)."""
        return float(values.max() if self.options.tile_reduce == "max" else values.mean())
