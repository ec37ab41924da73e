"""The only module that touches open_clip internals: loading weights and the window forward (SPEC §2)."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
from open_clip.transformer import text_global_pool

from .images import file_sha256
from .windows import window_indices

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_SEED = 0
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # "auto" resolves per device, see resolve_precision
MLP_CHUNK_ROWS = {"cpu": 2048}  # token rows per MLP chunk: bounds the (rows, 4C) hidden activation; none on GPUs


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
            self._digest["sha"] = file_sha256(self.checkpoint)
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


def fused_block_support(block: torch.nn.Module) -> str | None:
    """None when the fused path can run this open_clip block, else why it cannot (one line).

    The fused path runs open_clip's own LayerNorm, LayerScale, Linear and activation modules
    and replaces only nn.MultiheadAttention (read from in_proj_weight/bias, out_proj) with
    F.scaled_dot_product_attention over packed sequences.
    """
    name = type(block).__name__
    if name != "ResidualAttentionBlock":
        return f"{name} blocks are not supported by the fused path"
    if hasattr(block, "ln_1_kv"):
        return "cross-attention blocks are not supported by the fused path"
    attn = getattr(block, "attn", None)
    if not isinstance(attn, torch.nn.MultiheadAttention):
        return f"attention {type(attn).__name__} is not nn.MultiheadAttention"
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        return "nn.MultiheadAttention with separate q/k/v weights, bias_k/bias_v or add_zero_attn"
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, torch.nn.Sequential) or [n for n, _ in mlp.named_children()] != ["c_fc", "gelu", "c_proj"]:
        return "the MLP is not open_clip's (c_fc, gelu, c_proj)"
    if any(not hasattr(block, a) for a in ("ln_1", "ln_2", "ls_1", "ls_2")):
        return "the block lacks ln_1, ln_2, ls_1 or ls_2"
    return None


@dataclass(frozen=True)
class _Plan:
    """How the tokens of N images are packed for one fused pass.

    gather `(T,)`: row of each packed token in the `(N*(1+L), C)` unique tokens; groups: one
    (sequences, length) per pass: the full image `(N, 1+L)` first, then each window scale.
    """

    gather: torch.Tensor
    groups: tuple[tuple[int, int], ...]


class VisionTower:
    """Image, patch and window features of an open_clip VisionTransformer (SPEC §2, Eq. 2).

    `fused=True` (default) packs the full image and every window of every image into one
    token matrix per block: linear layers run once over all tokens, attention runs per pass
    with F.scaled_dot_product_attention, the first block's LayerNorm and QKV projection run
    once per unique token (they do not depend on the window), and the last block computes only
    the class-token output of the windows (the only one Eq. 2 uses). It computes the same
    function as open_clip's modules (tests/test_speed_paths.py). Unsupported block types fall
    back to open_clip's own forward; `fallback_reason` says why.
    """

    def __init__(self, visual: torch.nn.Module, fused: bool = True) -> None:
        check_vit(visual)
        self.visual = visual
        self.grid: tuple[int, int] = tuple(visual.grid_size)
        reasons = [r for r in map(fused_block_support, visual.transformer.resblocks) if r]
        self.fallback_reason: str | None = reasons[0] if fused and reasons else None
        self.fused = fused and not reasons
        self._plans: dict[tuple, _Plan] = {}

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings (conv1 patches, class token first, full positional embedding): `(N, 1+L, C)`."""
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_pre → all blocks → ln_post on batch-first tokens `(B, S, C)` → `(B, S, C)` (open_clip's modules)."""
        v = self.visual
        return v.ln_post(v.transformer(v.ln_pre(tokens)))

    def project(self, cls_out: torch.Tensor) -> torch.Tensor:
        """Class-token output → joint embedding `(B, D)`."""
        return cls_out @ self.visual.proj

    def window_embeddings(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Eq. 2 with open_clip's modules: class token + only the window's patch tokens, all windows at once.

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
        if self.fused:
            return self._encode_fused(tokens, tuple(scales))
        out = self.transform(tokens)
        windows = {k: self.window_embeddings(tokens, window_indices(self.grid, k)) for k in scales}
        return Features(image=self.project(out[:, 0]), windows=windows, patches=out[:, 1:])

    # -- fused path ------------------------------------------------------------------------

    def _plan(self, n: int, scales: tuple[int, ...], device: torch.device) -> _Plan:
        """Packing of N images' full sequences and windows (cached per batch size, scales and device)."""
        key = (n, scales, str(device))
        if key not in self._plans:
            seq = self.grid[0] * self.grid[1] + 1
            per_image = [torch.arange(seq)[None]]  # the full image: every token in order
            groups = [(n, seq)]
            for k in scales:
                idx = window_indices(self.grid, k)  # (W, k*k) patch indices; token = patch + 1
                per_image.append(torch.cat([torch.zeros(idx.shape[0], 1, dtype=idx.dtype), idx + 1], dim=1))
                groups.append((n * idx.shape[0], idx.shape[1] + 1))
            offsets = torch.arange(n)[:, None] * seq
            gather = torch.cat([(offsets[:, :, None] + p.reshape(1, -1)[:, None]).reshape(-1) for p in per_image])
            if len(self._plans) > 16:
                self._plans.clear()
            self._plans[key] = _Plan(gather.to(device), tuple(groups))
        return self._plans[key]

    def _encode_fused(self, tokens: torch.Tensor, scales: tuple[int, ...]) -> Features:
        v = self.visual
        n, seq, width = tokens.shape
        plan = self._plan(n, scales, tokens.device)
        unique = v.ln_pre(tokens).reshape(n * seq, width)
        blocks = list(v.transformer.resblocks)
        first = blocks[0]
        # the first block's ln_1 and QKV projection do not depend on the window: once per unique token
        qkv = linear(first.ln_1(unique), first.attn.in_proj_weight, first.attn.in_proj_bias)[plan.gather]
        x = unique[plan.gather]
        full_only = (True,) + (False,) * len(scales)  # windows need only their class token at the end
        for i, block in enumerate(blocks):
            last = i == len(blocks) - 1
            x = _fused_block(block, x, plan.groups, full_only if last else None, qkv if i == 0 else None)
        full = v.ln_post(x[: n * seq]).view(n, seq, width)
        cls = self.project(v.ln_post(x[n * seq :]))
        windows, start = {}, 0
        for k, (rows, _) in zip(scales, plan.groups[1:]):
            windows[k] = cls[start : start + rows].view(n, rows // n, -1)
            start += rows
        return Features(image=self.project(full[:, 0]), windows=windows, patches=full[:, 1:])


def _fused_block(
    block: torch.nn.Module,
    x: torch.Tensor,
    groups: tuple[tuple[int, int], ...],
    keep: tuple[bool, ...] | None,
    qkv: torch.Tensor | None,
) -> torch.Tensor:
    """One open_clip ResidualAttentionBlock over packed sequences.

    x `(T, C)`: the groups' sequences back to back, group g = `(B_g, S_g)` rows in order.
    keep[g] False: only the class token (first) of each sequence of group g is computed and
    returned, so the output has B_g rows for it. qkv `(T, 3C)`: the QKV projection if already
    computed. Returns `(T', C)`.
    """
    attn = block.attn
    width = x.shape[1]
    heads = attn.num_heads
    if qkv is None:
        qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    keep = keep or (True,) * len(groups)
    rows_out = sum(b * (s if k else 1) for (b, s), k in zip(groups, keep))
    mixed = x.new_empty(rows_out, width)
    residual = x if all(keep) else x.new_empty(rows_out, width)
    start = out = 0
    for (b, s), k in zip(groups, keep):
        q, key, value = qkv[start : start + b * s].view(b, s, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        if not k:
            q = q[:, :, :1]
        o = torch.nn.functional.scaled_dot_product_attention(q, key, value)  # (B, H, S_q, C/H)
        sq = o.shape[2]
        mixed[out : out + b * sq].view(b, sq, heads, -1).copy_(o.transpose(1, 2))
        if residual is not x:
            residual[out : out + b * sq].view(b, sq, width).copy_(x[start : start + b * s].view(b, s, width)[:, :sq])
        start += b * s
        out += b * sq
    x = residual + block.ls_1(linear(mixed, attn.out_proj.weight, attn.out_proj.bias))
    mlp = block.mlp
    chunk = MLP_CHUNK_ROWS.get(x.device.type) or x.shape[0]
    for lo in range(0, x.shape[0], chunk):
        part = x[lo : lo + chunk]
        hidden = _mlp_hidden(block.ln_2(part), mlp)
        part += block.ls_2(linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias))
    return x


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_DTYPES = (torch.float32,) + ((torch.bfloat16,) if _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported() else ())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x `(M, K)` @ weight.T `(K, N)` + bias → `(M, N)`; oneDNN on the CPU, F.linear elsewhere.

    On the CPU, fp32 (and bf16 where oneDNN has bf16 kernels) products go to oneDNN's
    matmul, measured 1.1-1.3x faster than the default MKL sgemm on this project's AMD
    machine at these shapes (same values up to summation order; tests/test_speed_paths.py).
    """
    if _onednn_fits(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def _onednn_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype in _ONEDNN_DTYPES and weight.is_contiguous()


def _mlp_hidden(x: torch.Tensor, mlp: torch.nn.Module) -> torch.Tensor:
    """act(c_fc(x)) `(M, 4C)`; an nn.GELU is fused into oneDNN's matmul on the CPU (one pass less)."""
    fc, act = mlp.c_fc, mlp.gelu
    if type(act) is torch.nn.GELU and _onednn_fits(x, fc.weight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), fc.weight, fc.bias, "gelu", [], act.approximate)
    return act(linear(x, fc.weight, fc.bias))


def encode_text(model: torch.nn.Module, tokenizer, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Text embeddings `(T, D)` in fp32, `batch` prompts at a time."""
    device = next(model.parameters()).device
    parts = [encode_tokens(model, tokenizer(texts[i : i + batch]).to(device)).float() for i in range(0, len(texts), batch)]
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

