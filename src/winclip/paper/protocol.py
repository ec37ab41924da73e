"""The evaluation protocol (docs/method.md §5): which runs a dataset gives, at which resolution, and how an
image's map and ground truth are brought to it. Shared by evaluation runs and `winclip report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..method.prompts import OBJECT_NAME_MAPS, TASK_STATES
from ..method.tiling import Tile, square_tiles
from ..model import WinCLIP
from ..options import DEFAULT_SEEDS, DEFAULT_SHOTS, MethodOptions
from .data import ClassData, DatasetError, Sample, load_dataset, load_mask, resize_mask, sample_references


@dataclass(frozen=True)
class Run:
    """One class × shots × seed to evaluate; seed is None for zero-shot."""

    data: ClassData
    shots: int
    seed: int | None
    references: tuple[Path, ...]


@dataclass(frozen=True)
class EvalPlan:
    """A validated dataset and every run to do on it."""

    dataset: str
    root: Path
    classes: tuple[ClassData, ...]
    shots: tuple[int, ...]
    seeds: int
    runs: tuple[Run, ...]


def plan_eval(
    dataset: str,
    root: str | Path,
    classes: Sequence[str] | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: int = DEFAULT_SEEDS,
) -> EvalPlan:
    """Validate the dataset and list the runs; every layout problem is raised at once as a DatasetError."""
    shots = tuple(sorted(set(int(k) for k in shots)))
    if not shots or shots[0] < 0:
        raise ValueError(f"shots must be >= 0, got {list(shots)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    data = load_dataset(dataset, root, classes)
    problems, runs = [], []
    for cls in data:
        if shots[-1] > len(cls.train_good):  # one line per class, for its largest K
            try:
                sample_references(cls, shots[-1], 0)
            except DatasetError as err:
                problems += err.problems
            continue
        runs += [
            Run(cls, k, None if k == 0 else seed, tuple(sample_references(cls, k, seed)) if k else ())
            for k in shots
            for seed in (range(1) if k == 0 else range(seeds))
        ]
    if problems:
        raise DatasetError(problems)
    return EvalPlan(dataset, Path(root), tuple(data), shots, seeds, tuple(runs))


def scoring_settings(
    model: WinCLIP, resolution: int | None, object_names: str = "clean", task_states: bool = False
) -> dict:
    """Everything besides features and files that changes a row's results."""
    prompts, opt = model.prompts, model.options
    return {
        "method": model.method,
        "temperature": opt.temperature,
        "scales": list(opt.scales),
        "aggregation": opt.aggregation,
        "image_scale": opt.image_scale,
        "prompts": [list(prompts.normal_states), list(prompts.anomalous_states), list(prompts.templates)],
        "object_names": dict(OBJECT_NAME_MAPS[object_names]),
        "task_states": {k: list(v) for k, v in TASK_STATES.items()} if task_states else None,
        "tile_reduce": opt.tile_reduce,
        "smooth_sigma": opt.smooth_sigma,
        "multi_crop": opt.multi_crop,
        "fewshot": [opt.fewshot_score, opt.vision_scales, opt.fewshot_aggregation, opt.fewshot_fusion],
        "eval_resolution": resolution,
    }


class MapMaker(Protocol):
    """What `image_map` reads of a model: its options and full_map (a `WinCLIP` or a `Scorer`)."""

    @property
    def options(self) -> MethodOptions: ...
    def full_map(
        self, grid_maps: torch.Tensor, tiles: Sequence[Tile | None], size: tuple[int, int]
    ) -> torch.Tensor: ...


def image_map(model: MapMaker, grid_maps: torch.Tensor, size: tuple[int, int], resolution: int | None) -> torch.Tensor:
    """An image's map at the evaluation resolution from its view maps on the patch grid `(V, h, w)` → `(H', W')`.

    Squash: bilinear upsampling of the grid map straight to the evaluation size.
    Tile: tile maps stitched at the image's own size, then resized (bilinear, antialiased).
    """
    target = size if resolution is None else (resolution, resolution)
    if model.options.resize == "squash":
        return model.full_map(grid_maps, [None], target)
    full = model.full_map(grid_maps, list(square_tiles(size[0], size[1], model.options.tile_overlap)), size)
    if target == size:
        return full
    return F.interpolate(full[None, None], size=target, mode="bilinear", align_corners=False, antialias=True)[0, 0]


def sample_mask(sample: Sample, size: tuple[int, int], resolution: int | None) -> np.ndarray:
    """Ground truth at the evaluation resolution: nearest-neighbour resized; all False for good images."""
    target = size if resolution is None else (resolution, resolution)
    if sample.mask is None:
        return np.zeros(target, dtype=bool)
    mask = load_mask(sample.masks, size)
    return mask if target == size else resize_mask(mask, target)
