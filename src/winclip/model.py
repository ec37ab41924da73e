"""The WinCLIP estimator: set_object / fit / encode / score / predict (docs/method.md §3-§4).

The constructor validates the method options and takes a loaded backbone (an `Encoder`) or
loads one: unlike a scikit-learn estimator's, it does the expensive part, because the weights
are not learned from the user's data; `WinCLIP(backbone, ...)` and `with_options` share loaded
weights instead. `set_object` (or `set_prototypes`) sets the text prototypes, `fit` the normal
references (none = zero-shot), `predict` scores images. As in scikit-learn, what was learned
from the user's data ends in `_` (`object_`, `prototypes_`, `memory_`), and refitting replaces it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import __version__
from .backbones import BackboneInfo, Encoder, NoTextEncoderError, Preprocess, TextEncoder, load_backbone
from .images import ImageError, ImageInput, load_image, source_name
from .method.crops import N_CROPS, crop_resize, ten_crops
from .method.features import Features
from .method.few_shot import ReferenceMemory
from .method.prompts import OBJECT_NAMES, PROMPT_SETS, PromptSet, object_phrase
from .method.scorer import GridScores, Scorer
from .method.tiling import Tile, square_tiles
from .method.zero_shot import gaussian_smooth, upsample
from .options import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE, DEFAULT_PRETRAINED, MethodOptions, ModelSpec
from .predictions import ImageResult, Prediction
from .progress import plural, progress_bar


@dataclass(frozen=True)
class EncodedImages:
    """Features of every view of N images (one view when squashed, its tiles when tiled) and their owners.

    features `(V, ...)`; owner `(V,)` the image of each view; tiles: the tile of each view
    (None = the whole image); sizes: (H, W) of each image.
    """

    features: Features
    owner: torch.Tensor
    tiles: tuple[Tile | None, ...]
    sizes: tuple[tuple[int, int], ...]

    def views_of(self, image: int) -> torch.Tensor:
        """Indices of the views of one image `(v,)`."""
        return (self.owner == image).nonzero()[:, 0]


def _check_shared(
    backbone: Encoder, pretrained: str | None, device: str | torch.device | None, precision: str, loading: dict
) -> None:
    """A given backbone fixes the weights: loading options may only be left at their defaults or agree."""
    clashes = [
        name
        for name, given, default, actual in (
            ("pretrained", pretrained, DEFAULT_PRETRAINED, backbone.info.pretrained),
            ("device", None if device in (None, "auto") else str(torch.device(device)), None, str(backbone.device)),
            ("precision", precision, "auto", backbone.precision),
            ("cache_dir", loading["cache_dir"], None, None),
            ("runtime", loading["runtime"], "torch", None),
            ("export_dir", loading["export_dir"], None, None),
        )
        if given != default and given != actual
    ]
    if clashes:
        raise ValueError(f"{', '.join(clashes)}: fixed by the given backbone; leave them out or load a new one")


class WinCLIP:
    """Zero-shot WinCLIP and few-shot WinCLIP+ over an open_clip ViT.

    `backbone` is an open_clip model name (or config JSON), loaded with `pretrained`, `device`,
    `precision` and `cache_dir` (or, with `runtime="onnxruntime"|"openvino"`, the export of it in
    `export_dir`), or an already loaded backbone (an `Encoder`) to share. `with_options` gives another
    configuration on the same backbone without reloading anything.
    """

    method = "winclip"  # what scores the features; the paper's baselines (winclip.paper.baselines) name theirs
    rescorable = True  # a weightless Scorer scores its features as it does (winclip report relies on it)

    def __init__(
        self,
        backbone: str | Encoder = DEFAULT_BACKBONE,
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
        multi_crop: bool = False,
        fewshot_score: str = "both",
        vision_scales: Sequence[int] | None = None,
        fewshot_aggregation: str = "same",
        fewshot_fusion: str = "mean",
        patch_features: str = "tokens",
        min_size: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prompts: str | PromptSet = "winclip",
        cache_dir: str | None = None,
        runtime: str = "torch",
        export_dir: str | None = None,
    ) -> None:
        vision = None if vision_scales is None else tuple(vision_scales)
        options = MethodOptions(
            temperature, tuple(scales), image_scale, aggregation, resize, tile_overlap, tile_reduce, smooth_sigma,
            multi_crop, fewshot_score, vision, fewshot_aggregation, fewshot_fusion, patch_features,
        )  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(prompts, str) and prompts not in PROMPT_SETS:
            raise ValueError(f"unknown prompt set {prompts!r}; use one of {', '.join(PROMPT_SETS)}")
        loading = {"cache_dir": cache_dir, "runtime": runtime, "export_dir": export_dir}
        if isinstance(backbone, (str, os.PathLike)):
            where = None if device is None else str(device)
            spec = ModelSpec(
                str(backbone), pretrained, where, precision, cache_dir=cache_dir, runtime=runtime, export_dir=export_dir
            )
            backbone = load_backbone(spec)
        elif isinstance(backbone, Encoder):
            _check_shared(backbone, pretrained, device, precision, loading)
        else:
            raise TypeError(f"backbone must be a model name, a config .json or a loaded backbone, not {backbone!r}")
        if options.patch_features == "projected" and backbone.projection is None:
            raise ValueError(
                f"patch_features='projected' needs the image projection, which the {backbone.runtime} runtime lacks"
            )
        self.scorer = Scorer(options, backbone.grid, backbone.device)
        self.backbone = backbone
        self.options = options
        self.batch_size = int(batch_size)
        self.min_size = backbone.info.patch_size[0] if min_size is None else int(min_size)
        self.prompts = PROMPT_SETS[prompts] if isinstance(prompts, str) else prompts
        self.object_: str | None = None
        self.prototypes_: tuple[torch.Tensor, torch.Tensor] | None = None
        self.memory_: ReferenceMemory | None = None

    def __repr__(self) -> str:
        """The backbone, the options that differ from the defaults, and what was fitted."""
        changed = {k: v for k, v in dataclasses.asdict(self.options).items() if v != getattr(MethodOptions, k)}
        parts = [repr(self.backbone), *(f"{k}={v!r}" for k, v in changed.items())]
        fitted = "zero-shot" if self.memory_ is None else f"{plural(self.memory_.shots, 'reference view')}"
        parts.append(f"object={self.object_!r}, {fitted}" if self.prototypes_ is not None else "no object set")
        return f"WinCLIP({', '.join(parts)})"

    def with_options(self, **changes: object) -> WinCLIP:
        """A new, unfitted WinCLIP on this backbone with some options changed (validated as in the constructor)."""
        current = {
            **dataclasses.asdict(self.options),
            "min_size": self.min_size,
            "batch_size": self.batch_size,
            "prompts": self.prompts,
        }
        unknown = sorted(set(changes) - set(current))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(current)}")
        return WinCLIP(self.backbone, **{**current, **changes})

    # -- the backbone's side -----------------------------------------------------------------

    @property
    def clip(self) -> torch.nn.Module:
        """The open_clip model (the backbone's: `model.backbone` has its tower, tokenizer, preprocessing, dtype)."""
        clip = getattr(self.backbone, "clip", None)
        if clip is None:
            raise ValueError(f"the {self.backbone.runtime} runtime has no PyTorch model; use runtime='torch' for it")
        return clip

    @property
    def info(self) -> BackboneInfo:
        """What was loaded."""
        return self.backbone.info

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # -- text side ---------------------------------------------------------------------------

    def set_object(
        self,
        name: str,
        *,
        normal_states: Sequence[str] = (),
        anomalous_states: Sequence[str] = (),
        prompts: PromptSet | None = None,
        object_names: dict[str, str] | None = None,
    ) -> WinCLIP:
        """Text prototypes for object `name` from the prompt ensemble (extra states appended); cached per backbone."""
        phrase = object_phrase(name, OBJECT_NAMES if object_names is None else object_names)
        if not phrase:
            raise ValueError("object name is empty")
        prompt_set = (prompts or self.prompts).extended(normal_states, anomalous_states)
        self.prototypes_ = self.text_encoder().prototypes(phrase, prompt_set)
        self.object_ = phrase
        return self

    def text_encoder(self) -> TextEncoder:
        """The backbone's text encoder; NoTextEncoderError (one line) when its runtime has none."""
        if self.backbone.text is None:
            raise NoTextEncoderError(
                f"the {self.backbone.runtime} runtime has no text encoder: use a profile made with the torch runtime "
                "(`winclip profile create`, then --profile) or set_prototypes(...)"
            )
        return self.backbone.text

    def set_prototypes(self, normal: torch.Tensor, anomalous: torch.Tensor) -> WinCLIP:
        """Use two given `(D,)` text prototypes instead of a prompt ensemble."""
        protos = []
        for label, t in (("normal", normal), ("anomalous", anomalous)):
            t = torch.as_tensor(t, dtype=torch.float32)
            if t.shape != (self.backbone.embed_dim,):
                raise ValueError(f"{label} prototype has shape {tuple(t.shape)}, expected ({self.backbone.embed_dim},)")
            protos.append(torch.nn.functional.normalize(t, dim=-1).to(self.device))
        self.object_ = None
        self.prototypes_ = (protos[0], protos[1])
        return self

    # -- features ----------------------------------------------------------------------------

    def feature_key(self) -> dict:
        """What, besides the backbone and the views, changes this model's encoded features (a cache key part)."""
        return {"patch_features": "projected"} if self.options.patch_features == "projected" else {}

    def encode(self, x: torch.Tensor | Sequence[ImageInput] | ImageInput) -> Features:
        """F^I, window embeddings and patch tokens (fp32) of a preprocessed batch `(N, 3, H, W)`, or of images
        (paths, PIL images, numpy arrays; one or a list) decoded and preprocessed here: one row per view (per
        image when squashed, per tile when tiled; `encode_images` tells the owners)."""
        if isinstance(x, torch.Tensor):
            return self.encode_batch(x)
        images = [x] if isinstance(x, (str, os.PathLike, Image.Image, np.ndarray)) else list(x)
        return self.encode_images([self.load(img, i) for i, img in enumerate(images)], crops=False).features

    def encode_batch(self, x: torch.Tensor) -> Features:
        """The features of one preprocessed batch `(N, 3, H, W)` (fp32): what a baseline encodes differently."""
        feats = self.backbone.encode(x, self.options.scales)
        if self.options.patch_features == "tokens":
            return feats
        assert self.backbone.projection is not None  # checked in __init__ for patch_features="projected"
        proj = self.backbone.projection.to(feats.patches.device, torch.float32)
        return Features(feats.image, feats.windows, feats.patches @ proj, feats.crops)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """F^I alone `(N, D)` of a preprocessed batch `(N, 3, H, W)`: the plain forward (fp32 out)."""
        return self.backbone.embed(x)

    def view_images(self, img: Image.Image) -> tuple[list[Image.Image], list[Tile | None]]:
        """The parts of one decoded image that become views: itself (squash) or its square tiles."""
        if self.options.resize == "squash":
            return [img], [None]
        tiles = square_tiles(img.height, img.width, self.options.tile_overlap)
        return [img.crop((t.left, t.top, t.left + t.side, t.top + t.side)) for t in tiles], list(tiles)

    def views(self, img: Image.Image) -> tuple[list[torch.Tensor], list[Tile | None]]:
        """Preprocessed views of one decoded image: itself (squash) or its square tiles."""
        parts, tiles = self.view_images(img)
        return [self.backbone.preprocess(p) for p in parts], tiles

    def encode_crops(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Multi-crop embeddings (docs/method.md §3) of every view of the images: `(V, 10, D)`.

        Each view is resized (bicubic) to S·256/224, cut into its ten S×S crops, and each crop
        goes through the plain forward, `batch_size` views' crops at a time.
        """
        size = self.info.image_size[0]
        resize = Preprocess((crop_resize(size),) * 2, self.info.mean, self.info.std)
        crops = [ten_crops(resize(part), size) for img in images for part in self.view_images(img)[0]]
        step = self.batch_size
        out = [self.embed(torch.cat(crops[i : i + step])) for i in range(0, len(crops), step)]
        return torch.cat(out).view(len(crops), N_CROPS, -1)

    def encode_images(self, images: Sequence[Image.Image], *, crops: bool | None = None) -> EncodedImages:
        """The one encoding path: decoded images → views → batches of `batch_size` → features and owners.

        `crops`: also the multi-crop embeddings (default: when the options ask for multi-crop).
        """
        views, tiles, owner = [], [], []
        for i, img in enumerate(images):
            v, t = self.views(img)
            views += v
            tiles += t
            owner += [i] * len(v)
        if not views:
            raise ValueError("encode_images needs at least one image")
        parts = [
            self.encode_batch(torch.stack(views[i : i + self.batch_size]))
            for i in range(0, len(views), self.batch_size)
        ]
        feats = Features.cat(parts)
        if self.options.multi_crop if crops is None else crops:
            feats = feats.with_crops(self.encode_crops(images).to(feats.image.device))
        sizes = tuple((img.height, img.width) for img in images)
        return EncodedImages(feats, torch.tensor(owner), tuple(tiles), sizes)

    def load(self, src: ImageInput, index: int = 0) -> Image.Image:
        """Decode one input as this model accepts it (ImageError naming it otherwise)."""
        return load_image(src, source_name(src, index), self.min_size)

    def fit(self, references: Sequence[ImageInput] | torch.Tensor | None = None) -> WinCLIP:
        """Set the K normal references (replacing earlier ones); none or empty = zero-shot."""
        if references is None or len(references) == 0:
            self.memory_ = None
            return self
        if isinstance(references, torch.Tensor):
            feats = Features.cat([self.encode_batch(b) for b in references.split(self.batch_size)])
        else:
            feats = self.encode_images([self.load(r, i) for i, r in enumerate(references)], crops=False).features
        return self.fit_features(feats)

    def fit_features(self, feats: Features) -> WinCLIP:
        """Set the references from already encoded features (e.g. a feature cache or a profile)."""
        missing = [k for k in self.options.scales if k not in feats.windows]
        if missing:
            raise ValueError(f"reference features lack window scales {missing}")
        windows = {k: feats.windows[k] for k in self.options.scales}
        self.memory_ = ReferenceMemory.from_features(feats.patches, windows).to(self.device)
        return self

    # -- scoring -----------------------------------------------------------------------------

    def score(self, feats: Features) -> GridScores:
        """Zero-shot (docs/method.md §3) or few-shot (docs/method.md §4) scores and patch-grid maps of encoded views."""
        if self.prototypes_ is None:
            raise RuntimeError("no text prototypes: call set_object(name) or set_prototypes(...) before predicting")
        return self.scorer.score(feats, self.prototypes_, self.memory_)

    def full_map(self, grid_maps: torch.Tensor, tiles: Sequence[Tile | None], size: tuple[int, int]) -> torch.Tensor:
        """Upsample view maps `(V, h, w)` to the image size, averaging tiles over their overlaps."""
        return self.scorer.full_map(grid_maps, tiles, size)

    def reduce_views(self, values: torch.Tensor) -> float:
        """One image's score from its views' scores (`tile_reduce`: max or mean)."""
        return self.scorer.reduce_views(values)

    # -- prediction --------------------------------------------------------------------------

    def iter_predict(
        self, images: Sequence[ImageInput], *, batch_size: int | None = None, progress: bool = False
    ) -> Iterator[ImageResult]:
        """Stream results in input order, `batch_size` images at a time; a bad input yields its error.

        Each result hands back the decoded image (`result.image`), so no caller decodes twice.
        """
        bs = batch_size or self.batch_size
        with progress_bar(len(images), "predict", enabled=progress) as bar:
            for start in range(0, len(images), bs):
                chunk: list[tuple[int, str, Image.Image | ImageError]] = []
                for i in range(start, min(start + bs, len(images))):
                    name = source_name(images[i], i)
                    try:
                        chunk.append((i, name, load_image(images[i], name, self.min_size)))
                    except ImageError as err:
                        chunk.append((i, name, err))
                yield from self._predict_chunk(chunk)
                bar.update(len(chunk))

    def _predict_chunk(self, chunk: list[tuple[int, str, Image.Image | ImageError]]) -> Iterator[ImageResult]:
        good = [(i, name, img) for i, name, img in chunk if isinstance(img, Image.Image)]
        done = {}
        if good:
            enc = self.encode_images([img for _, _, img in good])
            feats, bs = enc.features, self.batch_size
            grid = GridScores.cat([self.score(feats[i : i + bs]) for i in range(0, len(feats), bs)])
            for j, (i, name, img) in enumerate(good):
                sel = enc.views_of(j)
                full = self.full_map(grid.maps[sel.to(grid.maps.device)], [enc.tiles[s] for s in sel], enc.sizes[j])
                score, zero = self.reduce_views(grid.scores[sel]), self.reduce_views(grid.zero_shot[sel])
                done[i] = ImageResult(i, name, score, zero, full, img)
        for i, name, item in chunk:
            yield ImageResult(i, name, error=item) if isinstance(item, ImageError) else done[i]

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
            if self.options.multi_crop:
                raise ValueError("multi-crop resizes decoded images: pass paths, PIL images or arrays, not a tensor")
            bs = batch_size or self.batch_size
            grid = GridScores.cat([self.score(self.encode_batch(b)) for b in images.split(bs)])
            maps = upsample(grid.maps, (images.shape[2], images.shape[3]))
            if self.options.smooth_sigma > 0:
                maps = gaussian_smooth(maps, self.options.smooth_sigma)
            return Prediction(grid.scores.cpu(), grid.zero_shot.cpu(), list(maps.cpu()))
        if not isinstance(images, Sequence) or isinstance(images, str):
            images = [images]
        loaded = [self.load(x, i) for i, x in enumerate(images)]
        results = list(self.iter_predict(loaded, batch_size=batch_size, progress=progress))
        full_maps = [r.map for r in results if r.map is not None]
        assert len(full_maps) == len(results)  # every input was decoded above, so each has its map
        scores, zero_shot = torch.tensor([r.score for r in results]), torch.tensor([r.zero_shot for r in results])
        return Prediction(scores, zero_shot, full_maps)


def build_model(
    spec: ModelSpec,
    options: MethodOptions | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prompts: str | PromptSet = "winclip",
) -> WinCLIP:
    """The one way from plain options to a model: load `spec`'s backbone, configure the method."""
    method = dataclasses.asdict(options or MethodOptions())
    return WinCLIP(load_backbone(spec), **method, batch_size=batch_size, prompts=prompts)


def banner(model: WinCLIP) -> str:
    """What was loaded, in one line (and a loud block first when the weights are random)."""
    info = model.info
    line = (
        f"winclip {__version__}: {info.name} ({info.pretrained or 'random'}) on {model.device}, "
        f"{model.backbone.precision}, "
        f"batch {model.batch_size}\n{model.backbone.describe()}"
    )
    if info.checkpoint is not None:
        return line
    bar = "!" * 78
    return f"{bar}\n! RANDOM WEIGHTS (--pretrained none): every score and map below is MEANINGLESS\n{bar}\n{line}"
