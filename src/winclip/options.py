"""Options as plain data: which weights to load (`ModelSpec`), the method options, the evaluation protocol.

No torch here: the command line reads its choices and defaults from this module before it
imports anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
DEFAULT_BATCH_SIZE = 8
# "auto" resolves per device (precision.resolve_precision) or by a profile's evidence; int8 = an int8 OpenVINO export
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")
RUNTIME_CHOICES = ("torch", "onnxruntime", "openvino")  # what runs the vision tower (runtime.py for the exported)
EXPORT_FORMATS = ("onnx", "openvino")  # `winclip export --format`
RESIZE_MODES = ("squash", "tile")
TILE_REDUCTIONS = ("max", "mean")
AGGREGATIONS = ("harmonic", "mean")
FEWSHOT_SCORES = ("both", "vision", "zero-shot")  # Eq. 6 and its Table 5 ablations
FEWSHOT_AGGREGATIONS = ("same",) + AGGREGATIONS  # "same" = the zero-shot `aggregation`
FEWSHOT_FUSIONS = ("mean", "harmonic")
PATCH_FEATURES = ("tokens", "projected")
# The evaluation protocol (docs/method.md §5): shots, reference draws per K, square size of the pixel metrics.
DEFAULT_SHOTS = (0, 1, 2, 4)
DEFAULT_SEEDS = 5
DEFAULT_EVAL_RESOLUTION = 240
# The paper's protocol, `winclip eval`'s defaults (supplement A): VisA's non-square images in square tiles
# of the short side L_s with stride at most 0.8·L_s (overlap 0.2), tile predictions averaged.
TILED_DATASETS = ("visa",)
PAPER_TILE_OVERLAP = 0.2
PAPER_TILE_REDUCE = "mean"


@dataclass(frozen=True)
class RunPath:
    """A way to run the vision tower: a runtime and a precision (the name is what tables and records show)."""

    runtime: str  # torch, onnxruntime or openvino
    precision: str  # fp32, bf16, fp16 or int8

    @property
    def name(self) -> str:
        return f"{self.runtime}-{self.precision}"

    @classmethod
    def parse(cls, name: str) -> RunPath:
        runtime, _, prec = name.rpartition("-")
        if runtime not in RUNTIME_CHOICES or prec not in PRECISION_CHOICES[1:]:
            raise ValueError(f"unknown path {name!r}; paths are RUNTIME-PRECISION, e.g. torch-bf16 or openvino-int8")
        return cls(runtime, prec)


REFERENCE = RunPath("torch", "fp32")  # what every faster path is measured against


@dataclass(frozen=True)
class ModelSpec:
    """Which weights to load and where: everything a `Backbone` is built from.

    pretrained: an open_clip tag, a checkpoint file, or None for seeded random weights.
    device: "cpu", "cuda", "cuda:1", ... or None / "auto" (CUDA when available).
    runtime: "torch", or "onnxruntime" / "openvino" to run the model exported into `export_dir`.
    model_config: the content of a model-config JSON (what a profile made from a `.json` stores),
    registered under the name `backbone`, so the file itself is not needed.
    """

    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str | None = None
    precision: str = "auto"
    cache_dir: str | None = None
    runtime: str = "torch"
    export_dir: str | None = None
    model_config: str | None = None
    precision_reason: str | None = None  # why `precision` was chosen, when a caller resolved auto (e.g. evidence)

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
    """The WinCLIP options that change scores and maps (docs/method.md §1-§4); a profile pins them.

    temperature τ of Eq. 1; window `scales` in patches (Eq. 2); `image_scale`: the image
    score in the zero-shot map (docs/method.md §3); `aggregation` of window scores onto patches (Eq. 3:
    harmonic, or the "without harmonic averaging" ablation); `resize` of non-square images
    (squash, or square tiles overlapping by `tile_overlap` with the image score reduced by
    `tile_reduce`); `smooth_sigma` of an optional Gaussian blur of the maps (0 = off).

    `multi_crop`: the image-level ascore0 is the mean over ten crops (docs/method.md §3, Table 3 d); the
    maps keep the full view. Few-shot (docs/method.md §4), the paper's ablations and the choices it
    leaves open, each default being the behaviour before they became options:
    - `fewshot_score`: Eq. 6 from "both" terms, max M^W alone ("vision") or ascore0 alone
      ("zero-shot") (Table 5).
    - `vision_scales`: the window scales whose association maps enter Eq. 5 next to M^P;
      None = all `scales` (Table 6: () = M^P alone, (3,) = M^P + M^W_m).
    - `fewshot_aggregation`: window distances onto patches; "same" as `aggregation`, since
      the paper writes Eq. 3 for window scores only and names no other rule for distances.
    - `fewshot_fusion`: final map (M0 + M^W) / 2 ("mean", what public reproductions do; the
      paper only says "fused") or their harmonic mean, the rule of its zero-shot fusion.
    - `patch_features`: patch memories from ln_post tokens as open_clip returns them
      ("tokens", docs/method.md §2: F^P is not language-aligned and the paper applies no projection)
      or from those tokens times the image projection ("projected", 640-d).
    """

    temperature: float = 0.07
    scales: tuple[int, ...] = (2, 3)
    image_scale: bool = True
    aggregation: str = "harmonic"
    resize: str = "squash"
    tile_overlap: float = 0.25
    tile_reduce: str = "max"
    smooth_sigma: float = 0.0
    multi_crop: bool = False
    fewshot_score: str = "both"
    vision_scales: tuple[int, ...] | None = None
    fewshot_aggregation: str = "same"
    fewshot_fusion: str = "mean"
    patch_features: str = "tokens"

    def __post_init__(self) -> None:
        for name, cast in (
            ("temperature", float),
            ("image_scale", bool),
            ("tile_overlap", float),
            ("smooth_sigma", float),
            ("multi_crop", bool),
        ):
            object.__setattr__(self, name, cast(getattr(self, name)))
        object.__setattr__(self, "scales", tuple(int(k) for k in self.scales))
        if self.vision_scales is not None:
            object.__setattr__(self, "vision_scales", tuple(int(k) for k in self.vision_scales))
        for name, value, allowed in (
            ("aggregation", self.aggregation, AGGREGATIONS),
            ("resize mode", self.resize, RESIZE_MODES),
            ("tile reduction", self.tile_reduce, TILE_REDUCTIONS),
            ("few-shot score", self.fewshot_score, FEWSHOT_SCORES),
            ("few-shot aggregation", self.fewshot_aggregation, FEWSHOT_AGGREGATIONS),
            ("few-shot fusion", self.fewshot_fusion, FEWSHOT_FUSIONS),
            ("patch features", self.patch_features, PATCH_FEATURES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if any(k < 1 for k in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"window scales must be distinct positive sizes, got {list(self.scales)}")
        if self.vision_scales is not None and not set(self.vision_scales) <= set(self.scales):
            raise ValueError(f"vision scales {list(self.vision_scales)} must be among the scales {list(self.scales)}")
        if not self.scales and not self.image_scale:
            raise ValueError("zero-shot maps need at least one window scale or the image scale")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.tile_overlap}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
