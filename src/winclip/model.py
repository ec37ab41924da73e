"""The WinCLIP estimator: set_object / fit / encode / score / predict (SPEC §3-§4)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import open_clip
import torch
from tqdm.auto import tqdm

from .backbone import PRECISIONS, Features, VisionTower, encode_text, load_clip, resolve_precision
from .images import ImageError, ImageInput, Preprocess, Tile, load_image, source_name, square_tiles
from .memory import ReferenceMemory, few_shot_score, nearest_distance, vision_map
from .prompts import OBJECT_NAMES, PROMPT_SETS, PromptSet, object_phrase, text_prototypes
from .scoring import aggregate_windows, ascore0, gaussian_smooth, harmonic_fusion, upsample
from .windows import coverage_matrix

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
RESIZE_MODES = ("squash", "tile")
TILE_REDUCTIONS = ("max", "mean")


@dataclass(frozen=True)
class GridScores:
    """Scores of N encoded views on the patch grid.

    scores `(N,)` final score; zero_shot `(N,)` = ascore0(F^I); maps `(N, h, w)` final patch map.
    """

    scores: torch.Tensor
    zero_shot: torch.Tensor
    maps: torch.Tensor


@dataclass(frozen=True)
class Prediction:
    """Per image: scores `(N,)` in [0, 1], zero_shot `(N,)` = ascore0(F^I), maps: one `(H, W)` float32 map each."""

    scores: torch.Tensor
    zero_shot: torch.Tensor
    maps: list[torch.Tensor]


@dataclass(frozen=True)
class ImageResult:
    """One image of a streamed prediction: a score and a map, or the error that stopped it."""

    index: int
    source: str
    score: float | None = None
    zero_shot: float | None = None
    map: torch.Tensor | None = None
    error: ImageError | None = None


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class WinCLIP:
    """Zero-shot WinCLIP and few-shot WinCLIP+ over an open_clip ViT.

    The constructor loads the backbone and stores options; `set_object` (or
    `set_prototypes`) sets the text prototypes, `fit` the normal references
    (none = zero-shot), `predict` scores images.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: str | None = DEFAULT_PRETRAINED,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        temperature: float = 0.07,
        scales: Sequence[int] = (2, 3),
        image_scale: bool = True,
        aggregation: str = "harmonic",
        resize: str = "squash",
        tile_overlap: float = 0.25,
        tile_reduce: str = "max",
        smooth_sigma: float = 0.0,
        min_size: int | None = None,
        batch_size: int = 8,
        prompts: str | PromptSet = "winclip",
        cache_dir: str | None = None,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize!r}; use one of {', '.join(RESIZE_MODES)}")
        if tile_reduce not in TILE_REDUCTIONS:
            raise ValueError(f"unknown tile reduction {tile_reduce!r}; use one of {', '.join(TILE_REDUCTIONS)}")
        if aggregation not in ("harmonic", "mean"):
            raise ValueError(f"unknown aggregation {aggregation!r}; use 'harmonic' or 'mean'")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(prompts, str) and prompts not in PROMPT_SETS:
            raise ValueError(f"unknown prompt set {prompts!r}; use one of {', '.join(PROMPT_SETS)}")
        self.device = _pick_device(device)
        self.precision = resolve_precision(precision, self.device)  # "auto" → fp32 / bf16 / fp16
        self.dtype = PRECISIONS[self.precision]
        self.temperature = float(temperature)
        self.scales = tuple(int(k) for k in scales)
        self.image_scale = bool(image_scale)
        if not self.scales and not self.image_scale:
            raise ValueError("zero-shot maps need at least one window scale or the image scale")
        self.aggregation = aggregation
        self.resize = resize
        self.tile_overlap = float(tile_overlap)
        self.tile_reduce = tile_reduce
        self.smooth_sigma = float(smooth_sigma)
        self.batch_size = int(batch_size)
        self.prompts = PROMPT_SETS[prompts] if isinstance(prompts, str) else prompts

        self.clip, self.info = load_clip(backbone, pretrained, self.device, cache_dir)
        self.clip.visual.to(self.dtype)
        self.tower = VisionTower(self.clip.visual)
        for k in self.scales:
            coverage_matrix(self.grid, k)  # validates that every window size fits the grid
        self.min_size = self.info.patch_size[0] if min_size is None else int(min_size)
        self.preprocess = Preprocess(self.info.image_size, self.info.mean, self.info.std)
        self.tokenizer = open_clip.get_tokenizer(self.info.name)
        self._prototype_cache: dict[tuple[str, PromptSet], tuple[torch.Tensor, torch.Tensor]] = {}
        self.object_: str | None = None
        self.prototypes_: tuple[torch.Tensor, torch.Tensor] | None = None
        self.memory_: ReferenceMemory | None = None
        self._coverages: dict[int, torch.Tensor] = {}

    # -- text side -------------------------------------------------------------------------

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of the backbone."""
        return self.tower.grid

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint embedding."""
        return self.tower.visual.proj.shape[1]

    def set_object(
        self,
        name: str,
        *,
        normal_states: Sequence[str] = (),
        anomalous_states: Sequence[str] = (),
        prompts: PromptSet | None = None,
        object_names: dict[str, str] | None = None,
    ) -> WinCLIP:
        """Text prototypes for object `name` from the prompt ensemble (extra states appended); cached."""
        phrase = object_phrase(name, OBJECT_NAMES if object_names is None else object_names)
        if not phrase:
            raise ValueError("object name is empty")
        prompt_set = (prompts or self.prompts).extended(normal_states, anomalous_states)
        key = (phrase, prompt_set)
        if key not in self._prototype_cache:
            normal, anomalous = prompt_set.prompts(phrase)
            with torch.inference_mode():
                self._prototype_cache[key] = text_prototypes(
                    lambda texts: encode_text(self.clip, self.tokenizer, texts), normal, anomalous
                )
        self.object_ = phrase
        self.prototypes_ = self._prototype_cache[key]
        return self

    def set_prototypes(self, normal: torch.Tensor, anomalous: torch.Tensor) -> WinCLIP:
        """Use two given `(D,)` text prototypes instead of a prompt ensemble."""
        protos = []
        for label, t in (("normal", normal), ("anomalous", anomalous)):
            t = torch.as_tensor(t, dtype=torch.float32)
            if t.shape != (self.embed_dim,):
                raise ValueError(f"{label} prototype has shape {tuple(t.shape)}, expected ({self.embed_dim},)")
            protos.append(torch.nn.functional.normalize(t, dim=-1).to(self.device))
        self.object_ = None
        self.prototypes_ = (protos[0], protos[1])
        return self

    # -- features --------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> Features:
        """F^I, window embeddings and patch tokens of a preprocessed batch `(N, 3, H, W)` (fp32 out)."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.info.image_size:
            h, w = self.info.image_size
            raise ValueError(f"expected a preprocessed tensor of shape (N, 3, {h}, {w}), got {tuple(x.shape)}")
        with torch.inference_mode():
            feats = self.tower.encode(x.to(self.device, self.dtype), self.scales)
        return feats.to(self.device, torch.float32)

    def fit(self, references: Sequence[ImageInput] | torch.Tensor | None = None) -> WinCLIP:
        """Set the K normal references (replacing earlier ones); none or empty = zero-shot."""
        if references is None or len(references) == 0:
            self.memory_ = None
            return self
        if isinstance(references, torch.Tensor):
            batches = list(references.split(self.batch_size))
        else:
            images = [load_image(r, source_name(r, i), self.min_size) for i, r in enumerate(references)]
            views = [v for img in images for v in self.views(img)[0]]
            batches = [torch.stack(b) for b in _chunks(views, self.batch_size)]
        feats = Features.cat([self.encode(b) for b in batches])
        return self.fit_features(feats)

    def fit_features(self, feats: Features) -> WinCLIP:
        """Set the references from already encoded features (e.g. a feature cache)."""
        missing = [k for k in self.scales if k not in feats.windows]
        if missing:
            raise ValueError(f"reference features lack window scales {missing}")
        windows = {k: feats.windows[k] for k in self.scales}
        self.memory_ = ReferenceMemory.from_features(feats.patches, windows).to(self.device)
        return self

    # -- scoring ---------------------------------------------------------------------------

    def score(self, feats: Features) -> GridScores:
        """Zero-shot (SPEC §3) or few-shot (SPEC §4) scores and patch-grid maps of encoded views."""
        if self.prototypes_ is None:
            raise RuntimeError("no text prototypes: call set_object(name) or set_prototypes(...) before predicting")
        feats = feats.to(self.device, torch.float32)
        t_n, t_a = self.prototypes_
        n, (h, w) = len(feats), self.grid
        zero = ascore0(feats.image, t_n, t_a, self.temperature)
        maps = [
            aggregate_windows(
                ascore0(feats.windows[k], t_n, t_a, self.temperature), self._coverage(k), self.aggregation
            )
            for k in self.scales
        ]
        if self.image_scale:
            maps.append(zero[:, None].expand(n, h * w))
        m0 = harmonic_fusion(maps)
        if self.memory_ is None:
            return GridScores(zero, zero, m0.view(n, h, w))
        mem = self.memory_
        assoc = [nearest_distance(feats.patches, mem.patches)] + [
            aggregate_windows(
                nearest_distance(feats.windows[k], mem.windows[k]), self._coverage(k), self.aggregation
            )
            for k in self.scales
        ]
        mw = vision_map(assoc)
        return GridScores(few_shot_score(zero, mw), zero, (0.5 * (m0 + mw)).view(n, h, w))

    def _coverage(self, k: int) -> torch.Tensor:
        """Eq. 3's coverage matrix for window size k, kept on the model's device (no copy per call)."""
        if k not in self._coverages:
            self._coverages[k] = coverage_matrix(self.grid, k).to(self.device)
        return self._coverages[k]

    def views(self, img) -> tuple[list[torch.Tensor], list[Tile | None]]:
        """Preprocessed views of one image: itself (squash) or its square tiles."""
        if self.resize == "squash":
            return [self.preprocess(img)], [None]
        tiles = square_tiles(img.height, img.width, self.tile_overlap)
        crops = [img.crop((t.left, t.top, t.left + t.side, t.top + t.side)) for t in tiles]
        return [self.preprocess(c) for c in crops], list(tiles)

    def full_map(self, grid_maps: torch.Tensor, tiles: list[Tile | None], size: tuple[int, int]) -> torch.Tensor:
        """Upsample view maps `(V, h, w)` to the image size, averaging tiles over their overlaps."""
        if tiles[0] is None:
            full = upsample(grid_maps[:1], size)[0]
        else:
            total = torch.zeros(size, device=grid_maps.device)
            count = torch.zeros(size, device=grid_maps.device)
            for m, t in zip(grid_maps, tiles):
                total[t.top : t.top + t.side, t.left : t.left + t.side] += upsample(m[None], (t.side, t.side))[0]
                count[t.top : t.top + t.side, t.left : t.left + t.side] += 1.0
            full = total / count
        if self.smooth_sigma > 0:
            full = gaussian_smooth(full[None], self.smooth_sigma)[0]
        return full.cpu()

    def reduce_views(self, values: torch.Tensor) -> float:
        """One image's score from its views' scores (`tile_reduce`: max or mean)."""
        return float(values.max() if self.tile_reduce == "max" else values.mean())

    # -- prediction ------------------------------------------------------------------------

    def iter_predict(
        self, images: Sequence[ImageInput], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[ImageResult]:
        """Stream results in input order, `batch_size` images at a time; a bad input yields its error."""
        bs = batch_size or self.batch_size
        bar = tqdm(total=len(images), unit="img", disable=not progress, desc="predict")
        try:
            for start in range(0, len(images), bs):
                chunk = []
                for i in range(start, min(start + bs, len(images))):
                    name = source_name(images[i], i)
                    try:
                        chunk.append((i, name, load_image(images[i], name, self.min_size)))
                    except ImageError as err:
                        chunk.append((i, name, err))
                yield from self._predict_chunk(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()

    def _predict_chunk(self, chunk: list) -> Iterator[ImageResult]:
        good = [(i, name, img) for i, name, img in chunk if not isinstance(img, ImageError)]
        views, owners, tiles = [], [], []
        for j, (_, _, img) in enumerate(good):
            v, t = self.views(img)
            views += v
            tiles += t
            owners += [j] * len(v)
        grid = None
        if views:
            parts = [self.score(self.encode(torch.stack(b))) for b in _chunks(views, self.batch_size)]
            grid = GridScores(*(torch.cat([getattr(p, f) for p in parts]) for f in ("scores", "zero_shot", "maps")))
        owner_t = torch.tensor(owners)
        done = {}
        for j, (i, name, img) in enumerate(good):
            sel = (owner_t == j).nonzero()[:, 0]
            full = self.full_map(grid.maps[sel.to(grid.maps.device)], [tiles[s] for s in sel], (img.height, img.width))
            done[i] = ImageResult(
                i, name, self.reduce_views(grid.scores[sel]), self.reduce_views(grid.zero_shot[sel]), full
            )
        for i, name, img in chunk:
            yield done[i] if i in done else ImageResult(i, name, error=img)

    def predict(
        self,
        images: Sequence[ImageInput] | ImageInput | torch.Tensor,
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Prediction:
        """Scores and full-resolution maps for images (paths, PIL, arrays) or a preprocessed `(N,3,H,W)` tensor.

        Every input is decoded before any model work, so a bad one raises ImageError
        at once; use `iter_predict` to keep going past bad inputs.
        """
        if isinstance(images, torch.Tensor):
            bs = batch_size or self.batch_size
            parts = [self.score(self.encode(b)) for b in images.split(bs)]
            maps = upsample(torch.cat([p.maps for p in parts]), tuple(images.shape[2:]))
            if self.smooth_sigma > 0:
                maps = gaussian_smooth(maps, self.smooth_sigma)
            return Prediction(
                torch.cat([p.scores for p in parts]).cpu(),
                torch.cat([p.zero_shot for p in parts]).cpu(),
                list(maps.cpu()),
            )
        if not isinstance(images, Sequence) or isinstance(images, str):
            images = [images]
        loaded = [load_image(x, source_name(x, i), self.min_size) for i, x in enumerate(images)]
        results = list(self.iter_predict(loaded, batch_size=batch_size, progress=progress))
        return Prediction(
            torch.tensor([r.score for r in results]),
            torch.tensor([r.zero_shot for r in results]),
            [r.map for r in results],
        )


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

