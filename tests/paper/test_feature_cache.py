"""The evaluation feature cache (winclip.paper.feature_cache)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import make_model, textured
from winclip.paper.feature_cache import FeatureCache, encode_files


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
    original = type(model).encode_batch

    def counting(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(type(model), "encode_batch", counting)
    multi = make_model(multi_crop=True)
    assert FeatureCache(tmp_path / "cache", multi).folder == cache.folder  # crops do not move the entry
    assert encode_files(multi, cache, files, bar) == (3, {})
    assert calls == [1]  # only the new file is encoded whole; the other two get their crops
    direct = multi.encode_images([Image.open(p).convert("RGB") for p, _ in files]).features
    for i in range(3):
        entry = cache.load(f"sha{i}").features
        torch.testing.assert_close(entry.crops, direct.crops[i : i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(entry.image, direct.image[i : i + 1], rtol=1e-5, atol=1e-6)


def test_an_entry_without_image_features_is_refused_by_name(tmp_path):
    (tmp_path / "settings.json").write_text("{}\n")
    cache = FeatureCache.open(tmp_path)
    save_file({"patches": torch.zeros(1, 4, 8)}, str(cache.path("sha0")), metadata={"height": "8", "width": "8"})
    assert cache.has("sha0")
    with pytest.raises(ValueError, match=r"sha0\.safetensors: not a feature cache entry \(no image features\)"):
        cache.load("sha0")
