"""A loaded open_clip ViT and everything about its weights (docs/method.md §2): the `Backbone`.

This module and `tower.py` are the only ones that touch open_clip's model internals;
`weights/` finds and reads checkpoint files. A `Backbone` (an `Encoder`) owns the open_clip
model, its vision tower, its text side (`TextTower`: tokenizer and cached prototypes),
preprocessing, device and dtype; loading it is the expensive part, and any number of `WinCLIP`
configurations share one.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import text_global_pool

from ..images import file_sha256
from ..method.features import Features
from ..method.prompts import PromptSet
from ..method.zero_shot import prototype
from ..options import DEFAULT_BACKBONE, DEFAULT_PRETRAINED
from .encoder import RANDOM_SEED, BackboneInfo, Preprocess, check_input
from .precision import resolve_precision
from .tower import Matmuls, VisionTower, check_vit
from .weights.checkpoints import adapt_state, fit_problem, guess_backbones, read_checkpoint
from .weights.locate import Located, resolve_checkpoint
from .weights.registry import config_content, register_config
from .weights.setup import choose_setup, config_name, source_config

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_BATCH = 256  # prompts per text-encoder forward


class RandomWeightsWarning(UserWarning):
    """The model has random weights: its scores mean nothing."""


def _quiet_random_init(record: logging.LogRecord) -> bool:
    """Drop open_clip's "No pretrained weights loaded" line: it is wrong when a checkpoint follows."""
    return not str(record.msg).startswith("No pretrained weights loaded")


def _create(name: str, source_cfg: dict, found: Located | None, quick_gelu: bool) -> torch.nn.Module:
    """The open_clip model with seeded random weights (a checkpoint is loaded next, if any)."""
    root = logging.getLogger()
    root.addFilter(_quiet_random_init)  # weights are loaded below, or our own warning says they are random
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)  # random weights are the same in every process
            if source_cfg:
                assert found is not None and found.config is not None  # source_config read it
                src = f"local-dir:{found.config.parent}"
                return open_clip.create_model(src, load_weights=False, force_quick_gelu=quick_gelu)
            return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        root.removeFilter(_quiet_random_init)


def _load_weights(model: torch.nn.Module, name: str, path: Path, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's tensors, or refuse in one line naming the first key or shape that does not fit."""
    state = adapt_state(model, state)
    problem = fit_problem(model, state)
    if problem:
        guess = guess_backbones(state)
        hint = f" (its shapes fit {', '.join(guess[:3])})" if guess and name not in guess else ""
        raise ValueError(f"{path}: not a checkpoint of {name}: {problem}{hint}")
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)


def load_clip(
    backbone: str,
    pretrained: str | Path | None,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
    model_config: str | None = None,
) -> tuple[torch.nn.Module, BackboneInfo]:
    """Build an open_clip model by name (or config JSON, or a config's content stored by a profile: `model_config`,
    registered under the name `backbone`) with tag, hf-hub:, local-dir:, file or random weights."""
    pretrained = None if pretrained is None or str(pretrained).lower() == "none" else str(pretrained)
    name = register_config(str(backbone), model_config)
    found = source_cfg = None
    if pretrained is not None:
        found = resolve_checkpoint(name, pretrained, cache_dir)
        source_cfg = source_config(found)
        if source_cfg:  # hf-hub: and local-dir: sources carry their own architecture (as in open_clip)
            name = config_name(source_cfg["model_cfg"], pretrained, name)
    if found is None:
        model = _create(name, {}, None, False)
        warnings.warn(
            f"winclip: {name} has RANDOM weights (pretrained=None): scores and maps are meaningless; "
            "use this only for tests and speed measurements",
            RandomWeightsWarning,
            stacklevel=2,
        )
        info: dict[str, Any] = {"source": "random", "config": f"{name}'s own"}
    else:
        try:
            ckpt = read_checkpoint(found.path)
        except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is one clear line
            raise ValueError(f"{found.path}: not a readable checkpoint ({str(exc).splitlines()[0]})") from None
        plain_file = found.origin == "file" or found.origin.startswith("local-dir")
        sha = file_sha256(found.path) if plain_file and not source_cfg else ""
        assert pretrained is not None  # a checkpoint was found for it
        setup = choose_setup(name, pretrained, found, source_cfg or {}, ckpt.format, sha)
        model = _create(name, source_cfg or {}, found, setup.quick_gelu)
        _load_weights(model, name, found.path, ckpt.state)
        info = {"source": found.origin, "config": setup.reason, "weights_format": ckpt.format}
        info.update(mean=setup.mean, std=setup.std, _digest={"sha": sha} if sha else {})
        if source_cfg and name not in open_clip.list_models():
            assert found.config is not None  # source_config read it
            info["tokenizer"] = f"local-dir:{found.config.parent}"
    model = model.to(device).eval().requires_grad_(False)
    visual: Any = model.visual  # open_clip's VisionTransformer, used by attribute
    check_vit(visual)
    act = type(visual.transformer.resblocks[0].mlp.gelu).__name__ if visual.transformer.resblocks else "GELU"
    return model, BackboneInfo(
        name=name,
        pretrained=pretrained,
        checkpoint=None if found is None else found.path,
        image_size=tuple(visual.image_size),
        patch_size=tuple(visual.patch_size),
        activation=act,
        model_config=config_content(name),
        **info,
    )


def pick_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto": CUDA when available, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TextTower:
    """The text side of an open_clip model: prompts → embeddings, and cached prototypes (docs/method.md §1).

    Prototypes are cached per object phrase and prompt set, so every configuration sharing the
    backbone reuses them.
    """

    def __init__(self, clip: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor]) -> None:
        self.clip = clip
        self.tokenizer = tokenizer
        self._prototypes: dict[tuple[str, PromptSet], tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings `(T, D)` in fp32, `TEXT_BATCH` prompts at a time."""
        with torch.inference_mode():
            return encode_text(self.clip, self.tokenizer, texts)

    def prototypes(self, phrase: str, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """The two text prototypes (t_n, t_a) for an object phrase; cached. No anomalous states: t_a = 0."""
        key = (phrase, prompts)
        if key not in self._prototypes:
            normal, anomalous = prompts.prompts(phrase)
            t_n = prototype(self.encode(normal))
            t_a = prototype(self.encode(anomalous)) if anomalous else torch.zeros_like(t_n)  # one-class
            self._prototypes[key] = (t_n, t_a)
        return self._prototypes[key]


class Backbone:
    """A loaded open_clip ViT (an `Encoder`): weights, vision tower, text tower, preprocessing, device, dtype.

    `fused=False` runs open_clip's own modules instead of the fused fast path (a baseline for
    tests and benchmarks; `unfused()` gives one that shares these weights).
    """

    runtime = "torch"
    clip: Any  # open_clip's CLIP model: untyped, its towers are reached by attribute

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        pretrained: str | None = DEFAULT_PRETRAINED,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        cache_dir: str | None = None,
        fused: bool = True,
        model_config: str | None = None,
    ) -> None:
        self.device = pick_device(device)
        resolve_precision(precision, self.device, str(name))  # a bad choice fails before the slow load
        self.clip, self.info = load_clip(name, pretrained, self.device, cache_dir, model_config)
        choice = resolve_precision(precision, self.device, self.info.name)
        self.precision, self.precision_reason = choice.value, choice.reason
        self.tower = VisionTower(self.clip.visual, fused=fused)
        # bf16 on the CPU's fused path: bf16 products over an fp32 residual stream (tower.Matmuls)
        mixed = self.precision == "bf16" and self.device.type == "cpu" and self.tower.fused
        self.dtype = torch.float32 if mixed else PRECISIONS[self.precision]  # what the tower's weights hold
        self.clip.visual.to(self.dtype)
        if mixed:
            self.tower.matmuls = Matmuls(torch.bfloat16)
        self.preprocess = Preprocess(self.info.image_size, self.info.mean, self.info.std)
        self.text = TextTower(self.clip, open_clip.get_tokenizer(self.info.tokenizer or self.info.name))

    def __repr__(self) -> str:
        return (
            f"Backbone({self.info.name!r}, pretrained={self.info.pretrained!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r})"
        )

    def describe(self) -> str:
        """Where the weights came from and how they run (the banner's second line)."""
        info = self.info
        fmt = f", {info.weights_format}" if info.weights_format else ""
        return (
            f"weights: {info.source}{fmt}; activation {info.activation}, mean {_short(info.mean)}, "
            f"std {_short(info.std)} ({info.config}); precision {self.precision} ({self.precision_reason})"
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

    @property
    def projection(self) -> torch.Tensor:
        """The image projection `(C, D)` (ln_post tokens @ projection = the joint space)."""
        return self.clip.visual.proj

    def encode(self, x: torch.Tensor, scales: tuple[int, ...]) -> Features:
        """F^I, window embeddings and patch tokens of a preprocessed batch `(N, 3, H, W)`, fp32 on the device."""
        check_input(x, self.info.image_size)
        with torch.inference_mode():
            feats = self.tower.encode(x.to(self.device, self.dtype), tuple(scales))
        return feats.to(self.device, torch.float32)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """F^I alone `(N, D)` of a preprocessed batch: the plain forward, fp32 on the device."""
        check_input(x, self.info.image_size)
        with torch.inference_mode():
            return self.tower.embed(x.to(self.device, self.dtype)).float()

    def hidden_tokens(self, x: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        """Patch tokens after blocks `layers` side by side `(N, L, C·len(layers))`, fp32 (VisionTower.hidden_tokens)."""
        with torch.inference_mode():
            return self.tower.hidden_tokens(x.to(self.device, self.dtype), layers).float()


def _short(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def encode_text(
    model: torch.nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], texts: list[str], batch: int = TEXT_BATCH
) -> torch.Tensor:
    """Text embeddings `(T, D)` in fp32, `batch` prompts at a time."""
    device = next(model.parameters()).device
    parts = [
        encode_tokens(model, tokenizer(texts[i : i + batch]).to(device)).float() for i in range(0, len(texts), batch)
    ]
    return torch.cat(parts)


def encode_tokens(model: Any, tokens: torch.Tensor) -> torch.Tensor:  # model: open_clip's CLIP, used by attribute
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
