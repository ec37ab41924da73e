"""A loaded open_clip ViT and everything about its weights (SPEC §2): the `Backbone`.

This module and `vision.py` are the only ones that touch open_clip's model internals; `weights.py`
finds checkpoint files. A `Backbone` owns the open_clip model, its vision tower, tokenizer,
preprocessing, device and dtype; loading it is the expensive part, and any number of `WinCLIP`
configurations share one.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transformer import text_global_pool
from PIL import Image

from .features import Features
from .images import file_sha256
from .options import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, PRECISION_CHOICES, ModelSpec
from .prompts import PromptSet
from .scoring import prototype
from .vision import VisionTower, check_vit
from .weights import resolve_checkpoint

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_SEED = 0
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_BATCH = 256  # prompts per text-encoder forward


class RandomWeightsWarning(UserWarning):
    """The model has random weights: its scores mean nothing."""


@dataclass(frozen=True)
class BackboneInfo:
    """What was loaded: enough to tell whether saved features or profiles match this model."""

    name: str
    pretrained: str | None  # the tag or file asked for; None = random weights
    checkpoint: Path | None  # the file actually loaded
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    _digest: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def weights_id(self) -> str:
        """Identity of the weights: `sha256:<hex>` of the checkpoint file, or `random:seed=0`."""
        if self.checkpoint is None:
            return f"random:seed={RANDOM_SEED}"
        if "sha" not in self._digest:
            self._digest["sha"] = file_sha256(self.checkpoint)
        return f"sha256:{self._digest['sha']}"


@dataclass(frozen=True)
class Preprocess:
    """Bicubic resize (Pillow) to the model input and normalisation (SPEC §2)."""

    size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """RGB image → `(3, H, W)` float32."""
        resized = img.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def _register_config(backbone: str) -> str:
    """A path to an open_clip model-config JSON registers it; returns the model name."""
    path = Path(backbone)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model config file not found")
        open_clip.add_model_config(path)
        return path.stem
    if backbone not in open_clip.list_models():
        raise ValueError(f"unknown backbone {backbone!r}; see open_clip.list_models() or pass a config .json")
    return backbone


def _quiet_random_init(record: logging.LogRecord) -> bool:
    """Drop open_clip's "No pretrained weights loaded" line: it is wrong when a checkpoint follows."""
    return not str(record.msg).startswith("No pretrained weights loaded")


def load_clip(
    backbone: str,
    pretrained: str | Path | None,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[torch.nn.Module, BackboneInfo]:
    """Build an open_clip model by name (or config JSON) with tag, file or random weights (fp32, eval)."""
    name = _register_config(str(backbone))
    pretrained = ModelSpec(pretrained=None if pretrained is None else str(pretrained)).pretrained
    checkpoint: Path | None = None
    quick_gelu = False
    mean, std = OPENAI_MEAN, OPENAI_STD
    if pretrained is not None:
        if Path(pretrained).is_file():
            checkpoint = Path(pretrained)
        elif Path(pretrained).suffix or os.sep in str(pretrained):
            raise FileNotFoundError(f"{pretrained}: checkpoint file not found")
        else:
            checkpoint = resolve_checkpoint(name, str(pretrained), cache_dir)
            cfg = get_pretrained_cfg(name, str(pretrained))
            quick_gelu = bool(cfg.get("quick_gelu", False))
            mean = tuple(cfg.get("mean", mean))
            std = tuple(cfg.get("std", std))
    root = logging.getLogger()
    root.addFilter(_quiet_random_init)  # weights are loaded below, or our own warning says they are random
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)  # random weights are the same in every process
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        root.removeFilter(_quiet_random_init)
    if checkpoint is None:
        warnings.warn(
            f"winclip: {name} has RANDOM weights (pretrained=None): scores and maps are meaningless; "
            "use this only for tests and speed measurements",
            RandomWeightsWarning,
            stacklevel=2,
        )
    else:
        try:
            open_clip.load_checkpoint(model, str(checkpoint))
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint is one clear line
            raise ValueError(f"{checkpoint}: not a checkpoint of {name} ({str(exc).splitlines()[0]})") from None
    model = model.to(device).eval().requires_grad_(False)
    visual = model.visual
    check_vit(visual)
    info = BackboneInfo(
        name=name,
        pretrained=None if pretrained is None else str(pretrained),
        checkpoint=checkpoint,
        image_size=tuple(visual.image_size),
        patch_size=tuple(visual.patch_size),
        mean=mean,
        std=std,
    )
    return model, info


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision for `precision` on `device`; "auto" picks from measured evidence.

    auto: fp32 on the CPU, fp16 on CUDA. On random weights (tests/test_speed_paths.py,
    benchmarks/speed.py) fp16 keeps the fp32 ranking of image scores and maps within 4e-4,
    while bf16 (8 significant bits) swaps close scores (Spearman 0.97) and moves maps by 4e-3;
    on a CPU without bf16 hardware bf16 is also about 8x slower. bf16 stays an explicit choice
    (e.g. for CPUs with AMX); fp16 is refused on the CPU.
    """
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 needs a GPU; use bf16 on the CPU")
    return precision


def pick_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto": CUDA when available, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Backbone:
    """A loaded open_clip ViT: weights, vision tower, tokenizer, preprocessing, device and dtype.

    `fused=False` runs open_clip's own modules instead of the fused fast path (a baseline for
    tests and benchmarks; `unfused()` gives one that shares these weights). Text prototypes
    are cached here per object phrase and prompt set, so every configuration sharing the
    backbone reuses them.
    """

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        pretrained: str | None = DEFAULT_PRETRAINED,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cache_dir: str | None = None,
        fused: bool = True,
    ) -> None:
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = PRECISIONS[self.precision]
        self.clip, self.info = load_clip(name, pretrained, self.device, cache_dir)
        self.clip.visual.to(self.dtype)
        self.tower = VisionTower(self.clip.visual, fused=fused)
        self.preprocess = Preprocess(self.info.image_size, self.info.mean, self.info.std)
        self.tokenizer = open_clip.get_tokenizer(self.info.name)
        self._prototypes: dict[tuple[str, PromptSet], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def load(cls, spec: ModelSpec) -> Backbone:
        """The backbone a `ModelSpec` describes."""
        return cls(
            spec.backbone, spec.pretrained, device=spec.device, precision=spec.precision, cache_dir=spec.cache_dir
        )

    def unfused(self) -> Backbone:
        """The same weights through open_clip's own modules (the baseline of the fused path)."""
        other = copy.copy(self)
        other.tower = VisionTower(self.clip.visual, fused=False)
        return other

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.tower.grid

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint embedding."""
        return self.clip.visual.proj.shape[1]

    def encode(self, x: torch.Tensor, scales: tuple[int, ...]) -> Features:
        """F^I, window embeddings and patch tokens of a preprocessed batch `(N, 3, H, W)`, fp32 on the device."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.info.image_size:
            h, w = self.info.image_size
            raise ValueError(f"expected a preprocessed tensor of shape (N, 3, {h}, {w}), got {tuple(x.shape)}")
        with torch.inference_mode():
            feats = self.tower.encode(x.to(self.device, self.dtype), tuple(scales))
        return feats.to(self.device, torch.float32)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings `(T, D)` in fp32, `TEXT_BATCH` prompts at a time."""
        with torch.inference_mode():
            return encode_text(self.clip, self.tokenizer, texts)

    def prototypes(self, phrase: str, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """The two text prototypes (t_n, t_a) of SPEC §1 for an object phrase; cached. No anomalous states: t_a = 0."""
        key = (phrase, prompts)
        if key not in self._prototypes:
            normal, anomalous = prompts.prompts(phrase)
            t_n = prototype(self.encode_text(normal))
            t_a = prototype(self.encode_text(anomalous)) if anomalous else torch.zeros_like(t_n)  # one-class
            self._prototypes[key] = (t_n, t_a)
        return self._prototypes[key]


def encode_text(model: torch.nn.Module, tokenizer, texts: list[str], batch: int = TEXT_BATCH) -> torch.Tensor:
    """Text embeddings `(T, D)` in fp32, `batch` prompts at a time."""
    device = next(model.parameters()).device
    parts = [
        encode_tokens(model, tokenizer(texts[i : i + batch]).to(device)).float() for i in range(0, len(texts), batch)
    ]
    return torch.cat(parts)


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's `encode_text` with the context cut after the last end-of-text token.

    The CLIP text tower is causal and pools the end-of-text position, so the padding after
    it cannot change the result: cutting the 77-token context to the longest prompt (about
    20 tokens for the prompt ensemble) is exact and about 4x cheaper. Other text towers
    (custom, non-causal or non-argmax pooling) run open_clip's own forward.
    """
    mask = getattr(model, "attn_mask", None)
    if (
        getattr(model, "text_pool_type", None) != "argmax"
        or not isinstance(mask, torch.Tensor)
        or not all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "ln_final"))
    ):
        return model.encode_text(tokens)
    n = int(tokens.argmax(dim=-1).max()) + 1  # the end-of-text token has the highest id
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:n, :n]))
    x = text_global_pool(x, tokens, "argmax")
    proj = model.text_projection
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
