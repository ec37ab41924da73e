"""The vision forward of an open_clip ViT: image, patch and window features (docs/method.md §2, Eq. 2).

`VisionTower` runs either open_clip's own modules or a fused path that computes the same
function with less work (see its docstring); both are tested equal (tests/backbones/test_tower.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..method.features import Features
from ..method.windows import window_indices

MLP_CHUNK_ROWS = {"cpu": 2048}  # token rows per MLP chunk: bounds the (rows, 4C) hidden activation; none on GPUs
MAX_PLANS = 16  # packing plans kept per tower (one per batch size, scales and device)


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
    """Image, patch and window features of an open_clip VisionTransformer (docs/method.md §2, Eq. 2).

    `fused=True` (default) packs the full image and every window of every image into one
    token matrix per block: linear layers run once over all tokens, attention runs per pass
    with F.scaled_dot_product_attention, the first block's LayerNorm and QKV projection run
    once per unique token (they do not depend on the window), and the last block computes only
    the class-token output of the windows (the only one Eq. 2 uses). It computes the same
    function as open_clip's modules (tests/backbones/test_tower.py). Unsupported block types fall
    back to open_clip's own forward; `fallback_reason` says why.

    `matmuls = Matmuls(torch.bfloat16)` (fused path, fp32 weights): every matrix product and the
    attention run in bf16 while the residual stream, LayerNorm and the projection stay fp32
    (`Matmuls`): about the speed of an all-bf16 tower on CPUs with native bf16, and much closer
    to fp32 (README, Performance).
    """

    def __init__(self, visual: Any, fused: bool = True) -> None:  # open_clip's VisionTransformer, used by attribute
        check_vit(visual)
        self.visual = visual
        self.grid: tuple[int, int] = tuple(visual.grid_size)
        reasons = [r for r in map(fused_block_support, visual.transformer.resblocks) if r]
        self.fallback_reason: str | None = reasons[0] if fused and reasons else None
        self.fused = fused and not reasons
        self.matmuls = Matmuls()  # Backbone sets Matmuls(torch.bfloat16) for CPU bf16 on the fused path
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """F^I alone of a preprocessed batch `(N, 3, H, W)` → `(N, D)`: the plain forward, class token only.

        What open_clip's `encode_image` computes; the fused path skips every token but the
        class token in the last block (used for the multi-crop views).
        """
        tokens = self.tokens(x)
        if not self.fused:
            return self.project(self.transform(tokens)[:, 0])
        n, seq, width = tokens.shape
        h = self.visual.ln_pre(tokens).reshape(n * seq, width)
        blocks = list(self.visual.transformer.resblocks)
        for i, block in enumerate(blocks):
            h = _fused_block(block, h, ((n, seq),), (False,) if i == len(blocks) - 1 else None, None, self.matmuls)
        return self.project(self.visual.ln_post(h))

    def hidden_tokens(self, x: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        """Patch tokens after blocks `layers` (1-based, no LayerNorm) side by side: `(N, L, C·len(layers))`.

        open_clip's own blocks, run only up to the deepest layer asked for (PatchCore's hidden
        features, supplement Table "PatchCore (hidden)").
        """
        depth = len(self.visual.transformer.resblocks)
        if not layers or any(not 1 <= k <= depth for k in layers):
            raise ValueError(f"hidden layers must be in 1..{depth}, got {list(layers)}")
        transformer = self.visual.transformer
        batch_first = getattr(transformer, "batch_first", True)
        h = self.visual.ln_pre(self.tokens(x))
        h = h if batch_first else h.transpose(0, 1)
        kept = {}
        for i, block in enumerate(transformer.resblocks[: max(layers)], start=1):
            h = block(h)
            if i in layers:
                kept[i] = h if batch_first else h.transpose(0, 1)
        return torch.cat([kept[k][:, 1:] for k in layers], dim=-1)

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
            if len(self._plans) > MAX_PLANS:
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
        qkv = self.matmuls.qkv(first.ln_1(unique), first.attn.in_proj_weight, first.attn.in_proj_bias)[plan.gather]
        x = unique[plan.gather]
        full_only = (True,) + (False,) * len(scales)  # windows need only their class token at the end
        for i, block in enumerate(blocks):
            last = i == len(blocks) - 1
            x = _fused_block(block, x, plan.groups, full_only if last else None, qkv if i == 0 else None, self.matmuls)
        full = v.ln_post(x[: n * seq]).view(n, seq, width)
        cls = self.project(v.ln_post(x[n * seq :]))
        windows, start = {}, 0
        for k, (rows, _) in zip(scales, plan.groups[1:], strict=True):
            windows[k] = cls[start : start + rows].view(n, rows // n, -1)
            start += rows
        return Features(image=self.project(full[:, 0]), windows=windows, patches=full[:, 1:])


def _fused_block(
    block: Any,  # open_clip's ResidualAttentionBlock, used by attribute
    x: torch.Tensor,
    groups: tuple[tuple[int, int], ...],
    keep: tuple[bool, ...] | None,
    qkv: torch.Tensor | None,
    mm: Matmuls,
) -> torch.Tensor:
    """One open_clip ResidualAttentionBlock over packed sequences.

    x `(T, C)`: the groups' sequences back to back, group g = `(B_g, S_g)` rows in order.
    keep[g] False: only the class token (first) of each sequence of group g is computed and
    returned, so the output has B_g rows for it. qkv `(T, 3C)`: the QKV projection if already
    computed. `mm` runs the matrix products. Returns `(T', C)`.
    """
    attn = block.attn
    width = x.shape[1]
    heads = attn.num_heads
    if qkv is None:
        qkv = mm.qkv(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    keep = keep or (True,) * len(groups)
    rows_out = sum(b * (s if k else 1) for (b, s), k in zip(groups, keep, strict=True))
    mixed = qkv.new_empty(rows_out, width)  # attention's output, in the dtype it ran in
    residual = x if all(keep) else x.new_empty(rows_out, width)
    start = out = 0
    for (b, s), k in zip(groups, keep, strict=True):
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
    x = residual + block.ls_1(mm.linear(mixed, attn.out_proj.weight, attn.out_proj.bias))
    mlp = block.mlp
    chunk = MLP_CHUNK_ROWS.get(x.device.type) or x.shape[0]
    for lo in range(0, x.shape[0], chunk):
        part = x[lo : lo + chunk]
        hidden = mm.hidden(block.ln_2(part), mlp)
        part += block.ls_2(mm.linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias))
    return x


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_DTYPES = (torch.float32,) + (
    (torch.bfloat16,) if _ONEDNN and torch.ops.mkldnn._is_mkldnn_bf16_supported() else ()
)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x `(M, K)` @ weight.T `(K, N)` + bias → `(M, N)`; oneDNN on the CPU, F.linear elsewhere.

    On the CPU, fp32 (and bf16 where oneDNN has bf16 kernels) products go to oneDNN's
    matmul, measured 1.1-1.3x faster than the default MKL sgemm on this project's AMD
    machine at these shapes (same values up to summation order; tests/backbones/test_tower.py).
    """
    if _onednn_fits(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def _onednn_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype in _ONEDNN_DTYPES and weight.is_contiguous()


def _hidden(x: torch.Tensor, act: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """act(x @ weight.T + bias) `(M, 4C)`; an nn.GELU is fused into oneDNN's matmul on the CPU (one pass less)."""
    if type(act) is torch.nn.GELU and _onednn_fits(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "gelu", [], act.approximate)
    return act(linear(x, weight, bias))


class Matmuls:
    """The fused path's matrix products: in the weights' dtype (`low=None`), or in `low` precision
    (bf16) over fp32 activations, results back in fp32 except the QKV projection and the MLP's
    hidden layer, which feed bf16 attention and the next product. Weights are cast once, kept here.
    """

    def __init__(self, low: torch.dtype | None = None) -> None:
        self.low = low
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (original, cast copy)

    def _cast(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        entry = self._weights.get(id(t))
        if entry is None or entry[0] is not t:  # holding the original keeps its id from being reused
            entry = self._weights[id(t)] = (t, t.detach().to(self.low).contiguous())
        return entry[1]

    def _operands(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        """(x, weight, bias) as given, or in `low` (weights cast once)."""
        return (x, weight, bias) if self.low is None else (x.to(self.low), self._cast(weight), self._cast(bias))

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x `(M, K)` @ weight.T + bias: in the weights' dtype, or computed in `low` and returned in fp32."""
        out = linear(*self._operands(x, weight, bias))
        return out if self.low is None else out.float()

    def qkv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The QKV projection; in `low` when set (attention then runs in it)."""
        return linear(*self._operands(x, weight, bias))

    def hidden(self, x: torch.Tensor, mlp: Any) -> torch.Tensor:  # open_clip's MLP (c_fc, gelu, c_proj)
        """act(c_fc(x)) `(M, 4C)`; in `low` when set."""
        x, weight, bias = self._operands(x, mlp.c_fc.weight, mlp.c_fc.bias)
        return _hidden(x, mlp.gelu, weight, bias)
