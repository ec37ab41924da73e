"""Options as plain data: which weights to load (`ModelSpec`), the method options, the evaluation protocol.

No torch here: the command line reads its choices and defaults from this module before it
imports anything heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NamedTuple

DEFAULT_BACKBONE = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e31"
DEFAULT_BATCH_SIZE = 8
MAX_BATCH = 4096  # images per forward pass or per batch, at most (`--batch-size`, `--max-batch`)
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


class Range(NamedTuple):
    """The values a numeric option takes: `low`..`high`, `low` itself excluded when `low_open`; integers only
    when `integer`. Every value must also be a finite number (never a bool or a string)."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False

    def text(self) -> str:
        """The range as written in messages, e.g. "a number in (0, 10]"."""
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def check(self, name: str, value: object) -> float | int:
        """`value` as a float (or int), or ValueError naming `name` and the range."""
        kind = Integral if self.integer else Real
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{name} must be {self.text()}, got {str(value)[:40]!r}")
        try:
            number = float(value)  # exact for every value in range (integers here are at most MAX_WINDOW_SCALE)
        except OverflowError:  # an integer beyond any float (JSON allows it)
            number = math.inf
        inside = (self.low < number if self.low_open else self.low <= number) and number <= self.high
        if not math.isfinite(number) or not inside:
            raise ValueError(f"{name} must be {self.text()}, got {str(value)[:40]!r}")
        return int(number) if self.integer else number


MAX_WINDOW_SCALE = 64  # window side in patches: larger than any patch grid the backbones have (15x15 at 240 px)
# The Gaussian blur's radius is int(4σ + 0.5) pixels (method.zero_shot.gaussian_smooth); 15 keeps it at 60, below the
# smallest model input (the tests' 64-pixel ViT; 224 and 240 for the real ones), so a profile's warm-up at its
# input size always fits the reflect padding; photos smaller than that get a kernel cut to their size. It also
# bounds the blur's cost (2 * 60 + 1 taps per pixel and axis).
MAX_SMOOTH_SIGMA = 15.0
# Every numeric method option and its one stated range (MethodOptions checks them; docs/security.md lists them).
OPTION_RANGES: dict[str, Range] = {
    "temperature": Range(0.0, 10.0, low_open=True),  # τ of Eq. 1 (0.07 in the paper)
    "tile_overlap": Range(0.0, 0.9),  # beyond 0.9 a photo becomes hundreds of tiles
    "smooth_sigma": Range(0.0, MAX_SMOOTH_SIGMA),
    "scales": Range(1, MAX_WINDOW_SCALE, integer=True),  # each window scale
    "vision_scales": Range(1, MAX_WINDOW_SCALE, integer=True),  # each, and among `scales`
}


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
        for name in ("temperature", "tile_overlap", "smooth_sigma"):
            object.__setattr__(self, name, OPTION_RANGES[name].check(name, getattr(self, name)))
        for name in ("scales", "vision_scales"):
            value = getattr(self, name)
            if value is None and name == "vision_scales":
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"{name} must be a list of window sizes, got {str(value)[:40]!r}")
            sizes = tuple(OPTION_RANGES[name].check(f"{name} entry", k) for k in value)
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"{name} must be distinct window sizes, got {list(sizes)}")
            object.__setattr__(self, name, sizes)
        for name in ("image_scale", "multi_crop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {str(getattr(self, name))[:40]!r}")
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
                raise ValueError(f"unknown {name} {str(value)[:40]!r}; use one of {', '.join(allowed)}")
        if self.vision_scales is not None and not set(self.vision_scales) <= set(self.scales):
            raise ValueError(
                f"vision_scales (vision scales) {list(self.vision_scales)} must be among the scales {list(self.scales)}"
            )
        if not self.scales and not self.image_scale:
            raise ValueError("zero-shot maps need at least one window scale or the image scale")
