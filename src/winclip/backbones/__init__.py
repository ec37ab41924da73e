"""What runs the vision (and text) tower: the `Encoder` contract and the one loader, `load_backbone(spec)`.

- `encoder`: the contract (`Encoder`, `TextEncoder`) and what its implementations share.
- `openclip`: the open_clip model in PyTorch (`Backbone`), with `tower` (the fused window forward).
- `runtime`: an exported tower run by ONNX Runtime or OpenVINO (`ExportedBackbone`); `export` writes one.
- `precision`: which precision "auto" runs; `weights/`: finding, reading and carrying checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..options import ModelSpec

if TYPE_CHECKING:
    from .encoder import BackboneInfo, Encoder, NoTextEncoderError, Preprocess, TextEncoder

ENCODER_NAMES = ("BackboneInfo", "Encoder", "NoTextEncoderError", "Preprocess", "TextEncoder")


def __getattr__(name: str) -> object:
    """The contract's types, imported on first use: `weights/` (e.g. `winclip weights where`) needs no torch."""
    if name in ENCODER_NAMES:
        from . import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_backbone(spec: ModelSpec) -> Encoder:
    """The backbone a `ModelSpec` describes: open_clip in PyTorch, or an export run by ONNX Runtime / OpenVINO."""
    if spec.runtime != "torch":
        from .runtime import ExportedBackbone

        return ExportedBackbone.load(spec)
    from .openclip import Backbone

    return Backbone(
        spec.backbone,
        spec.pretrained,
        device=spec.device,
        precision=spec.precision,
        cache_dir=spec.cache_dir,
        model_config=spec.model_config,
    )


__all__ = ["BackboneInfo", "Encoder", "NoTextEncoderError", "Preprocess", "TextEncoder", "load_backbone"]
