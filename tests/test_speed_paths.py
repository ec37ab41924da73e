"""The fast paths compute what open_clip's own modules compute (fp32 exactly, bf16 within a tolerance)."""

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import winclip
from conftest import TINY, make_model, textured
from winclip.backbones import precision
from winclip.backbones.precision import resolve_precision
from winclip.backbones.tower import VisionTower, fused_block_support, linear
from winclip.method.windows import window_indices

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


def reference_features(visual: torch.nn.Module, x: torch.Tensor, scales=(2, 3)) -> winclip.Features:
    """Features through open_clip's own modules: encode_image, output tokens and one window at a time."""
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    seq = visual.conv1(x).flatten(2).transpose(1, 2) + visual.positional_embedding[1:]
    cls = visual.class_embedding + visual.positional_embedding[0]
    windows = {}
    for k in scales:
        idx = window_indices(tuple(visual.grid_size), k)
        per_window = []
        for w in idx:  # one window of every image per forward, through ln_pre → open_clip's blocks → ln_post
            s = torch.cat([cls.expand(len(x), 1, -1), seq[:, w]], dim=1)
            per_window.append(visual.ln_post(visual.transformer(visual.ln_pre(s)))[:, 0] @ visual.proj)
        windows[k] = torch.stack(per_window, dim=1)
    return winclip.Features(pooled, windows, tokens)


def max_abs_diff(a: winclip.Features, b: winclip.Features) -> float:
    diffs = [(a.image - b.image).abs().max(), (a.patches - b.patches).abs().max()]
    diffs += [(a.windows[k] - b.windows[k]).abs().max() for k in b.windows]
    assert len(diffs) == 2 + len(b.windows)
    return max(d.item() for d in diffs)


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


def fidelity(model: winclip.WinCLIP, reference: winclip.WinCLIP, images: list) -> tuple[float, float]:
    """(Spearman of image scores, max relative map difference) of `model` against `reference`."""
    a, b = reference.predict(images), model.predict(images)
    rho = spearmanr(a.scores.numpy(), b.scores.numpy()).statistic
    rel = max(((m - r).abs().max() / r.abs().max()).item() for m, r in zip(b.maps, a.maps, strict=True))
    return float(rho), rel


def half_model(dtype: torch.dtype, refs: list) -> winclip.WinCLIP:
    """The tiny model with its visual tower in `dtype` on the CPU (fp16 here only to measure fidelity)."""
    m = make_model(precision="fp32").set_object("bottle")
    m.clip.visual.to(dtype)
    m.backbone.dtype = dtype
    return m.fit(refs)


def test_fidelity_on_textured_images(rng):
    images = [textured(rng, 64, 64) for _ in range(12)]
    refs = [textured(rng, 64, 64)]
    reference = winclip.WinCLIP(make_model(precision="fp32").backbone.unfused()).set_object("bottle").fit(refs)
    fused = make_model(precision="fp32").set_object("bottle").fit(refs)
    rho, rel = fidelity(fused, reference, images)
    assert rho == pytest.approx(1.0) and rel < 1e-5
    rho, rel = fidelity(half_model(torch.float16, refs), reference, images)
    assert rho == pytest.approx(1.0) and rel < 1e-3  # measured: 1.0 and 3.4e-4, hence auto = fp16 on CUDA
    rho, rel = fidelity(half_model(torch.bfloat16, refs), reference, images)
    assert rho > 0.9 and rel < 1e-2  # measured: 0.965 and 3.5e-3: bf16 swaps close scores of random weights


def test_auto_precision_is_resolved_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda).value == "fp16"
    assert [resolve_precision(p, cuda).value for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert resolve_precision("bf16", cpu) == precision.PrecisionChoice("bf16", "asked for")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; use one of auto, fp32, bf16, fp16"):
        resolve_precision("fp8", cpu)
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    no_bf16 = resolve_precision("auto", cpu, "ViT-B-16-plus-240")
    assert no_bf16.value == "fp32" and "no native bf16" in no_bf16.reason
    m = make_model()
    assert m.backbone.precision == "fp32" and m.backbone.dtype == torch.float32
    assert "precision fp32 (auto: this CPU has no native bf16" in winclip.model.banner(m)


def test_auto_picks_bf16_only_on_native_bf16_with_fidelity_that_holds(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    held = precision.Fidelity(spearman=0.9995, score_rel=0.01, map_rel=3e-3, images=64)
    missed = precision.Fidelity(spearman=0.99, score_rel=0.05, map_rel=3e-3, images=64)
    monkeypatch.setattr(precision, "BF16_FIDELITY", {"tiny-vit": held, "ViT-B-32": missed})
    choice = resolve_precision("auto", cpu, "tiny-vit")
    assert choice.value == "bf16" and choice.reason.startswith("auto: native bf16 and measured fidelity")
    assert resolve_precision("auto", cpu, "ViT-B-32").reason.startswith(
        "auto: native bf16, but its measured fidelity misses"
    )
    assert "not measured for ViT-L-14" in resolve_precision("auto", cpu, "ViT-L-14").reason
    m = make_model()
    assert m.backbone.precision == "bf16" and m.backbone.tower.matmuls.low == torch.bfloat16
    assert "precision bf16 (auto: native bf16 and measured fidelity (Spearman 0.9995" in winclip.model.banner(m)
    assert resolve_precision("fp32", cpu, "tiny-vit").value == "fp32"  # an explicit choice stays
    monkeypatch.setattr(precision, "OPENVINO_BF16_FIDELITY", {"ViT-B-32": held})
    assert resolve_precision("auto", cpu, "ViT-B-32", "openvino").value == "bf16"  # each runtime its own evidence
    assert resolve_precision("auto", cpu, "tiny-vit", "openvino").value == "fp32"
    assert resolve_precision("auto", cpu, "ViT-B-32", "onnxruntime").reason == "auto: onnxruntime runs fp32"


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    assert precision.native_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(precision, "cpu_flags", lambda: set())
    assert precision.native_bf16() is False
    monkeypatch.undo()
    info = Path("/proc/cpuinfo")
    if info.is_file():  # Linux: every bf16 flag the kernel lists is found
        flags = next(line for line in info.read_text().splitlines() if line.startswith("flags")).split()
        assert {f for f in flags if f in precision.BF16_CPU_FLAGS} <= precision.cpu_flags()


def test_prototypes_and_memories_are_computed_once(model, rng, monkeypatch):
    refs = [textured(rng, 64, 64) for _ in range(2)]
    model.fit(refs)
    memory, protos = model.memory_, model.prototypes_
    calls = []
    monkeypatch.setattr("winclip.backbones.openclip.encode_text", lambda clip, tok, texts: calls.append(texts))
    encode = model.backbone.encode
    monkeypatch.setattr(model.backbone, "encode", lambda x, scales: calls.append(len(x)) or encode(x, scales))
    model.predict([Image.fromarray(textured(rng, 64, 64)) for _ in range(3)], batch_size=2)
    assert calls == [2, 1]  # the queries only, batch by batch; no text encoding, no reference encoding
    assert model.memory_ is memory and model.prototypes_ is protos
