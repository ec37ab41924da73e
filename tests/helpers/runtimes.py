"""The tiny test ViT exported for ONNX Runtime and OpenVINO, and models that run those exports."""

from __future__ import annotations

import warnings
from pathlib import Path

import winclip
from helpers import TINY, make_model
from winclip.backbones.export import export_backbone

RUNS = [("onnxruntime", "onnx"), ("openvino", "onnx"), ("openvino", "openvino")]  # runtime, export format


def export_tiny(root: Path) -> dict[str, Path]:
    """The tiny random model exported once as ONNX and as OpenVINO IR under `root`: format → folder."""
    backbone = make_model(precision="fp32").backbone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in ("onnx", "openvino"):
            export_backbone(backbone, root / fmt, fmt)
    return {fmt: root / fmt for fmt in ("onnx", "openvino")}


def exported(folder: Path, runtime: str, backbone: str = TINY, **options: object) -> winclip.WinCLIP:
    """A WinCLIP whose vision tower is the export (of `backbone`, random weights) in `folder`, run by `runtime`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        return winclip.WinCLIP(backbone, None, runtime=runtime, export_dir=str(folder), **options)  # type: ignore[arg-type]
