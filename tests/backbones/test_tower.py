"""The vision tower (winclip.backbones.tower): the fused path computes what open_clip's modules compute."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from PIL import Image

import winclip
from helpers import TINY, make_model, textured
from helpers.features import max_abs_diff, reference_features
from winclip.backbones.tower import VisionTower, fused_block_support, linear

# bf16 keeps 8 significant bits: features of the tiny random model stay within this relative error
BF16_FEATURE_RTOL = 0.05


def variant(tmp_path, name: str, quick_gelu: bool = False, **vision) -> winclip.WinCLIP:
    """The tiny model with some vision-config fields changed, random weights, fp32 on the CPU."""
    cfg = json.loads(open(TINY).read())
    cfg["vision_cfg"].update(vision)
    if quick_gelu:
        cfg["quick_gelu"] = True
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        return winclip.WinCLIP(str(path), None, device="cpu", precision="fp32")


@pytest.mark.parametrize(
    "name, options",
    [
        ("plain", {}),
        ("one-block", {"layers": 1}),
        ("layerscale", {"ls_init_value": 0.5}),
        ("quickgelu", {"quick_gelu": True}),
        ("tanh-gelu", {"act_kwargs": {"approximate": "tanh"}}),
        ("three-heads", {"width": 96, "head_width": 32, "layers": 3}),
    ],
)
def test_fused_path_equals_open_clip_modules_in_fp32(tmp_path, name, options):
    m = variant(tmp_path, f"tiny-{name}", **options)
    assert m.backbone.tower.fused and m.backbone.tower.fallback_reason is None
    act = m.clip.visual.transformer.resblocks[0].mlp.gelu
    assert type(act).__name__ == ("QuickGELU" if name == "quickgelu" else "GELU")
    assert getattr(act, "approximate", "none") == ("tanh" if name == "tanh-gelu" else "none")
    with torch.no_grad():  # LayerScale gammas and biases away from their init, so every term matters
        for p in m.clip.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        fast = m.backbone.tower.encode(x, (2, 3))
        ref = reference_features(m.clip.visual, x)
    assert fast.windows[2].shape == (3, 49, 32) and fast.patches.shape == ref.patches.shape
    assert max_abs_diff(fast, ref) <= 1e-5


def test_fused_path_with_one_scale_and_odd_batches(model):
    x = torch.randn(5, 3, 64, 64)
    slow = VisionTower(model.clip.visual, fused=False)
    with torch.inference_mode():
        for scales in ((3,), (2,), (2, 3)):
            for n in (1, 5):
                assert max_abs_diff(model.backbone.tower.encode(x[:n], scales), slow.encode(x[:n], scales)) <= 1e-5


def test_unsupported_blocks_fall_back_to_open_clip(tmp_path):
    m = variant(tmp_path, "tiny-custom", scale_attn=True)  # open_clip's CustomResidualAttentionBlock
    assert not m.backbone.tower.fused
    assert m.backbone.tower.fallback_reason == "CustomResidualAttentionBlock blocks are not supported by the fused path"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert max_abs_diff(m.backbone.tower.encode(x, (2, 3)), reference_features(m.clip.visual, x)) <= 1e-5
    block = make_model().clip.visual.transformer.resblocks[0]
    assert fused_block_support(block) is None
    block.mlp.add_module("extra", torch.nn.Identity())
    assert "MLP" in fused_block_support(block)


def test_linear_equals_torch_linear():
    torch.manual_seed(0)
    x, w, b = torch.randn(300, 96), torch.randn(200, 96), torch.randn(200)
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double()).float()
    torch.testing.assert_close(linear(x, w, b), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x, w, None), ref - b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear(x[::2], w, b), ref[::2], rtol=1e-5, atol=1e-5)  # strided input


def test_bf16_products_over_an_fp32_residual_stay_closer_to_fp32_than_an_all_bf16_tower():
    fp32, bf16 = make_model(precision="fp32"), make_model(precision="bf16")
    tower = bf16.backbone.tower
    assert tower.fused and tower.matmuls.low == torch.bfloat16 and bf16.backbone.dtype == torch.float32
    x = torch.randn(3, 3, 64, 64)
    a, b = fp32.encode(x), bf16.encode(x)
    all_bf16 = VisionTower(copy.deepcopy(fp32.clip.visual).to(torch.bfloat16), fused=False)  # open_clip's modules
    with torch.inference_mode():
        c = all_bf16.encode(x.bfloat16(), (2, 3)).to("cpu", torch.float32)

    def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
        return ((got - ref).norm() / ref.norm()).item()

    parts = [lambda f: f.image, lambda f: f.patches, lambda f: f.windows[2], lambda f: f.windows[3]]
    mixed = [rel(part(b), part(a)) for part in parts]
    whole = [rel(part(c), part(a)) for part in parts]
    assert len(mixed) == len(whole) == 4
    assert max(mixed) < BF16_FEATURE_RTOL and max(whole) < BF16_FEATURE_RTOL
    assert sum(mixed) < 0.5 * sum(whole)  # the fp32 residual stream halves the error at least


def test_plain_forward_and_hidden_tokens_are_open_clips(rng):
    model = make_model()
    x = torch.stack([model.backbone.preprocess(Image.fromarray(textured(rng, 64, 64))) for _ in range(3)])
    visual = model.clip.visual
    with torch.no_grad():
        expected = model.clip.encode_image(x)
        out = visual.forward_intermediates(x, indices=[0, 1], intermediates_only=True, output_fmt="NLC")
    for tower in (model.backbone.tower, model.backbone.unfused().tower):
        torch.testing.assert_close(tower.embed(x), expected, rtol=1e-5, atol=1e-5)
    hidden = model.backbone.tower.hidden_tokens(x, (1, 2))
    width = visual.transformer.width
    for i in range(2):
        torch.testing.assert_close(hidden[..., i * width : (i + 1) * width], out["image_intermediates"][i])
    with pytest.raises(ValueError, match="hidden layers"):
        model.backbone.tower.hidden_tokens(x, (3,))
