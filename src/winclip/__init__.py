"""WinCLIP / WinCLIP+: zero- and few-shot anomaly classification and segmentation with CLIP.

The names below are imported on first use (PEP 562), so `import winclip` and the command
line's `--help` do not pay for torch and open_clip.

The package, lowest layer first (imports only go down; tests/test_layout.py checks it):
`options`, `images`, `files`, `spreadsheet` and `metrics/` (leaf utilities) · `method/` (the
equations) · `backbones/` (what runs the towers) · `model` (the `WinCLIP` estimator) ·
`inspection/` (profiles and `winclip predict`) · `paper/` (reproducing the paper) ·
`distributed/` (Ray) · `service/` (the inspection station) · `cli/` (the command line).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "backbones.openclip",
    "RandomWeightsWarning": "backbones.openclip",
    "BackboneInfo": "backbones",
    "Encoder": "backbones",
    "load_backbone": "backbones",
    "Features": "method.features",
    "ImageError": "images",
    "ReferenceMemory": "method.few_shot",
    "GridScores": "method.scorer",
    "Scorer": "method.scorer",
    "ImageResult": "predictions",
    "Prediction": "predictions",
    "PredictionArrays": "predictions",
    "WinCLIP": "model",
    "build_model": "model",
    "DEFAULT_BACKBONE": "options",
    "DEFAULT_PRETRAINED": "options",
    "MethodOptions": "options",
    "ModelSpec": "options",
    "Inspection": "inspection.inspector",
    "Inspector": "inspection.inspector",
    "Profile": "inspection.profile",
    "PROMPT_SETS": "method.prompts",
    "PromptSet": "method.prompts",
    "WeightsUnavailableError": "backbones.weights.locate",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'winclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
