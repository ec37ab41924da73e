"""The backbone contract: what the method needs of whatever runs the vision tower (`Encoder`).

The open_clip backbone (`openclip.Backbone`) and an exported one run by ONNX Runtime or OpenVINO
(`runtime.ExportedBackbone`) both satisfy it; `winclip.backbones.load_backbone(spec)` chooses
one. Besides the types below, this module holds what both share: `BackboneInfo` (what was
loaded), `Preprocess` (bicubic resize and normalisation, docs/method.md §2) and the input check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ..images import file_sha256
from ..method.features import Features
from ..method.prompts import PromptSet
from .weights.setup import OPENAI_MEAN, OPENAI_STD

RANDOM_SEED = 0  # random weights are seeded: the same in every process


@dataclass(frozen=True)
class BackboneInfo:
    """What was loaded: enough to tell whether saved features or profiles match this model.

    source, config, activation and weights_format say where the weights came from and how
    they are run (the banner prints them); they do not change the identity. model_config is the
    content of the model-config `.json` the backbone was built from (None for open_clip's own
    names): profiles store it, so they work without the file.
    """

    name: str
    pretrained: str | None  # the tag or file asked for; None = random weights
    checkpoint: Path | None  # the file actually loaded
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    source: str = field(default="", compare=False)  # how the file was found
    config: str = field(default="", compare=False)  # where activation and mean/std come from
    activation: str = field(default="GELU", compare=False)
    weights_format: str = field(default="", compare=False)
    tokenizer: str = field(default="", compare=False)  # open_clip name of the tokenizer ("" = name)
    model_config: str | None = field(default=None, compare=False)  # a config .json's content (canonical JSON)
    _digest: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def weights_id(self) -> str:
        """Identity of the weights: `sha256:<hex>` of the checkpoint file, or `random:seed=0`."""
        if "sha" not in self._digest:
            if self.checkpoint is None:
                return f"random:seed={RANDOM_SEED}"
            self._digest["sha"] = file_sha256(self.checkpoint)
        return f"sha256:{self._digest['sha']}"


@dataclass(frozen=True)
class Preprocess:
    """Bicubic resize (Pillow) to the model input and normalisation (docs/method.md §2)."""

    size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """RGB image → `(3, H, W)` float32."""
        resized = img.resize((self.size[1], self.size[0]), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def check_input(x: torch.Tensor, image_size: tuple[int, int]) -> None:
    """ValueError unless `x` is a preprocessed batch `(N, 3, H, W)` at the backbone's input size."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(image_size):
        h, w = image_size
        raise ValueError(f"expected a preprocessed tensor of shape (N, 3, {h}, {w}), got {tuple(x.shape)}")


class NoTextEncoderError(ValueError):
    """A backbone without a text encoder was asked to encode prompts."""


@runtime_checkable
class TextEncoder(Protocol):
    """The text side (docs/method.md §1): prompts → embeddings, and the two cached prototypes of an object."""

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings `(T, D)` in fp32."""
        ...

    def prototypes(self, phrase: str, prompts: PromptSet) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_n, t_a), each `(D,)` and L2-normalised."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """What `WinCLIP` needs of a backbone: image, window, patch and crop embeddings (docs/method.md §2).

    `text` is the text encoder where the runtime has one (None for an exported tower: text
    prototypes then come from a profile or `set_prototypes`); `projection` the image
    projection `(C, D)` where the runtime has it (for projected patch features).
    """

    info: BackboneInfo
    runtime: str  # "torch", "onnxruntime" or "openvino" (options.RUNTIME_CHOICES)
    preprocess: Preprocess
    device: torch.device
    precision: str
    precision_reason: str

    @property
    def grid(self) -> tuple[int, int]: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def text(self) -> TextEncoder | None: ...

    @property
    def projection(self) -> torch.Tensor | None: ...

    def describe(self) -> str:
        """Where the weights came from and how they run (the banner's second line)."""
        ...

    def encode(self, x: torch.Tensor, scales: tuple[int, ...]) -> Features:
        """F^I, the window embeddings of `scales` and the patch tokens of a batch `(N, 3, H, W)`; fp32."""
        ...

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """F^I alone `(N, D)` of a batch `(N, 3, H, W)` (the multi-crop views); fp32."""
        ...
