"""The backbone contract (winclip.backbones.encoder.Encoder), checked the same way over every backbone: the
open_clip model (fused and through open_clip's own modules) and its exports run by ONNX Runtime and OpenVINO.

As timm runs one test over every registered model: what WinCLIP relies on must hold for each, and a new
backbone joins by adding one entry to BACKBONES.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

import winclip
from helpers import TINY, load_tiny, textured
from winclip.backbones import Encoder, NoTextEncoderError, TextEncoder, load_backbone
from winclip.method.windows import window_indices
from winclip.options import RUNTIME_CHOICES, ModelSpec

pytestmark = pytest.mark.xdist_group("exports")  # one worker makes the exports for both modules
PARITY = 1e-4  # exported fp32 features equal PyTorch's within this (summation order)
SCALES = (2, 3)


def _exported(runtime: str, fmt: str) -> Callable[[dict[str, Path]], Encoder]:
    def load(exports: dict[str, Path]) -> Encoder:
        return load_backbone(ModelSpec(TINY, None, "cpu", "fp32", runtime=runtime, export_dir=str(exports[fmt])))

    return load


BACKBONES: dict[str, Callable[[dict[str, Path]], Encoder]] = {
    "torch": lambda exports: load_tiny(precision="fp32"),
    "torch-unfused": lambda exports: load_tiny(precision="fp32").unfused(),
    "onnxruntime": _exported("onnxruntime", "onnx"),
    "openvino-onnx": _exported("openvino", "onnx"),
    "openvino-ir": _exported("openvino", "openvino"),
}
EXPORTED = ("onnxruntime", "openvino-onnx", "openvino-ir")


@pytest.fixture(scope="module", params=list(BACKBONES))
def backbone(request: pytest.FixtureRequest) -> Encoder:
    exports = request.getfixturevalue("exports") if request.param in EXPORTED else {}
    return BACKBONES[request.param](exports)


@pytest.fixture(scope="module")
def reference() -> winclip.Backbone:
    """The fused open_clip backbone in fp32: what every other backbone must compute."""
    return load_tiny(precision="fp32")


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    rng = __import__("numpy").random.default_rng(3)
    pre = load_tiny(precision="fp32").preprocess
    return torch.stack([pre(Image.fromarray(textured(rng, 64, 64))) for _ in range(3)])


def test_it_is_an_encoder_and_says_what_it_is(backbone: Encoder) -> None:
    assert isinstance(backbone, Encoder)
    assert backbone.runtime in RUNTIME_CHOICES and backbone.device == torch.device("cpu")
    assert backbone.precision == "fp32" and backbone.precision_reason
    info = backbone.info
    assert (info.name, info.image_size, info.patch_size, info.grid) == ("tiny-vit", (64, 64), (8, 8), (8, 8))
    assert backbone.grid == info.grid and backbone.embed_dim == 32
    assert info.weights_id == "random:seed=0"
    line = backbone.describe()
    assert line and "\n" not in line and "fp32" in line
    assert "tiny-vit" in repr(backbone) or str(backbone.runtime) in repr(backbone)


def test_preprocess_gives_the_input_the_encoder_takes(backbone: Encoder, rng) -> None:
    x = backbone.preprocess(Image.fromarray(textured(rng, 48, 80)))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert backbone.encode(x[None], SCALES).image.shape == (1, 32)


def test_features_have_the_shapes_of_the_window_plan(backbone: Encoder, batch: torch.Tensor) -> None:
    feats = backbone.encode(batch, SCALES)
    assert set(feats.windows) == set(SCALES)
    assert feats.image.shape == (3, 32) and feats.patches.shape == (3, 64, 64)
    for k in SCALES:
        assert feats.windows[k].shape == (3, len(window_indices(backbone.grid, k)), 32)
    assert all(t.dtype == torch.float32 for t in (feats.image, feats.patches, *feats.windows.values()))
    assert backbone.embed(batch).shape == (3, 32)


def test_features_equal_the_open_clip_backbones(backbone: Encoder, reference, batch: torch.Tensor) -> None:
    a, b = reference.encode(batch, SCALES), backbone.encode(batch, SCALES)
    diffs = [(a.image - b.image).abs().max(), (a.patches - b.patches).abs().max()]
    diffs += [(a.windows[k] - b.windows[k]).abs().max() for k in SCALES]
    assert len(diffs) == 2 + len(SCALES) and max(d.item() for d in diffs) <= PARITY
    assert (reference.embed(batch) - backbone.embed(batch)).abs().max().item() <= PARITY
    assert torch.allclose(backbone.embed(batch), b.image, rtol=0, atol=PARITY)  # F^I is F^I, however asked for


def test_images_in_a_batch_do_not_mix(backbone: Encoder, batch: torch.Tensor) -> None:
    together = backbone.encode(batch, SCALES)
    for i in range(len(batch)):
        alone = backbone.encode(batch[i : i + 1], SCALES)
        assert (alone.image - together.image[i : i + 1]).abs().max().item() <= PARITY
        assert (alone.windows[3] - together.windows[3][i : i + 1]).abs().max().item() <= PARITY


def test_a_batch_of_another_shape_is_one_clear_line(backbone: Encoder) -> None:
    for bad in (torch.zeros(2, 3, 32, 32), torch.zeros(3, 64, 64), torch.zeros(1, 1, 64, 64)):
        with pytest.raises(ValueError, match=r"^expected a preprocessed tensor of shape \(N, 3, 64, 64\)"):
            backbone.encode(bad, SCALES)
        with pytest.raises(ValueError, match=r"^expected a preprocessed tensor"):
            backbone.embed(bad)


def test_text_and_projection_where_the_runtime_has_them(backbone: Encoder, reference) -> None:
    model = winclip.WinCLIP(backbone)
    if backbone.runtime == "torch":
        assert isinstance(backbone.text, TextEncoder) and backbone.projection is not None
        assert backbone.projection.shape == (64, 32)
        t_n, t_a = model.set_object("bottle").prototypes_
        assert torch.equal(t_n, reference.text.prototypes("bottle", model.prompts)[0])
        return
    assert backbone.text is None and backbone.projection is None
    with pytest.raises(NoTextEncoderError, match=f"^the {backbone.runtime} runtime has no text encoder"):
        model.set_object("bottle")
    with pytest.raises(ValueError, match="needs the image projection"):
        winclip.WinCLIP(backbone, patch_features="projected")
    protos = reference.text.prototypes("bottle", model.prompts)
    assert model.set_prototypes(*protos).predict(torch.zeros(1, 3, 64, 64)).scores.shape == (1,)


def test_the_all_patch_window_is_the_image_embedding_on_the_open_clip_backbone(reference, batch) -> None:
    """The invariant of docs/method.md §2 (where a runtime can compute any window size)."""
    feats = reference.encode(batch, (8,))
    assert feats.windows[8].shape == (3, 1, 32)
    torch.testing.assert_close(feats.windows[8][:, 0], feats.image, rtol=1e-5, atol=1e-6)
