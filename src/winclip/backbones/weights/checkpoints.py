"""Reading checkpoint files without running their code, and telling what they hold.

Nothing is unpickled freely: safetensors files are read as they are; `.pt`/`.bin`/`.pth`
files go through `torch.load(weights_only=True)` (PyTorch's restricted unpickler: tensors
and plain containers only); a TorchScript archive (OpenAI's release format, which
`torch.load(weights_only=True)` refuses) is read by `_ScriptUnpickler`, which rebuilds its
tensors and refuses every other global, so no TorchScript or Python code runs.

`fit_problem` names the first tensor that does not fit a model; `guess_backbones` names the
open_clip configs whose vision tower has a state dict's shapes. How a checkpoint runs (activation,
mean/std) is decided without torch in `setup`.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from .setup import SAFETENSORS, TORCH_LOAD, TORCHSCRIPT, is_torchscript

STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # OpenAI's archives keep these beside the weights


class UnsafeCheckpointError(ValueError):
    """A checkpoint that could only be read by running code."""


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a checkpoint file and how they were read."""

    state: dict[str, torch.Tensor]
    format: str  # SAFETENSORS, TORCH_LOAD or TORCHSCRIPT


class _ScriptObject:
    """A TorchScript module or object in an archive: only its attributes are kept."""

    def __setstate__(self, state: dict) -> None:
        self.attributes = dict(state)


def _rebuild_tensor(
    storage: torch.Tensor,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    hooks: object = None,
    metadata: object = None,
) -> torch.Tensor:
    return storage.as_strided(size, stride, offset).clone()


class _ScriptUnpickler(pickle.Unpickler):
    """Reads `data.pkl` of a TorchScript archive: tensors, OrderedDicts and attribute holders, nothing else."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("__torch__.") or module == "__torch__":
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name.startswith("build_"):
            return list
        raise UnsafeCheckpointError(f"refused to unpickle {module}.{name}")

    def persistent_load(self, pid: tuple[Any, ...]) -> torch.Tensor:  # pid: as the archive wrote it
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise UnsafeCheckpointError(f"unknown persistent id {kind!r}")
        data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(data, dtype=dtype)[:numel] if data else torch.empty(0, dtype=dtype)


def _flatten(obj: _ScriptObject, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in getattr(obj, "attributes", {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            out.update(_flatten(value, f"{prefix}{name}."))
    return out


def read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive by attribute path, without running any of its code."""
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if not pkl:
            raise ValueError("TorchScript archive without data.pkl")
        root = _ScriptUnpickler(z, pkl[0][: -len("data.pkl")]).load()
    if not isinstance(root, _ScriptObject):
        raise ValueError("TorchScript archive whose root is not a module")
    return _flatten(root)


def read_checkpoint(path: Path) -> Checkpoint:
    """The state dict of a checkpoint file (unwrapped from {"state_dict": ...} and "module." prefixes)."""
    state: object  # whatever the file holds: checked below
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state, fmt = load_file(str(path), device="cpu"), SAFETENSORS
    elif is_torchscript(path):
        state, fmt = read_torchscript(path), TORCHSCRIPT
    else:
        state, fmt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)), TORCH_LOAD
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("no state dict of tensors in the file")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return Checkpoint({k: v for k, v in state.items() if k not in JIT_EXTRAS}, fmt)


def adapt_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's `load_checkpoint` fix-ups that change no values: text-tower prefix, logit scale/bias shape."""
    from open_clip.model import convert_to_custom_text_state_dict

    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    state = dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and isinstance(target, torch.Tensor) and state[key].ndim != target.ndim:
            state[key] = state[key].reshape(target.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None and "logit_scale" in state:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    return state


def fit_problem(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """None when `state` loads into `model` exactly, else the first key or shape that does not fit."""
    expected = model.state_dict()
    for key, target in expected.items():
        if key not in state:
            return f"it lacks {key}"
        if tuple(state[key].shape) != tuple(target.shape):
            return f"{key} has shape {tuple(state[key].shape)}, the backbone needs {tuple(target.shape)}"
    transient = {name for name, _ in model.named_buffers()}  # e.g. attn_mask, kept in TorchScript archives
    extra = [k for k in state if k not in expected and k not in transient]
    return f"it has a tensor the backbone lacks: {extra[0]}" if extra else None


def guess_backbones(state: dict[str, torch.Tensor]) -> list[str]:
    """open_clip ViT configs whose vision tower has this state dict's shapes (width, patch, layers, input, dim)."""
    conv, pos, proj = (state.get(f"visual.{k}") for k in ("conv1.weight", "positional_embedding", "proj"))
    if conv is None or pos is None or proj is None:
        return []
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    grid = round((pos.shape[0] - 1) ** 0.5)
    found = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v = cfg.get("vision_cfg", {})
        if (
            v.get("width") == conv.shape[0]
            and v.get("patch_size") == conv.shape[-1]
            and v.get("layers") == layers
            and v.get("image_size") == grid * conv.shape[-1]
            and cfg.get("embed_dim") == proj.shape[1]
        ):
            found.append(name)
    return found
