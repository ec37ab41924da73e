"""`winclip export`: the vision side of a Backbone as ONNX or OpenVINO IR, with an `export.json`.

The exported graph takes a preprocessed batch `pixels (N, 3, H, W)` (float32, the backbone's
input size; N free) and returns F^I `image (N, D)`, the window embeddings `window_<k>
(N, W_k, D)` of every exported scale (Eq. 2) and the patch tokens `patches (N, L, C)`. A
second, image-only graph (`ImageGraph`: `image (N, D)` alone) serves the multi-crop views.
It runs open_clip's own modules (`VisionGraph`), so exported fp32 features equal PyTorch's
up to summation order; `runtime.ExportedBackbone` runs it and the usual `Scorer` scores.
OpenVINO IR is converted from the ONNX file by OpenVINO itself (`Core.read_model`), with
fp32 weights kept (`compress_to_fp16=False`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..files import LinkError, write_file
from ..images import file_sha256
from ..method.windows import window_indices
from .encoder import Encoder
from .openclip import Backbone
from .runtime import EXPORT_JSON, EXPORT_VERSION, IMAGE_MODEL_FILES, MODEL_FILES, output_names

EXPORT_OPSET = 18  # the lowest opset torch's dynamo exporter writes; ONNX Runtime ≥ 1.14 and OpenVINO read it
EXAMPLE_BATCH = 2  # the traced example; the batch axis stays free


class VisionGraph(torch.nn.Module):
    """F^I, F^W_k of every scale and F^P of `pixels (N, 3, H, W)` through open_clip's modules, traceable.

    Windows: the class token plus the window's patch tokens (positional embeddings included) go
    through every block; in the last block only the class token's output is computed (the only
    one Eq. 2 uses), as in the fused PyTorch path.
    """

    def __init__(self, visual: Any, scales: tuple[int, ...]) -> None:  # open_clip's VisionTransformer, by attribute
        super().__init__()
        self.visual = visual
        self.scales = tuple(scales)
        grid = tuple(visual.grid_size)
        for k in self.scales:  # buffers, so that tracing never calls the cached window_indices
            self.register_buffer(f"index_{k}", window_indices(grid, k).clone(), persistent=False)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = self.visual
        x = v.conv1(pixels).flatten(2).transpose(1, 2)
        cls = v.class_embedding.expand(x.shape[0], 1, -1)
        tokens = torch.cat([cls, x], dim=1) + v.positional_embedding
        full = v.ln_post(v.transformer(v.ln_pre(tokens)))
        windows = [self.windows(tokens, getattr(self, f"index_{k}")) for k in self.scales]
        return (full[:, 0] @ v.proj, *windows, full[:, 1:])

    def windows(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Eq. 2 for every window of one scale: tokens `(N, 1+L, C)`, index `(W, S)` → `(N, W, D)`."""
        v = self.visual
        n, w, width = tokens.shape[0], index.shape[0], tokens.shape[2]
        patches = tokens[:, 1:][:, index]  # (N, W, S, C)
        seq = torch.cat([tokens[:, None, :1].expand(n, w, 1, width), patches], dim=2).flatten(0, 1)
        x = v.ln_pre(seq)
        blocks = list(v.transformer.resblocks)
        for block in blocks[:-1]:
            x = block(x)
        # (N, W, C) @ proj: no reshape after the product, which OpenVINO's int8 transformations cannot move
        return v.ln_post(class_token_block(blocks[-1], x)).view(n, w, -1) @ v.proj


class ImageGraph(torch.nn.Module):
    """F^I alone of `pixels (N, 3, H, W)`: the plain forward, class token only in the last block.

    What multi-crop needs of each crop (docs/method.md §3): no windows, no patch tokens, so ten
    crops cost what ten plain forwards cost (the window graph would compute and drop them).
    """

    def __init__(self, visual: Any) -> None:  # open_clip's VisionTransformer, by attribute
        super().__init__()
        self.visual = visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + v.positional_embedding
        x = v.ln_pre(x)
        blocks = list(v.transformer.resblocks)
        for block in blocks[:-1]:
            x = block(x)
        return v.ln_post(class_token_block(blocks[-1], x)) @ v.proj


def class_token_block(last: Any, x: torch.Tensor) -> torch.Tensor:  # open_clip's ResidualAttentionBlock
    """The output of open_clip's block `last` at the class token only, of batch-first tokens `(B, S, C)` → `(B, C)`."""
    h = last.ln_1(x)
    q = h[:, :1]
    if not last.attn.batch_first:
        q, h = q.transpose(0, 1), h.transpose(0, 1)
    mixed = last.attn(q, h, h, need_weights=False)[0]
    if not last.attn.batch_first:
        mixed = mixed.transpose(0, 1)
    y = x[:, :1] + last.ls_1(mixed)
    y = y + last.ls_2(last.mlp(last.ln_2(y)))
    return y[:, 0]


def _export_onnx(graph: torch.nn.Module, names: list[str], image_size: tuple[int, int], path: Path) -> None:
    """torch.onnx (dynamo) export with a free batch axis, weights inside the file when they fit."""
    example = torch.randn(EXAMPLE_BATCH, 3, *image_size)
    big = sum(p.numel() * p.element_size() for p in graph.parameters()) > 1.8 * 2**30  # protobuf's 2 GiB limit
    quiet = logging.getLogger("onnxscript")  # its constant-folding notes are not the user's concern
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            warnings.simplefilter("ignore")
            _torch_export(graph, example, names, path, big)
    finally:
        quiet.setLevel(level)


def _torch_export(graph: torch.nn.Module, example: torch.Tensor, names: list[str], path: Path, big: bool) -> None:
    torch.onnx.export(
        graph,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=names,
        opset_version=EXPORT_OPSET,
        dynamo=True,
        external_data=big,
        dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=65536)}},
        verbose=False,
    )


def _to_openvino(onnx_path: Path, xml: Path) -> None:
    """ONNX → OpenVINO IR (xml + bin) with fp32 weights."""
    try:
        import openvino as ov
    except ImportError:
        raise ValueError('--format openvino needs OpenVINO: pip install "winclip-anomaly[export]"') from None
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)


def export_backbone(backbone: Encoder, out: str | Path, fmt: str, scales: tuple[int, ...] = (2, 3)) -> dict:
    """Write `backbone`'s vision side into `out` (created; must be empty) as `fmt`; returns export.json's content."""
    if not isinstance(backbone, Backbone):
        raise ValueError(f"exports are made from the open_clip model (runtime torch), not from {backbone.runtime}")
    if fmt not in MODEL_FILES:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(MODEL_FILES)}")
    if backbone.precision != "fp32":
        raise ValueError(f"exports are fp32; load the backbone with precision fp32, not {backbone.precision}")
    if backbone.device.type != "cpu":
        raise ValueError(f"exports are traced on the CPU; load the backbone with device cpu, not {backbone.device}")
    out = Path(out)
    if out.is_symlink():
        raise LinkError(f"--out {out}: is a symbolic link; give the folder itself (winclip never writes through links)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder")
    scales = tuple(sorted(set(int(k) for k in scales)))
    for k in scales:
        window_indices(backbone.grid, k)  # validates that every window size fits the grid
    visual, size = backbone.clip.visual, backbone.info.image_size
    graphs = (
        (VisionGraph(visual, scales).eval(), output_names(scales), MODEL_FILES),
        (ImageGraph(visual).eval(), ["image"], IMAGE_MODEL_FILES),
    )
    with tempfile.TemporaryDirectory(prefix="winclip-export-") as tmp:
        for graph, names, files in graphs:
            onnx_path = Path(tmp) / files["onnx"]
            with torch.no_grad():
                _export_onnx(graph, names, size, onnx_path)
            if fmt == "openvino":
                _to_openvino(onnx_path, Path(tmp) / files["openvino"])
                onnx_path.unlink()
                for extra in Path(tmp).glob(files["onnx"] + ".*"):
                    extra.unlink()
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            shutil.move(str(f), out / f.name)
    meta = manifest(backbone, fmt, scales, out)
    write_file(out / EXPORT_JSON, (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def manifest(backbone: Backbone, fmt: str, scales: tuple[int, ...], out: Path) -> dict:
    """export.json: inputs, outputs, window plan, preprocessing, weights identity, files and their sha256."""
    info = backbone.info
    (h, w), grid, dim = info.image_size, backbone.grid, backbone.embed_dim
    width = backbone.clip.visual.conv1.out_channels
    windows = [{"k": k, "windows": int(window_indices(grid, k).shape[0]), "patches": k * k} for k in scales]
    outputs = [{"name": "image", "shape": ["batch", dim]}]
    outputs += [{"name": f"window_{p['k']}", "shape": ["batch", p["windows"], dim]} for p in windows]
    outputs += [{"name": "patches", "shape": ["batch", grid[0] * grid[1], width]}]
    files = sorted(p for p in out.iterdir() if p.name != EXPORT_JSON)
    return {
        "format": EXPORT_VERSION,
        "model_format": fmt,
        "model_file": MODEL_FILES[fmt],
        "image_model_file": IMAGE_MODEL_FILES[fmt],
        "files": {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files},
        "backbone": info.name,
        "pretrained": info.pretrained,
        "weights_id": info.weights_id,
        "activation": info.activation,
        "image_size": [h, w],
        "patch_size": list(info.patch_size),
        "grid": list(grid),
        "embed_dim": dim,
        "preprocess": {"resize": "bicubic (Pillow), squash", "mean": list(info.mean), "std": list(info.std)},
        "scales": list(scales),
        "window_plan": windows,
        "inputs": [{"name": "pixels", "shape": ["batch", 3, h, w], "dtype": "float32"}],
        "outputs": outputs,
        "opset": EXPORT_OPSET,
        "precision": "fp32",
        "winclip": __version__,
        "torch": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
