"""The paper's baselines on WinCLIP's own backbone: Table 8's "Patch-token" and "Image tiling", and the
supplement's few-shot PatchCore on ViT patch tokens ("hidden" and "last" layers).

Each is a `WinCLIP` whose encoding or scoring differs, so `winclip eval` runs it like any other row:
`make_baseline(kind, model)` builds one on `model`'s backbone with its views, temperature and batch size.

- patch-token: each last-layer patch token, projected into the joint space (ln_post tokens @ proj),
  scored by ascore0 against the text prototypes: the zero-shot map without windows (§4.2).
- image-tiling: WinCLIP's windows cut out of the image in pixels instead: every k×k-patch window
  of the view is cropped, resized (bicubic) to the input size and sent through its own plain
  forward; the class-token embeddings then go through exactly WinCLIP's scoring (Eq. 3, M0).
- patchcore-hidden / patchcore-last: PatchCore (Roth et al. 2022; the official implementation's
  embedding) over the patch tokens of blocks depth/2 and 3·depth/4 (6 and 9 of ViT-B/16+, the
  paper's) or of the last layer (F^P, as WinCLIP+ uses): 3×3 neighbourhoods, adaptive average
  pooling of each layer to 1024 dims and of their concatenation to 1024, squared L2 distance to the
  nearest memory patch (faiss IndexFlatL2's), image score = max over patches, map bilinearly
  upsampled to the input size and Gaussian-blurred with σ = 4. No coreset subsampling: the paper
  does not say, and with 1-4 shots the memory holds at most 4·L patches (the official sampler
  exists to bound a full-shot memory and is randomised).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from PIL import Image

from ..backbones.openclip import Backbone
from ..method.features import Features
from ..method.few_shot import ReferenceMemory
from ..method.prompts import PromptSet
from ..method.scorer import GridScores
from ..method.tiling import Tile
from ..method.windows import window_indices
from ..method.zero_shot import ascore0, gaussian_smooth, upsample
from ..model import EncodedImages, WinCLIP

BASELINES = ("patch-token", "image-tiling", "patchcore-hidden", "patchcore-last")
TILES_PER_FORWARD = 64  # image-tiling crops sent through the model together
PATCHCORE_DIM = 1024  # the official pretrain and target embedding dimensions
PATCHCORE_NEIGHBOURHOOD = 3  # patches aggregated around each patch (official patchsize)
PATCHCORE_SIGMA = 4.0  # Gaussian blur of the map at the input size (official RescaleSegmentor)
NN_CHUNK = 4096  # memory rows per distance block


class PatchTokenBaseline(WinCLIP):
    """Table 8 "Patch-token": ascore0 of the projected last-layer patch tokens; one plain forward."""

    method = "patch-token"

    def feature_key(self) -> dict:
        return {"baseline": self.method}

    def encode_batch(self, x: torch.Tensor) -> Features:
        feats = self.backbone.encode(x, ())
        assert self.backbone.projection is not None  # make_baseline refuses runtimes without it
        proj = self.backbone.projection.to(feats.patches.device, torch.float32)
        return Features(feats.image, {1: feats.patches @ proj}, feats.patches)


class ImageTilingBaseline(WinCLIP):
    """Table 8 "Image tiling": WinCLIP's windows as pixel crops, each resized and encoded on its own."""

    method = "image-tiling"

    def feature_key(self) -> dict:
        return {"baseline": self.method}

    def tile_embeddings(self, part: Image.Image, k: int) -> torch.Tensor:
        """Class-token embeddings `(W_k, D)` of every k×k-patch window of one view, cut from its pixels."""
        size = self.info.image_size
        grid = self.backbone.grid
        sy, sx = part.height / grid[0], part.width / grid[1]  # view pixels per patch
        boxes = []
        for first in window_indices(grid, k)[:, 0].tolist():
            r, c = divmod(first, grid[1])
            boxes.append((c * sx, r * sy, (c + k) * sx, (r + k) * sy))
        preprocess = self.backbone.preprocess
        tiles = [preprocess(part.resize((size[1], size[0]), Image.Resampling.BICUBIC, box=b)) for b in boxes]
        step = TILES_PER_FORWARD
        return torch.cat([self.embed(torch.stack(tiles[i : i + step])) for i in range(0, len(tiles), step)])

    def encode_images(self, images: Sequence[Image.Image], *, crops: bool | None = None) -> EncodedImages:
        base = super().encode_images(images, crops=crops)  # F^I and F^P of each view (and its windows)
        parts = [p for img in images for p in self.view_images(img)[0]]
        windows = {
            k: torch.stack([self.tile_embeddings(p, k) for p in parts]).to(base.features.image.device)
            for k in self.options.scales
        }
        feats = Features(base.features.image, windows, base.features.patches, base.features.crops)
        return EncodedImages(feats, base.owner, base.tiles, base.sizes)

    def encode_batch(self, x: torch.Tensor) -> Features:
        feats = self.backbone.encode(x, ())
        return Features(feats.image, {}, feats.patches)


class PatchCoreBaseline(WinCLIP):
    """The supplement's few-shot PatchCore on ViT patch tokens of hidden layers or of the last layer."""

    method = "patchcore-last"
    rescorable = False  # its own distances and blur: no run.json / report.html for `winclip report`

    def hidden_layers(self) -> tuple[int, ...]:
        """Blocks whose tokens are used (1-based); () = the last layer's F^P."""
        return ()

    def feature_key(self) -> dict:
        layers = self.hidden_layers()
        return {"baseline": self.method, "layers": list(layers)} if layers else {}

    def encode_batch(self, x: torch.Tensor) -> Features:
        layers = self.hidden_layers()
        feats = self.backbone.encode(x, self.options.scales)
        if not layers:
            return feats
        assert isinstance(self.backbone, Backbone)  # make_baseline: hidden layers need the torch backbone
        return Features(feats.image, feats.windows, self.backbone.hidden_tokens(x, layers))

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """PatchCore's patch embedding of `(N, L, C·layers)` tokens → `(N, L, PATCHCORE_DIM)`."""
        n, length, width = patches.shape
        layers = max(1, len(self.hidden_layers()))
        h, w = self.backbone.grid
        per_layer = []
        for part in patches.float().split(width // layers, dim=-1):
            grid = part.transpose(1, 2).reshape(n, -1, h, w)
            hood = F.unfold(grid, PATCHCORE_NEIGHBOURHOOD, padding=PATCHCORE_NEIGHBOURHOOD // 2)  # (N, C·9, L)
            flat = hood.transpose(1, 2).reshape(n * length, 1, -1)
            per_layer.append(F.adaptive_avg_pool1d(flat, PATCHCORE_DIM)[:, 0])
        stacked = torch.stack(per_layer, dim=1).reshape(n * length, 1, -1)
        return F.adaptive_avg_pool1d(stacked, PATCHCORE_DIM).view(n, length, PATCHCORE_DIM)

    def fit_features(self, feats: Features) -> WinCLIP:
        memory = self.embed_patches(feats.patches.to(self.device)).flatten(0, 1)
        self.memory_ = ReferenceMemory(memory, {}, len(feats))
        return self

    def score(self, feats: Features) -> GridScores:
        if self.memory_ is None:
            raise ValueError("PatchCore needs normal references: it has no zero-shot mode (shots >= 1)")
        if self.prototypes_ is None:
            raise RuntimeError("no text prototypes: call set_object(name) first (they give the zero_shot column)")
        feats = feats.to(self.device, torch.float32)
        distances = squared_nearest(self.embed_patches(feats.patches), self.memory_.patches)
        zero = ascore0(feats.image, *self.prototypes_, self.options.temperature)
        return GridScores(distances.amax(dim=1), zero, distances.view(len(feats), *self.backbone.grid))

    def full_map(self, grid_maps: torch.Tensor, tiles: Sequence[Tile | None], size: tuple[int, int]) -> torch.Tensor:
        fine = gaussian_smooth(upsample(grid_maps, self.info.image_size), PATCHCORE_SIGMA)
        return self.scorer.full_map(fine, tiles, size)


class PatchCoreHiddenBaseline(PatchCoreBaseline):
    method = "patchcore-hidden"

    def hidden_layers(self) -> tuple[int, ...]:
        visual: Any = self.clip.visual  # open_clip's VisionTransformer, used by attribute
        depth = len(visual.transformer.resblocks)
        return tuple(dict.fromkeys((max(1, depth // 2), max(1, depth * 3 // 4))))


def squared_nearest(queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """min_r ||q − r||² over the memory `(M, D)` for queries `(N, Q, D)` → `(N, Q)`, NN_CHUNK rows at a time."""
    q = queries.flatten(0, 1)
    best = torch.full((q.shape[0],), float("inf"), device=q.device)
    for start in range(0, memory.shape[0], NN_CHUNK):
        block = memory[start : start + NN_CHUNK].to(q.device, torch.float32)
        best = torch.minimum(best, torch.cdist(q, block).square().amin(dim=1))
    return best.view(queries.shape[:2])


class _Shared(TypedDict):
    """What every baseline takes from the model it is built on."""

    temperature: float
    resize: str
    tile_overlap: float
    tile_reduce: str
    batch_size: int
    prompts: PromptSet


def make_baseline(kind: str, model: WinCLIP) -> WinCLIP:
    """The baseline `kind` (BASELINES) on `model`'s backbone with its views, temperature, batch size and prompts."""
    opt = model.options
    common: _Shared = {
        "temperature": opt.temperature,
        "resize": opt.resize,
        "tile_overlap": opt.tile_overlap,
        "tile_reduce": opt.tile_reduce,
        "batch_size": model.batch_size,
        "prompts": model.prompts,
    }
    if kind in ("patch-token", "patchcore-hidden") and not isinstance(model.backbone, Backbone):
        needs = "the image projection" if kind == "patch-token" else "hidden layers"
        raise ValueError(f"the {kind} baseline needs {needs}, which the {model.backbone.runtime} runtime lacks")
    if kind == "patch-token":
        return PatchTokenBaseline(model.backbone, scales=(1,), image_scale=False, **common)
    if kind == "image-tiling":
        return ImageTilingBaseline(
            model.backbone, scales=opt.scales, image_scale=opt.image_scale, aggregation=opt.aggregation, **common
        )
    if kind == "patchcore-last":  # shares WinCLIP's cached features: F^P is all it uses
        return PatchCoreBaseline(model.backbone, scales=opt.scales, **common)
    if kind == "patchcore-hidden":
        return PatchCoreHiddenBaseline(model.backbone, scales=(), **common)
    raise ValueError(f"unknown baseline {kind!r}; use one of {', '.join(BASELINES)}")
