"""The only module that touches open_clip internals: loading weights and the window forward (SPEC §2)."""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model

from .windows import window_indices

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_SEED = 0
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class RandomWeightsWarning(UserWarning):
    """The model has random weights: its scores mean nothing."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


@dataclass(frozen=True)
class Features:
    """Features of N preprocessed images (SPEC §2).

    image `(N, D)` = F^I; windows {k: `(N, W_k, D)`} = F^W_k; patches `(N, L, C)` = F^P.
    Embeddings are as the model outputs them (not normalised).
    """

    image: torch.Tensor
    windows: dict[int, torch.Tensor]
    patches: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Features:
        """The same features on another device (and dtype)."""
        return Features(
            self.image.to(device, dtype),
            {k: v.to(device, dtype) for k, v in self.windows.items()},
            self.patches.to(device, dtype),
        )

    def __getitem__(self, sel: slice | torch.Tensor | list[int]) -> Features:
        """Features of a subset of the images."""
        return Features(self.image[sel], {k: v[sel] for k, v in self.windows.items()}, self.patches[sel])

    @staticmethod
    def cat(parts: list[Features]) -> Features:
        """Concatenate along the image axis."""
        if not parts:
            raise ValueError("Features.cat needs at least one part")
        return Features(
            torch.cat([p.image for p in parts]),
            {k: torch.cat([p.windows[k] for p in parts]) for k in parts[0].windows},
            torch.cat([p.patches for p in parts]),
        )


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
            h = hashlib.sha256()
            with open(self.checkpoint, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            self._digest["sha"] = h.hexdigest()
        return f"sha256:{self._digest['sha']}"


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


def _host_reachable(url: str, timeout: float = 5.0) -> bool:
    """A quick TCP probe, so that an offline machine fails at once instead of retrying for a minute."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_checkpoint(name: str, tag: str, cache_dir: str | Path | None = None) -> Path:
    """Path of the weights for an open_clip pretrained tag: cache first, else download.

    Raises WeightsUnavailableError in one line when they are neither cached nor downloadable.
    """
    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(name)) or "none"
        raise WeightsUnavailableError(
            f"{tag!r} is neither a file nor a pretrained tag of {name} (known tags: {tags})"
        )
    cache = str(cache_dir) if cache_dir else None
    hint = (
        f"cannot get weights {name}/{tag}: {{why}}; download them on a connected machine and pass "
        f"--pretrained /path/to/checkpoint (or --cache-dir with the open_clip cache)"
    )
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        try:
            return Path(
                hf_hub_download(
                    repo, filename or "open_clip_pytorch_model.bin", cache_dir=cache, local_files_only=True
                )
            )
        except Exception:
            pass  # not cached: download below
        url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise WeightsUnavailableError(hint.format(why="not in the cache and HF_HUB_OFFLINE is set"))
    else:
        url = cfg.get("url", "")
    if not _host_reachable(url):
        raise WeightsUnavailableError(hint.format(why=f"not in the cache and {urlparse(url).hostname} is unreachable"))
    try:
        return Path(download_pretrained(cfg, cache_dir=cache))
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear line
        raise WeightsUnavailableError(hint.format(why=str(exc).splitlines()[0])) from None


def load_clip(
    backbone: str,
    pretrained: str | Path | None,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[torch.nn.Module, BackboneInfo]:
    """Build an open_clip model by name (or config JSON) with tag, file or random weights (fp32, eval)."""
    name = _register_config(str(backbone))
    if pretrained is not None and str(pretrained).lower() == "none":
        pretrained = None
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)  # random weights are the same in every process
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
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


def check_vit(visual: torch.nn.Module) -> None:
    """Raise ValueError unless `visual` is a plain class-token open_clip VisionTransformer."""
    required = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    if (
        any(not hasattr(visual, a) for a in required)
        or getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "pool_type", "tok") != "tok"
        or getattr(visual, "final_ln_after_pool", False)
    ):
        raise ValueError(f"{type(visual).__name__} is not a plain class-token open_clip ViT; WinCLIP needs one")


class VisionTower:
    """Image, patch and window features of an open_clip VisionTransformer (SPEC §2, Eq. 2)."""

    def __init__(self, visual: torch.nn.Module) -> None:
        check_vit(visual)
        self.visual = visual
        self.grid: tuple[int, int] = tuple(visual.grid_size)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings (conv1 patches, class token first, full positional embedding): `(N, 1+L, C)`."""
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_pre → all blocks → ln_post on batch-first tokens `(B, S, C)` → `(B, S, C)`."""
        v = self.visual
        return v.ln_post(v.transformer(v.ln_pre(tokens)))

    def project(self, cls_out: torch.Tensor) -> torch.Tensor:
        """Class-token output → joint embedding `(B, D)`."""
        return cls_out @ self.visual.proj

    def window_embeddings(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Eq. 2: class token + only the window's patch tokens, all windows of all images in one pass.

        tokens `(N, 1+L, C)`, index `(W, S)` patch indices → `(N, W, D)`.
        """
        n, w = tokens.shape[0], index.shape[0]
        patches = tokens[:, 1:][:, index.to(tokens.device)]  # (N, W, S, C): masked tokens are dropped
        cls = tokens[:, None, :1].expand(n, w, 1, tokens.shape[-1])
        seq = torch.cat([cls, patches], dim=2).flatten(0, 1)
        return self.project(self.transform(seq)[:, 0]).view(n, w, -1)

    def encode(self, x: torch.Tensor, scales: tuple[int, ...]) -> Features:
        """F^I, F^P and F^W_k for each window size k of a preprocessed batch `(N, 3, H, W)`."""
        tokens = self.tokens(x)
        out = self.transform(tokens)
        windows = {k: self.window_embeddings(tokens, window_indices(self.grid, k)) for k in scales}
        return Features(image=self.project(out[:, 0]), windows=windows, patches=out[:, 1:])


def encode_text(model: torch.nn.Module, tokenizer, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Text embeddings `(T, D)` in fp32, `batch` prompts at a time."""
    device = next(model.parameters()).device
    parts = [model.encode_text(tokenizer(texts[i : i + batch]).to(device)).float() for i in range(0, len(texts), batch)]
    return torch.cat(parts)

