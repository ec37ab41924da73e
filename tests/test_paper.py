"""The paper's protocol against independent computations: multi-crop, VisA tiling, the open choices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision.transforms import TenCrop

from conftest import TINY, make_model, textured
from synthetic import make_visa
from winclip.cli import main
from winclip.method.crops import crop_corners, crop_resize, ten_crops
from winclip.method.few_shot import nearest_distance
from winclip.method.tiling import square_tiles
from winclip.method.windows import coverage_matrix
from winclip.method.zero_shot import aggregate_windows, ascore0, harmonic_fusion
from winclip.paper.data import load_dataset
from winclip.paper.feature_cache import FeatureCache, encode_files

TINY_ARGS = ["--backbone", TINY, "--pretrained", "none", "--no-progress", "--batch-size", "4"]


def _normalised(model, img: Image.Image) -> torch.Tensor:
    """RGB → normalised tensor with the model's mean/std, no resizing (crops are already at size)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(model.info.mean).view(3, 1, 1)) / torch.tensor(model.info.std).view(3, 1, 1)


def _ten_crop_score(model, img: Image.Image) -> float:
    """AlexNet's ten crops (four corners, centre, their mirror images) cut with PIL, each through open_clip's
    own encode_image one by one, ascore0 averaged."""
    size = model.info.image_size[0]
    big = img.resize((crop_resize(size),) * 2, Image.Resampling.BICUBIC)
    far = big.width - size
    centre = int(round(far / 2))
    corners = [(0, 0), (far, 0), (0, far), (far, far), (centre, centre)]
    crops = [big.crop((x, y, x + size, y + size)) for x, y in corners]
    crops += [ImageOps.mirror(c) for c in crops]
    with torch.no_grad():
        emb = torch.cat([model.clip.encode_image(_normalised(model, c)[None]) for c in crops])
    t_n, t_a = model.prototypes_
    return float(ascore0(emb, t_n, t_a, model.options.temperature).mean())


def test_crop_geometry_is_alexnets():
    """At ViT-B/16+'s 240 (274 → 240) the ten crops are torchvision's TenCrop (which mirrors the whole image
    first: the same crops whenever R − S is even)."""
    assert crop_resize(240) == 274 and crop_resize(224) == 256
    assert crop_corners(274, 240) == ((0, 0), (0, 34), (34, 0), (34, 34), (17, 17))
    view = torch.rand(3, 274, 274)
    ours = ten_crops(view, 240)
    theirs = torch.stack(TenCrop(240)(view))
    assert ours.shape == (10, 3, 240, 240)
    for crop in theirs:
        assert any(torch.equal(crop, c) for c in ours)
    with pytest.raises(ValueError, match="does not fit"):
        crop_corners(200, 240)


@pytest.mark.parametrize("fused", [True, False])
def test_multi_crop_score_is_the_mean_over_ten_crops_through_open_clip(rng, fused):
    model = make_model(multi_crop=True)
    if not fused:
        model = type(model)(model.backbone.unfused(), None, multi_crop=True, device="cpu")
    model.set_object("bottle")
    images = [Image.fromarray(textured(rng, 50, 70)), Image.fromarray(textured(rng, 64, 64))]
    pred = model.predict(images)
    for i, img in enumerate(images):
        expected = _ten_crop_score(model, img)
        assert float(pred.scores[i]) == pytest.approx(expected, abs=1e-5)
        assert float(pred.zero_shot[i]) == pytest.approx(expected, abs=1e-5)


def test_multi_crop_changes_the_image_score_only(rng):
    """Maps keep the full view (with its image-scale term); Eq. 6 takes the ten-crop score."""
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(3)]
    refs = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    plain = make_model().set_object("bottle").fit(refs)
    multi = make_model(multi_crop=True).set_object("bottle").fit(refs)
    a, b = plain.predict(images), multi.predict(images)
    for m1, m2 in zip(a.maps, b.maps, strict=True):
        torch.testing.assert_close(m1, m2, rtol=0, atol=0)
    plain.fit(None)
    full_view = plain.predict(images).scores
    crops = torch.tensor([_ten_crop_score(multi, img) for img in images])
    torch.testing.assert_close(b.scores - a.scores, 0.5 * (crops - full_view), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="not a tensor"):
        multi.predict(torch.zeros(1, 3, 64, 64))


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


def test_one_class_scores_fall_as_the_normal_similarity_rises(rng):
    """Table 3 (a): t_a = 0, so ascore0 = σ(−<e, t_n>/τ): the ranking of −<f(x), g(s−)>."""
    model = make_model(prompts="one-class").set_object("bottle")
    t_n, t_a = model.prototypes_
    assert torch.count_nonzero(t_a) == 0
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(6)]
    feats = model.encode_images(images).features
    cos = F.normalize(feats.image, dim=-1) @ t_n
    scores = model.score(feats).scores
    torch.testing.assert_close(scores, torch.sigmoid(-cos / 0.07), rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.argsort(scores), torch.argsort(-cos))


def _independent_vision_map(model, feats, memory, scales, aggregation):
    maps = [nearest_distance(feats.patches, memory.patches)]
    for k in scales:
        d = nearest_distance(feats.windows[k], memory.windows[k])
        maps.append(aggregate_windows(d, coverage_matrix(model.backbone.grid, k), aggregation))
    return torch.stack(maps).mean(0)


def test_few_shot_choices_follow_their_definitions(rng):
    refs = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(3)]
    base = make_model().set_object("bottle").fit(refs)
    feats = base.encode_images(images).features
    zero = make_model().set_object("bottle").score(feats)  # zero-shot: scores and M0
    default = base.score(feats)
    n = len(feats)
    for changes, scales, aggregation in (
        ({"fewshot_score": "vision"}, (2, 3), "harmonic"),
        ({"fewshot_score": "zero-shot"}, (2, 3), "harmonic"),
        ({"vision_scales": ()}, (), "harmonic"),
        ({"vision_scales": (3,)}, (3,), "harmonic"),
        ({"fewshot_aggregation": "mean"}, (2, 3), "mean"),
        ({"fewshot_fusion": "harmonic"}, (2, 3), "harmonic"),
    ):
        model = base.with_options(**changes).set_object("bottle").fit(refs)
        got = model.score(feats)
        mw = _independent_vision_map(model, feats, model.memory_, scales, aggregation)
        score = {
            "both": 0.5 * (zero.scores + mw.amax(1)),
            "vision": mw.amax(1),
            "zero-shot": zero.scores,
        }[model.options.fewshot_score]
        m0 = zero.maps.view(n, -1)
        fused = harmonic_fusion([m0, mw]) if model.options.fewshot_fusion == "harmonic" else 0.5 * (m0 + mw)
        torch.testing.assert_close(got.scores, score, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.maps.view(n, -1), fused, rtol=1e-6, atol=1e-6)
        assert not torch.equal(got.maps, default.maps) or not torch.equal(got.scores, default.scores)
    with pytest.raises(ValueError, match="vision scales"):
        make_model(vision_scales=(4,))


def test_projected_patch_features_are_tokens_times_the_projection(rng):
    images = [Image.fromarray(textured(rng, 64, 64)) for _ in range(2)]
    tokens = make_model().encode_images(images).features.patches
    model = make_model(patch_features="projected")
    projected = model.encode_images(images).features.patches
    torch.testing.assert_close(projected, tokens @ model.clip.visual.proj, rtol=1e-5, atol=1e-6)
    assert model.feature_key() == {"patch_features": "projected"} and make_model().feature_key() == {}


def test_the_cache_adds_crops_to_an_entry_without_encoding_it_again(tmp_path, rng, monkeypatch):
    files = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray(textured(rng, 64, 64)).save(path)
        files.append((path, f"sha{i}"))
    model = make_model()
    cache = FeatureCache(tmp_path / "cache", model)
    bar = type("Bar", (), {"update": lambda self, n: None})()
    assert encode_files(model, cache, files[:2], bar) == (2, {})
    assert cache.has("sha0") and not cache.has_crops("sha0") and not cache.complete("sha0", crops=True)
    calls = []
    original = type(model).encode

    def counting(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(type(model), "encode", counting)
    multi = make_model(multi_crop=True)
    assert FeatureCache(tmp_path / "cache", multi).folder == cache.folder  # crops do not move the entry
    assert encode_files(multi, cache, files, bar) == (3, {})
    assert calls == [1]  # only the new file is encoded whole; the other two get their crops
    direct = multi.encode_images([Image.open(p).convert("RGB") for p, _ in files]).features
    for i in range(3):
        entry = cache.load(f"sha{i}").features
        torch.testing.assert_close(entry.crops, direct.crops[i : i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(entry.image, direct.image[i : i + 1], rtol=1e-5, atol=1e-6)


def test_tiles_stride_at_most_four_fifths_of_the_short_side():
    for h, w in ((1000, 1500), (1000, 1000), (64, 96), (96, 64), (500, 2000), (100, 181)):
        tiles = square_tiles(h, w, 0.2)
        side = min(h, w)
        starts = [t.left if w >= h else t.top for t in tiles]
        assert all(t.side == side for t in tiles) and starts[0] == 0 and starts[-1] == max(h, w) - side
        assert all(0 < b - a <= 0.8 * side for a, b in zip(starts, starts[1:], strict=False))
        assert len(tiles) == (1 if h == w else math.ceil((max(h, w) - side) / (0.8 * side)) + 1)


def test_visa_eval_tiles_and_averages_the_tiles_predictions(tmp_path):
    """Default VisA eval: each tile predicted on its own; image score = mean over tiles, pixel = mean over tiles."""
    root = make_visa(tmp_path / "data", classes=("candle",), size=(64, 112))
    out = tmp_path / "out"
    args = ["--dataset", "visa", "--root", str(root), "--out", str(out), "--shots", "0", "--eval-resolution"]
    assert main(["eval", *args, "original", *TINY_ARGS]) == 0
    scores = np.load(out / "scores.npz")
    (data,) = load_dataset("visa", root)
    model = make_model(multi_crop=True).set_object("candle")  # squash: one tile is one square image
    from sklearn.metrics import roc_auc_score

    maps, masks = [], []
    for sample in data.test:
        img = Image.open(sample.path).convert("RGB")
        side, long = 64, 112
        n = math.ceil((long - side) / (0.8 * side)) + 1
        lefts = [round(i * (long - side) / (n - 1)) for i in range(n)]
        tiles = [img.crop((x, 0, x + side, side)) for x in lefts]
        pred = model.predict(tiles)
        total, count = torch.zeros(64, 112), torch.zeros(64, 112)
        for x, tile_map in zip(lefts, pred.maps, strict=True):
            total[:, x : x + side] += tile_map
            count[:, x : x + side] += 1
        maps.append((total / count).numpy().ravel())
        mask = np.zeros((64, 112), bool) if sample.mask is None else np.asarray(Image.open(sample.mask)) > 0
        masks.append(mask.ravel())
        i = list(scores["path"]).index(sample.path.relative_to(root).as_posix())
        assert scores["score"][i] == pytest.approx(float(pred.scores.mean()), abs=1e-5)
    summary = (out / "summary.md").read_text()
    assert "tile (overlap ≥ 0.2, image score = mean over tiles)" in summary and "on (ten crops)" in summary
    import csv

    with (out / "results.csv").open() as handle:
        got = {r["metric"]: float(r["value"]) for r in csv.DictReader(handle) if r["class"] == "candle"}
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(np.concatenate(masks), np.concatenate(maps)), abs=1e-6)
