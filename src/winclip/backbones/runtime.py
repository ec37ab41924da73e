"""An exported vision tower (`winclip export`) run by ONNX Runtime or OpenVINO: `ExportedBackbone`.

It is an `Encoder` (winclip.backbones.encoder) like the open_clip `Backbone`, so scoring,
profiles and the folder run work unchanged; PyTorch still runs the scoring. It has no text
encoder (`text` is None): text prototypes come from a profile (`Profile.bind`) or
`set_prototypes`. `read_export` checks an export folder completely
(files, sha256, backbone, weights, input size) and fails in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch

from ..images import file_sha256
from ..method.features import Features
from ..options import ModelSpec
from .encoder import BackboneInfo, Preprocess, check_input
from .precision import resolve_precision
from .weights.locate import read_record

EXPORT_JSON = "export.json"
EXPORT_VERSION = "winclip-export/1"
MODEL_FILES = {"onnx": "vision.onnx", "openvino": "vision.xml"}
RUNTIME_FORMATS = {"onnxruntime": ("onnx",), "openvino": ("openvino", "onnx")}  # what each runtime reads
RUNTIME_PRECISIONS = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}  # INFERENCE_PRECISION_HINT (OpenVINO picks bf16 on AMX if unset)


def output_names(scales: tuple[int, ...]) -> list[str]:
    """The exported graph's outputs in order."""
    return ["image", *[f"window_{k}" for k in scales], "patches"]


@dataclass(frozen=True)
class Export:
    """A checked export folder: its folder and export.json."""

    folder: Path
    meta: dict

    @property
    def model_path(self) -> Path:
        return self.folder / self.meta["model_file"]

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.meta["scales"])


REQUIRED_KEYS: tuple[str, ...] = ("model_format", "model_file", "files", "backbone", "weights_id", "image_size")
REQUIRED_KEYS += ("patch_size", "grid", "embed_dim", "preprocess", "scales")


def read_export(folder: str | Path) -> Export:
    """Read and check an export folder: export.json, every file present with its recorded sha256."""
    folder = Path(folder)
    path = folder / EXPORT_JSON
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: export folder not found")
    meta = read_record(
        path, EXPORT_VERSION, f"{folder}: not a winclip export (no {EXPORT_JSON}; make one with `winclip export`)"
    )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(missing)}")
    for name, recorded in meta["files"].items():
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing from the export")
        if file.stat().st_size != recorded["bytes"] or file_sha256(file) != recorded["sha256"]:
            raise ValueError(f"{file}: corrupt or changed since the export (its sha256 differs from {EXPORT_JSON})")
    if meta["model_file"] not in meta["files"]:
        raise ValueError(f"{path}: model file {meta['model_file']} is not among its files")
    return Export(folder, meta)


def _expected_input(backbone: str, model_config: str | None = None) -> tuple[str, tuple[int, int] | None]:
    """(model name, input size) a backbone option (or a profile's stored config) names; size None when it cannot be
    told without loading."""
    path = Path(backbone)
    cfg = json.loads(path.read_text()) if path.suffix == ".json" and path.is_file() else None
    cfg = json.loads(model_config) if model_config else cfg
    name = path.stem if path.suffix == ".json" else backbone
    cfg = cfg or open_clip.get_model_config(name) or {}
    size = cfg.get("vision_cfg", {}).get("image_size")
    if size is None:
        return name, None
    return name, (size, size) if isinstance(size, int) else tuple(size)


def check_export(export: Export, spec: ModelSpec) -> None:
    """Raise one line unless the export is of the backbone and weights `spec` names, at its input size."""
    meta, folder = export.meta, export.folder
    name, size = _expected_input(spec.backbone, spec.model_config)
    if meta["backbone"] != name:
        raise ValueError(
            f"{folder} was exported from {meta['backbone']}, not {name}; pass --backbone {meta['backbone']}"
        )
    if meta.get("pretrained") != spec.pretrained:
        raise ValueError(
            f"{folder} was exported with weights {meta.get('pretrained') or 'none'} ({meta['weights_id']}), "
            f"not {spec.pretrained or 'none'}; pass --pretrained {meta.get('pretrained') or 'none'}"
        )
    if size is not None and tuple(meta["image_size"]) != tuple(size):
        raise ValueError(f"{folder} was exported for input {meta['image_size']}, {name} takes {list(size)}")
    if meta["model_format"] not in RUNTIME_FORMATS[spec.runtime]:
        raise ValueError(
            f"{folder} holds a {meta['model_format']} export; {spec.runtime} needs "
            f"{' or '.join(RUNTIME_FORMATS[spec.runtime])} (winclip export --format onnx)"
        )


class _Session:
    """One compiled model of an export: numpy `(N, 3, H, W)` float32 in, the outputs in order out."""

    def __init__(self, export: Export, runtime: str, precision: str, threads: int) -> None:
        self.runtime = runtime
        path = export.model_path
        try:
            if runtime == "onnxruntime":
                self._open_ort(path, threads)
            else:
                self._open_openvino(path, precision, threads)
        except ImportError as exc:
            raise ValueError(f'--runtime {runtime} needs {exc.name}: pip install "winclip-anomaly[export]"') from None
        except Exception as exc:  # noqa: BLE001 - a model the runtime cannot read is one clear line
            raise ValueError(f"{path}: {runtime} cannot load it ({str(exc).strip().splitlines()[0]})") from None
        want = [3, *export.meta["image_size"]]
        if self.input_shape[1:] != want:
            raise ValueError(f"{path}: the model takes {self.input_shape[1:]} but {EXPORT_JSON} says {want}")

    def _open_ort(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_shape = [d if isinstance(d, int) else None for d in self.session.get_inputs()[0].shape]
        self.names = [o.name for o in self.session.get_outputs()]

    def _open_openvino(self, path: Path, precision: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else None for d in shape]
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.runtime == "onnxruntime":
            return dict(zip(self.names, self.session.run(None, {"pixels": x}), strict=True))
        result = self.compiled(x)
        return {name: result[out] for name, out in zip(self.names, self.compiled.outputs, strict=True)}


class ExportedBackbone:
    """An `Encoder` whose vision tower is an export run by ONNX Runtime or OpenVINO, on the CPU.

    The exported model computes every exported window scale; `encode` returns the ones asked
    for. Precision: fp32, or bf16 with OpenVINO (its inference precision hint); auto chooses as
    `precision.resolve_precision` does for the runtime.
    """

    def __init__(self, export: Export, runtime: str, *, precision: str = "auto") -> None:
        if precision not in ("auto", *RUNTIME_PRECISIONS[runtime]):
            raise ValueError(f"{runtime} runs exports in {' or '.join(RUNTIME_PRECISIONS[runtime])}, not {precision}")
        meta = export.meta
        choice = resolve_precision(precision, torch.device("cpu"), meta["backbone"], runtime)
        precision, self.precision_reason = choice.value, choice.reason
        self.export, self.runtime = export, runtime
        self.device = torch.device("cpu")
        self.precision = precision
        self.dtype = torch.float32  # of the input and the features
        self.info = BackboneInfo(
            name=meta["backbone"],
            pretrained=meta.get("pretrained"),
            checkpoint=None,
            image_size=tuple(meta["image_size"]),
            patch_size=tuple(meta["patch_size"]),
            mean=tuple(meta["preprocess"]["mean"]),
            std=tuple(meta["preprocess"]["std"]),
            source=f"export {export.folder} ({meta['model_format']})",
            config=f"{EXPORT_JSON}",
            activation=meta.get("activation", "GELU"),
            weights_format=meta["model_format"],
            _digest={"sha": meta["weights_id"].split(":", 1)[1]} if meta["weights_id"].startswith("sha256:") else {},
        )
        self.preprocess = Preprocess(self.info.image_size, self.info.mean, self.info.std)
        self.session = _Session(export, runtime, precision, torch.get_num_threads())

    @classmethod
    def load(cls, spec: ModelSpec) -> ExportedBackbone:
        """The export in `spec.export_dir`, checked against the backbone and weights `spec` names."""
        if spec.device is not None and str(spec.device) != "cpu":
            raise ValueError(f"--runtime {spec.runtime} runs on the CPU, not {spec.device}")
        if spec.export_dir is None:
            raise ValueError(f"runtime {spec.runtime!r} has no export folder (export_dir, --export-dir) to load")
        export = read_export(spec.export_dir)
        check_export(export, spec)
        return cls(export, spec.runtime, precision=spec.precision)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.export.meta["grid"])

    @property
    def embed_dim(self) -> int:
        return int(self.export.meta["embed_dim"])

    @property
    def text(self) -> None:
        """No text encoder: prototypes come from a profile or `set_prototypes`."""
        return None

    @property
    def projection(self) -> None:
        """The export holds no image projection."""
        return None

    def __repr__(self) -> str:
        return f"ExportedBackbone({str(self.export.folder)!r}, runtime={self.runtime!r}, precision={self.precision!r})"

    def describe(self) -> str:
        meta = self.export.meta
        return (
            f"runtime {self.runtime}: {self.export.model_path} ({meta['model_format']}, opset {meta.get('opset')}), "
            f"weights {meta['weights_id']}; precision {self.precision} ({self.precision_reason})"
        )

    def encode(self, x: torch.Tensor, scales: tuple[int, ...]) -> Features:
        """F^I, window embeddings and patch tokens of a preprocessed batch `(N, 3, H, W)`, fp32 on the CPU."""
        check_input(x, self.info.image_size)
        absent = [k for k in scales if k not in self.export.scales]
        if absent:
            raise ValueError(
                f"{self.export.folder} has window scales {list(self.export.scales)}, not {absent}; "
                f"export again with --scales {' '.join(map(str, sorted({*self.export.scales, *absent})))}"
            )
        out = self._run(x)
        windows = {k: torch.from_numpy(out[f"window_{k}"]) for k in scales}
        return Features(torch.from_numpy(out["image"]), windows, torch.from_numpy(out["patches"]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """F^I alone `(N, D)` (the export's image output; its windows are computed and dropped)."""
        check_input(x, self.info.image_size)
        return torch.from_numpy(self._run(x)["image"])

    def _run(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        return self.session.run(np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()))
