from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import winclip
from helpers import make_model, textured


def test_query_in_its_own_references_has_a_zero_vision_map(model, rng):
    refs = [textured(rng, 64, 64) for _ in range(3)]
    zero = model.predict(refs)
    model.fit(refs)
    few = model.predict(refs)
    torch.testing.assert_close(few.scores, 0.5 * zero.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(few.zero_shot, zero.zero_shot)
    for m0, m in zip(zero.maps, few.maps, strict=True):
        torch.testing.assert_close(m, 0.5 * m0, rtol=0, atol=1e-6)  # (M0 + M^W)/2 with M^W ≡ 0
    feats = model.encode(torch.stack([model.backbone.preprocess(Image.fromarray(r)) for r in refs]))
    grid = model.score(feats)
    torch.testing.assert_close(grid.scores, 0.5 * grid.zero_shot, rtol=0, atol=1e-6)


def test_few_shot_differs_for_a_new_image(model, rng):
    model.fit([textured(rng, 64, 64)])
    query = textured(rng, 64, 64)
    few = model.predict([query])
    assert few.scores[0] > 0.5 * few.zero_shot[0] + 1e-4


def test_scores_in_unit_interval_and_maps_at_input_size(model, rng):
    images = [textured(rng, 64, 64), textured(rng, 37, 91), textured(rng, 120, 50)]
    for refs in ([], [textured(rng, 64, 64)]):
        model.fit(refs)
        p = model.predict(images)
        assert p.scores.shape == (3,)
        assert ((p.scores >= 0) & (p.scores <= 1)).all()
        assert [tuple(m.shape) for m in p.maps] == [(64, 64), (37, 91), (120, 50)]
        assert all(m.dtype == torch.float32 and ((m >= 0) & (m <= 1)).all() for m in p.maps)


def test_tensor_input_keeps_tensor_resolution(model):
    p = model.predict(torch.randn(3, 3, 64, 64))
    assert p.scores.shape == (3,) and all(m.shape == (64, 64) for m in p.maps)
    with pytest.raises(ValueError, match=r"expected a preprocessed tensor of shape \(N, 3, 64, 64\)"):
        model.predict(torch.randn(1, 3, 32, 32))


def test_fit_empty_restores_zero_shot_and_refit_replaces(model, rng):
    images = [textured(rng, 64, 64) for _ in range(2)]
    before = model.predict(images)
    model.fit([textured(rng, 64, 64)])
    assert model.memory_.shots == 1
    model.fit([textured(rng, 64, 64) for _ in range(2)])
    assert model.memory_.shots == 2 and model.memory_.patches.shape == (2 * 64, 64)
    model.fit([])
    assert model.memory_ is None
    after = model.predict(images)
    assert torch.equal(before.scores, after.scores)
    assert len(before.maps) == len(after.maps) == 2
    assert all(torch.equal(a, b) for a, b in zip(before.maps, after.maps, strict=True))


def test_results_are_deterministic(rng):
    images = [textured(rng, 64, 64), textured(rng, 50, 70)]
    refs = [textured(rng, 64, 64)]
    a = make_model().set_object("bottle").fit(refs).predict(images)
    b = make_model().set_object("bottle").fit(refs)
    b1, b2 = b.predict(images), b.predict(images)
    for other in (b1, b2):
        assert torch.equal(a.scores, other.scores)
        assert len(a.maps) == len(other.maps) == 2
        assert all(torch.equal(m, n) for m, n in zip(a.maps, other.maps, strict=True))


def test_every_input_form_gives_the_same_result(model, tmp_path, rng):
    rgb = textured(rng, 48, 80)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    forms = [tmp_path / "x.png", str(tmp_path / "x.png"), Image.fromarray(rgb), rgb]
    results = [model.predict(f) for f in forms]
    assert len(results) == 4
    for r in results[1:]:
        assert torch.equal(r.scores, results[0].scores) and torch.equal(r.maps[0], results[0].maps[0])


def test_tiling_gives_full_size_maps_and_leaves_squares_alone(rng):
    squash = make_model().set_object("bottle")
    tile = make_model(resize="tile").set_object("bottle")
    wide, square = textured(rng, 60, 150), textured(rng, 70, 70)
    p = tile.predict([wide, square])
    assert p.maps[0].shape == (60, 150) and p.maps[1].shape == (70, 70)
    alone, q = tile.predict([square]), squash.predict([square])  # same batch composition: bit-identical
    assert torch.equal(alone.scores, q.scores) and torch.equal(alone.maps[0], q.maps[0])
    # the wide image's tiles: squares at 0, 45, 90; its score is the max over tiles
    crops = [Image.fromarray(wide[:, s : s + 60]) for s in (0, 45, 90)]
    tiles = squash.predict(crops)
    assert p.scores[0].item() == pytest.approx(tiles.scores.max().item(), abs=1e-6)
    torch.testing.assert_close(p.maps[0][:, :45], tiles.maps[0][:, :45])
    torch.testing.assert_close(p.maps[0][:, 45:60], 0.5 * (tiles.maps[0][:, 45:] + tiles.maps[1][:, :15]))
    mean = make_model(resize="tile", tile_reduce="mean").set_object("bottle").predict([wide])
    assert mean.scores[0].item() == pytest.approx(tiles.scores.mean().item(), abs=1e-6)


def test_predict_needs_prototypes_and_checks_them(rng):
    m = make_model()
    with pytest.raises(RuntimeError, match="call set_object"):
        m.predict([textured(rng, 64, 64)])
    with pytest.raises(ValueError, match=r"normal prototype has shape \(5,\), expected \(32,\)"):
        m.set_prototypes(torch.zeros(5), torch.zeros(32))
    m.set_prototypes(torch.randn(32), torch.randn(32))
    assert m.predict([textured(rng, 64, 64)]).scores.shape == (1,)


def test_prototypes_are_cached_and_states_matter(model, monkeypatch):
    first = model.prototypes_
    calls = []
    import winclip.backbones.openclip as module

    original = module.encode_text
    monkeypatch.setattr(
        module, "encode_text", lambda m, tok, texts: calls.append(len(texts)) or original(m, tok, texts)
    )
    model.set_object("bottle")
    assert calls == [] and model.prototypes_ is first
    model.set_object("bottle", anomalous_states=["{o} with a crack"])
    assert calls and not torch.equal(model.prototypes_[1], first[1])
    assert torch.equal(model.prototypes_[0], first[0])
    model.set_object("metal_nut")
    assert model.object_ == "metal nut"


def test_a_bad_file_is_reported_before_any_work_and_streaming_goes_on(model, tmp_path, rng):
    Image.fromarray(textured(rng, 64, 64)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    Image.fromarray(textured(rng, 64, 64)).save(tmp_path / "c.png")
    files = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    with pytest.raises(winclip.ImageError, match=r"b\.png: file is empty"):
        model.predict(files)
    results = list(model.iter_predict(files, batch_size=2))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[1].error is not None and results[1].map is None
    assert results[0].error is None and results[2].map.shape == (64, 64)
    assert results[2].score == pytest.approx(model.predict(files[2]).scores[0].item(), abs=1e-6)


def test_options_are_validated():
    for bad in (
        {"precision": "fp8"},
        {"resize": "crop"},
        {"tile_reduce": "min"},
        {"temperature": 0},
        {"scales": (), "image_scale": False},
        {"scales": (9,)},
        {"prompts": "nope"},
        {"precision": "fp16"},
    ):
        with pytest.raises(ValueError):
            make_model(**bad)


def test_ablation_options_change_maps(rng):
    images = [textured(rng, 64, 64)]
    base = make_model().set_object("bottle").predict(images)
    no_image = make_model(image_scale=False).set_object("bottle").predict(images)
    mean = make_model(aggregation="mean").set_object("bottle").predict(images)
    small = make_model(scales=(2,)).set_object("bottle").predict(images)
    assert torch.equal(base.scores, no_image.scores)  # zero-shot score is ascore0(F^I) either way
    for other in (no_image, mean, small):
        assert not torch.equal(base.maps[0], other.maps[0])


def test_a_shared_backbone_fixes_the_loading_options(model):
    b = model.backbone
    for same in ({}, {"device": "auto"}, {"device": "cpu"}, {"precision": "auto"}, {"precision": "fp32"}):
        assert winclip.WinCLIP(b, **same).backbone is b, same
    for clash, name in (({"precision": "bf16"}, "precision"), ({"runtime": "onnxruntime"}, "runtime")):
        with pytest.raises(ValueError, match=f"^{name}: fixed by the given backbone; leave them out"):
            winclip.WinCLIP(b, **clash)


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


def test_projected_patch_features_are_tokens_times_the_projection(rng):
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    tokens = make_model().encode_images(images).features.patches
    model = make_model(patch_features="projected")
    projected = model.encode_images(images).features.patches
    torch.testing.assert_close(projected, tokens @ model.clip.visual.proj, rtol=1e-5, atol=1e-6)
    assert model.feature_key() == {"patch_features": "projected"} and make_model().feature_key() == {}


def test_encode_takes_what_predict_takes_and_says_what_it_needs(model, tmp_path, rng):
    arrays = [textured(rng, 64, 64), textured(rng, 48, 80)]
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    batch = torch.stack([model.backbone.preprocess(Image.fromarray(a)) for a in arrays])
    expected = model.encode(batch)
    for given in (arrays, [str(tmp_path / "a.png"), Image.fromarray(arrays[1])], [arrays[0], arrays[1]]):
        feats = model.encode(given)
        torch.testing.assert_close(feats.image, expected.image, rtol=0, atol=1e-6)
        for k in model.options.scales:
            torch.testing.assert_close(feats.windows[k], expected.windows[k], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.encode(arrays[1]).patches, expected.patches[1:], rtol=0, atol=1e-6)  # one image
    with pytest.raises(winclip.ImageError, match=r"^image\[1\]: unsupported input type Tensor$"):
        model.encode([arrays[0], torch.zeros(3, 64, 64)])
    with pytest.raises(ValueError, match=r"expected a preprocessed tensor of shape \(N, 3, 64, 64\)"):
        model.encode(torch.zeros(3, 64, 64))


def test_predictions_convert_to_numpy(model, rng):
    images = [textured(rng, 64, 64), textured(rng, 37, 91)]
    pred = model.predict(images)
    arrays = pred.numpy()
    assert isinstance(arrays.scores, np.ndarray) and arrays.scores.shape == (2,)
    np.testing.assert_array_equal(arrays.scores, pred.scores.numpy())
    np.testing.assert_array_equal(arrays.zero_shot, np.asarray(pred.zero_shot))
    assert [m.shape for m in arrays.maps] == [(64, 64), (37, 91)] and arrays.maps[1].dtype == np.float32
    np.testing.assert_array_equal(arrays.maps[1], np.asarray(pred.maps[1]))


def test_a_model_and_a_profile_read_well_in_a_console(model, rng):
    backbone = "Backbone('tiny-vit', pretrained=None, device='cpu', precision='fp32')"
    assert repr(model) == f"WinCLIP({backbone}, object='bottle', zero-shot)"
    model.fit([textured(rng, 64, 64), textured(rng, 64, 64)])
    tiled = model.with_options(resize="tile", scales=(2,))
    assert repr(model).endswith("object='bottle', 2 reference views)")
    assert repr(tiled) == f"WinCLIP({backbone}, scales=(2,), resize='tile', no object set)"
    profile = winclip.Profile.create(model, "widget", [textured(rng, 64, 64)])
    assert repr(profile) == (
        "Profile(object='widget', backbone='tiny-vit', pretrained=None, shots=1, threshold=0.5, review_threshold=None, "
        "calibrated=False)"
    )
