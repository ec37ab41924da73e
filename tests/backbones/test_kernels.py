"""The fp32 kernel choice (winclip.backbones.kernels): measured, cached per machine, used by the fused path, exact."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import load_tiny
from helpers.features import max_abs_diff, reference_features
from winclip.backbones import kernels, tower
from winclip.backbones.kernels import Product, choose, fastest

needs_onednn = pytest.mark.skipif(not kernels.ONEDNN, reason="this torch has no oneDNN linear kernel")


@needs_onednn
@pytest.mark.parametrize("kernel", ["aten", "onednn", "onednn-gelu"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_every_kernel_computes_the_same_product(kernel, approximate):
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(37, 24, generator=gen), torch.randn(40, 24, generator=gen), torch.randn(40, generator=gen)
    exact = torch.nn.functional.linear(x.double(), w.double(), b.double())
    want = torch.nn.functional.gelu(exact, approximate=approximate).float()
    torch.testing.assert_close(kernels.run(kernel, x, w, b, approximate), want, rtol=1e-5, atol=1e-5)
    if kernel != "onednn-gelu":
        torch.testing.assert_close(kernels.run(kernel, x[::2], w, None, None), (exact - b.double())[::2].float())


def test_fastest_is_the_lowest_median_and_ties_go_to_aten():
    assert fastest({"aten": [3.0, 1.0, 9.0], "onednn": [2.0, 2.5, 0.1]}) == "onednn"  # medians 3.0 vs 2.0
    assert fastest({"aten": [1.0, 5.0, 2.0], "onednn": [0.1, 4.0, 2.5]}) == "aten"  # one fast outlier is no median
    assert fastest({"aten": [1.0], "onednn": [1.0]}) == "aten"


def fake(times: dict[str, float], calls: list[str]):
    """A measurement that records each product it was asked for and reports fixed times."""

    def measure(product: Product) -> dict[str, list[float]]:
        calls.append(product.key)
        return {name: [times[name]] * 3 for name in product.candidates}

    return measure


@needs_onednn
def test_the_choice_is_measured_once_per_machine_then_read_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path))
    monkeypatch.delenv("WINCLIP_KERNELS", raising=False)
    products = [Product(8, 16), Product(8, 32, gelu=True)]
    calls: list[str] = []
    first = choose(products, fake({"aten": 2.0, "onednn": 1.0, "onednn-gelu": 3.0}, calls))
    assert calls == ["8x16", "8x32+gelu"] and first.kernels == {"8x16": "onednn", "8x32+gelu": "onednn"}
    assert first.source.startswith("measured now")
    stored = json.loads((tmp_path / "kernels.json").read_text())
    assert list(stored) == [kernels.machine_key()]
    assert stored[kernels.machine_key()]["8x32+gelu"]["ms"] == {"aten": 2000.0, "onednn": 1000.0, "onednn-gelu": 3000.0}

    again = choose(products, fake({"aten": 0.0, "onednn": 9.0, "onednn-gelu": 9.0}, calls))
    assert calls == ["8x16", "8x32+gelu"] and again.kernels == first.kernels and again.source.startswith("cached")

    # another machine (here: another thread count) is measured anew, beside the first
    monkeypatch.setattr(kernels, "machine_key", lambda: "another CPU")
    other = choose(products, fake({"aten": 1.0, "onednn": 2.0, "onednn-gelu": 0.5}, calls))
    assert other.kernels == {"8x16": "aten", "8x32+gelu": "onednn-gelu"} and len(calls) == 4
    assert len(json.loads((tmp_path / "kernels.json").read_text())) == 2


def test_a_corrupt_cache_or_an_unknown_kernel_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path))
    monkeypatch.delenv("WINCLIP_KERNELS", raising=False)
    (tmp_path / "kernels.json").write_text("{not json")
    calls: list[str] = []
    choose([Product(8, 16)], fake({"aten": 1.0, "onednn": 2.0}, calls))
    assert calls == ["8x16"]
    data = json.loads((tmp_path / "kernels.json").read_text())
    data[kernels.machine_key()]["8x16"]["kernel"] = "mystery"
    (tmp_path / "kernels.json").write_text(json.dumps(data))
    choice = choose([Product(8, 16)], fake({"aten": 1.0, "onednn": 2.0}, calls))
    assert calls == ["8x16", "8x16"] and choice.of(Product(8, 16)) == "aten"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path / "w"))
    assert kernels.cache_file() == tmp_path / "w" / "kernels.json"
    monkeypatch.delenv("WINCLIP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernels.cache_file() == tmp_path / "xdg" / "winclip" / "kernels.json"


@needs_onednn
@pytest.mark.parametrize("winner", ["aten", "onednn", "onednn-gelu"])
def test_the_fused_fp32_path_runs_the_measured_kernels_and_stays_exact(monkeypatch, tmp_path, winner):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path))
    monkeypatch.delenv("WINCLIP_KERNELS", raising=False)
    times = {"aten": 2.0, "onednn": 2.0, "onednn-gelu": 2.0, winner: 1.0}
    monkeypatch.setattr(kernels, "time_candidates", fake(times, []))
    backbone = load_tiny(precision="fp32")
    choice = backbone.tower.matmuls.kernels
    assert choice is not None and set(choice.kernels) == {"64x192", "64x64", "64x256+gelu", "256x64"}
    assert choice.of(Product(64, 256, gelu=True)) == winner
    plain = "onednn" if winner == "onednn" else "aten"
    assert choice.of(Product(64, 192)) == plain and "fp32 products: " in backbone.describe()

    used: list[str] = []
    real = tower.run
    monkeypatch.setattr(tower, "run", lambda k, *a: used.append(k) or real(k, *a))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fast = backbone.tower.encode(x, (2, 3))
        ref = reference_features(backbone.clip.visual, x)
    assert len(used) > 0 and set(used) == {plain, winner}
    assert max_abs_diff(fast, ref) <= 1e-5


def test_bf16_and_the_baseline_do_not_measure(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path))
    monkeypatch.delenv("WINCLIP_KERNELS", raising=False)
    calls: list[str] = []
    monkeypatch.setattr(kernels, "time_candidates", fake({"aten": 1.0, "onednn": 1.0, "onednn-gelu": 1.0}, calls))
    assert load_tiny(precision="fp32", fused=False).tower.matmuls.kernels is None
    assert load_tiny(precision="bf16").tower.matmuls.kernels is None
    assert calls == []


def test_winclip_kernels_pins_every_product_without_measuring(monkeypatch, tmp_path):
    monkeypatch.setenv("WINCLIP_CACHE", str(tmp_path))
    products = [Product(8, 16), Product(8, 32, gelu=True)]

    def never(product: Product) -> dict[str, list[float]]:
        raise AssertionError("pinned: nothing is measured")

    monkeypatch.setenv("WINCLIP_KERNELS", "aten")
    assert choose(products, never).kernels == {"8x16": "aten", "8x32+gelu": "aten"}
    monkeypatch.setenv("WINCLIP_KERNELS", "onednn")
    pinned = choose(products, never)
    if kernels.ONEDNN:
        assert pinned.kernels == {"8x16": "onednn", "8x32+gelu": "onednn-gelu"}
    else:
        assert pinned.kernels == {"8x16": "aten", "8x32+gelu": "aten"}  # oneDNN absent: ATen
    assert "WINCLIP_KERNELS=onednn" in pinned.summary() and not list(tmp_path.iterdir())
    monkeypatch.setenv("WINCLIP_KERNELS", "mkl")
    with pytest.raises(ValueError, match="WINCLIP_KERNELS='mkl': use one of aten, onednn"):
        choose(products, never)
