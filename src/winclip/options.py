"""Options as plain data: which weights to load (`ModelSpec`), the method options, the evaluation protocol.

No torch here: the command line reads its choices and defaults from this module before it
imports anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
DEFAULT_BATCH_SIZE = 8
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # "auto" resolves per device (precision.resolve_precision)
RUNTIME_CHOICES = ("torch", "onnxruntime", "openvino")  # what runs the vision tower (runtime.py for the exported)
EXPORT_FORMATS = ("onnx", "openvino")  # `winclip export --format`
RESIZE_MODES = ("squash", "tile")
TILE_REDUCTIONS = ("max", "mean")
AGGREGATIONS = ("harmonic", "mean")
# The evaluation protocol (SPEC §5): shots, reference draws per K, square size of the pixel metrics.
DEFAULT_SHOTS = (0, 1, 2, 4)
DEFAULT_SEEDS = 5
DEFAULT_EVAL_RESOLUTION = 240


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to load and where: everything a `Backbone` is built from.

    pretrained: an open_clip tag, a checkpoint file, or None for seeded random weights.
    device: "cpu", "cuda", "cuda:1", ... or None / "auto" (CUDA when available).
    runtime: "torch", or "onnxruntime" / "openvino" to run the model exported into `export_dir`.
    """

    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str | None = None
    precision: str = "auto"
    cache_dir: str | None = None
    runtime: str = "torch"
    export_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISION_CHOICES)}")
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIME_CHOICES)}")
        if (self.runtime == "torch") != (self.export_dir is None):
            raise ValueError("an export folder (export_dir, --export-dir) goes with runtime onnxruntime or openvino")
        if self.pretrained is not None and str(self.pretrained).lower() == "none":
            object.__setattr__(self, "pretrained", None)
        if self.device == "auto":
            object.__setattr__(self, "device", None)


@dataclass(frozen=True)
class MethodOptions:
    """The WinCLIP options that change scores and maps (SPEC §1-§4); a profile pins them.

    temperature τ of Eq. 1; window `scales` in patches (Eq. 2); `image_scale`: the image
    score in the zero-shot map (SPEC §3); `aggregation` of window scores onto patches (Eq. 3:
    harmonic, or the "without harmonic averaging" ablation); `resize` of non-square images
    (squash, or square tiles overlapping by `tile_overlap` with the image score reduced by
    `tile_reduce`); `smooth_sigma` of an optional Gaussian blur of the maps (0 = off).
    """

    temperature: float = 0.07
    scales: tuple[int, ...] = (2, 3)
    image_scale: bool = True
    aggregation: str = "harmonic"
    resize: str = "squash"
    tile_overlap: float = 0.25
    tile_reduce: str = "max"
    smooth_sigma: float = 0.0

    def __post_init__(self) -> None:
        for name, cast in (
            ("temperature", float),
            ("image_scale", bool),
            ("tile_overlap", float),
            ("smooth_sigma", float),
        ):
            object.__setattr__(self, name, cast(getattr(self, name)))
        object.__setattr__(self, "scales", tuple(int(k) for k in self.scales))
        for name, value, allowed in (
            ("aggregation", self.aggregation, AGGREGATIONS),
            ("resize mode", self.resize, RESIZE_MODES),
            ("tile reduction", self.tile_reduce, TILE_REDUCTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if any(k < 1 for k in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"window scales must be distinct positive sizes, got {list(self.scales)}")
        if not self.scales and not self.image_scale:
            raise ValueError("zero-shot maps need at least one window scale or the image scale")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.tile_overlap}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
