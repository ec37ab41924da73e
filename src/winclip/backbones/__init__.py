"""What runs the vision (and text) tower: the `Encoder` contract and the one loader, `load_backbone(spec)`.

- `encoder`: the contract (`Encoder`, `TextEncoder`) and what its implementations share.
- `openclip`: the open_clip model in PyTorch (`Backbone`), with `tower` (the fused window forward).
- `runtime`: an exported tower run by ONNX Runtime or OpenVINO (`ExportedBackbone`); `export` writes one.
- `precision`: which precision "auto" runs; `weights/`: finding, reading and carrying checkpoints.
"""

from __future__ import annotations

from ..options import ModelSpec
from .encoder import BackboneInfo, Encoder, NoTextEncoderError, Preprocess, TextEncoder


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
        precision_reason=spec.precision_reason,
    )


__all__ = ["BackboneInfo", "Encoder", "NoTextEncoderError", "Preprocess", "TextEncoder", "load_backbone"]
