import time
import warnings

import pytest
import torch

import winclip
from helpers import TINY, make_model
from winclip.backbones.openclip import load_clip
from winclip.method.windows import window_indices


def test_all_patch_window_reproduces_the_image_embedding(model):
    x = torch.randn(3, 3, 64, 64)
    tower = model.backbone.tower
    tokens = tower.tokens(x)
    everything = torch.arange(64)[None]  # one "window" holding all 8×8 patches
    window = tower.window_embeddings(tokens, everything)[:, 0]
    reference = model.clip.encode_image(x)  # open_clip's own forward
    assert (window - reference).abs().max().item() <= 1e-5
    assert (model.encode(x).image - reference).abs().max().item() <= 1e-5


def test_patch_tokens_are_open_clips_output_tokens(model):
    x = torch.randn(2, 3, 64, 64)
    model.clip.visual.output_tokens = True
    try:
        pooled, tokens = model.clip.visual(x)
    finally:
        model.clip.visual.output_tokens = False
    feats = model.encode(x)
    torch.testing.assert_close(feats.patches, tokens, rtol=0, atol=1e-5)
    torch.testing.assert_close(feats.image, pooled, rtol=0, atol=1e-5)


def slow_window_embedding(visual, x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """One window of one image at a time, written from docs/method.md §2 with plain open_clip modules."""
    patches = visual.conv1(x[None]).flatten(2).transpose(1, 2)[0]  # (L, C)
    pos = visual.positional_embedding
    seq = torch.cat([visual.class_embedding[None] + pos[:1], patches[window] + pos[1:][window]])
    out = visual.ln_post(visual.transformer(visual.ln_pre(seq[None])))
    return out[0, 0] @ visual.proj


def test_batched_window_pass_equals_one_window_at_a_time(model):
    x = torch.randn(2, 3, 64, 64)
    feats = model.encode(x)
    checked = 0
    for k in (2, 3):
        idx = window_indices(model.backbone.grid, k)
        assert feats.windows[k].shape == (2, idx.shape[0], 32)
        for n in range(2):
            for w in range(idx.shape[0]):
                ref = slow_window_embedding(model.clip.visual, x[n], idx[w].tolist())
                torch.testing.assert_close(feats.windows[k][n, w], ref, rtol=0, atol=1e-5)
                checked += 1
    assert checked == 2 * (49 + 36)


def test_images_in_a_batch_do_not_mix(model):
    x = torch.randn(4, 3, 64, 64)
    together = model.encode(x)
    alone = model.encode(x[2:3])
    torch.testing.assert_close(together.windows[3][2], alone.windows[3][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(together.patches[2], alone.patches[0], rtol=0, atol=1e-5)


def test_random_weights_are_seeded_and_announced():
    with pytest.warns(winclip.RandomWeightsWarning, match="meaningless"):
        a, _ = load_clip(TINY, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b, _ = load_clip(TINY, "none")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_round_trip(tmp_path, suffix):
    source = make_model()
    with torch.no_grad():  # weights that differ from the seeded random ones
        for p in source.clip.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.clip.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    loaded = winclip.WinCLIP(TINY, str(path), device="cpu")
    assert loaded.info.checkpoint == path
    assert loaded.info.weights_id.startswith("sha256:") and len(loaded.info.weights_id) == 71
    x = torch.randn(2, 3, 64, 64)
    a = source.set_object("screw").predict(x)
    b = loaded.set_object("screw").predict(x)
    assert torch.equal(a.scores, b.scores)
    assert len(a.maps) == len(b.maps) == 2 and all(torch.equal(m, n) for m, n in zip(a.maps, b.maps, strict=True))
    assert not torch.equal(make_model().set_object("screw").predict(x).scores, a.scores)


def test_missing_or_broken_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt: checkpoint file not found"):
        winclip.WinCLIP(TINY, str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pt: not a checkpoint of tiny-vit"):
        winclip.WinCLIP(TINY, str(bad))


def test_unavailable_download_fails_at_once_with_a_hint(tmp_path):
    start = time.monotonic()
    with pytest.raises(winclip.WeightsUnavailableError, match="--pretrained /path/to/checkpoint") as err:
        load_clip("ViT-B-32", "laion400m_e31", cache_dir=tmp_path)
    assert time.monotonic() - start < 30
    assert "\n" not in str(err.value)


def test_unknown_tag_and_backbone_are_reported():
    with pytest.raises(winclip.WeightsUnavailableError, match="known tags: .*laion400m_e31"):
        load_clip("ViT-B-16-plus-240", "no_such_tag")
    with pytest.raises(ValueError, match="unknown backbone 'ViT-Q-99'"):
        load_clip("ViT-Q-99", None)


def test_non_vit_backbones_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="ModifiedResNet is not a plain class-token open_clip ViT"):
            winclip.WinCLIP("RN50", None)


def test_bf16_precision_runs_and_stays_close(model):
    fast = make_model(precision="bf16").set_object("bottle")
    x = torch.randn(2, 3, 64, 64)
    a, b = model.predict(x), fast.predict(x)
    assert b.scores.dtype == torch.float32
    assert (a.scores - b.scores).abs().max().item() < 0.05


@pytest.mark.slow
def test_default_backbone_geometry_and_invariant():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = winclip.WinCLIP("ViT-B-16-plus-240", None, device="cpu")
    assert m.backbone.grid == (15, 15) and m.backbone.embed_dim == 640 and m.info.image_size == (240, 240)
    x = torch.randn(1, 3, 240, 240)
    feats = m.encode(x)
    assert feats.windows[2].shape == (1, 196, 640)
    assert feats.windows[3].shape == (1, 169, 640)
    assert feats.patches.shape == (1, 225, 896)
    whole = m.backbone.tower.window_embeddings(m.backbone.tower.tokens(x), torch.arange(225)[None])[:, 0]
    assert (whole - m.clip.encode_image(x)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_another_vit_has_its_own_grid():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = winclip.WinCLIP("ViT-B-32", None, device="cpu")
    assert m.backbone.grid == (7, 7) and m.backbone.embed_dim == 512
    m.set_prototypes(torch.randn(512), torch.randn(512))
    p = m.predict(torch.randn(1, 3, 224, 224))
    assert p.maps[0].shape == (224, 224)


def test_cut_text_context_equals_open_clips_encode_text(model):
    from winclip.backbones.openclip import encode_tokens
    from winclip.method.prompts import PromptSet

    normal, anomalous = PromptSet().prompts("metal nut")
    tokens = model.backbone.text.tokenizer(normal[:40] + anomalous[:40])
    assert tokens.shape[1] == 77 and int(tokens.argmax(-1).max()) < 30  # the cut is real
    torch.testing.assert_close(encode_tokens(model.clip, tokens), model.clip.encode_text(tokens), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_cut_text_context_on_the_default_text_tower():
    from winclip.backbones.openclip import encode_tokens

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = winclip.WinCLIP("ViT-B-16-plus-240", None, device="cpu")
    tokens = m.backbone.text.tokenizer(
        ["a photo of a bottle with defect for anomaly detection.", "a photo of the screw."]
    )
    torch.testing.assert_close(encode_tokens(m.clip, tokens), m.clip.encode_text(tokens), rtol=0, atol=1e-5)
