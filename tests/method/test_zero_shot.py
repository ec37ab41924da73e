"""Zero-shot equations (winclip.method.zero_shot): Eq. 1, 3, the multi-scale fusion, upsampling, smoothing."""

import math

import pytest
import torch

from winclip.method.zero_shot import ascore0, gaussian_smooth, harmonic_fusion, upsample


def test_ascore0_is_the_two_class_softmax():
    torch.manual_seed(0)
    e, t_n, t_a = torch.randn(5, 8), torch.randn(8), torch.randn(8)
    out = ascore0(e, t_n, t_a, 0.07)
    for i in range(5):
        cn = torch.cosine_similarity(e[i], t_n, dim=0).item()
        ca = torch.cosine_similarity(e[i], t_a, dim=0).item()
        expected = math.exp(ca / 0.07) / (math.exp(cn / 0.07) + math.exp(ca / 0.07))
        assert out[i].item() == pytest.approx(expected, rel=1e-5)
    assert ((out >= 0) & (out <= 1)).all()


def test_temperature_keeps_image_ranking():
    torch.manual_seed(1)
    e, t_n, t_a = torch.randn(20, 8), torch.randn(8), torch.randn(8)
    assert torch.equal(ascore0(e, t_n, t_a, 0.07).argsort(), ascore0(e, t_n, t_a, 1.0).argsort())


def test_harmonic_fusion_is_the_harmonic_mean():
    a, b, c = torch.tensor([0.2, 0.5]), torch.tensor([0.4, 0.5]), torch.tensor([0.8, 0.5])
    out = harmonic_fusion([a, b, c])
    assert out[0].item() == pytest.approx(3 / (1 / 0.2 + 1 / 0.4 + 1 / 0.8), rel=1e-6)
    assert out[1].item() == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError):
        harmonic_fusion([])


def test_upsample_shape_and_constant():
    maps = torch.full((2, 3, 3), 0.25)
    out = upsample(maps, (17, 31))
    assert out.shape == (2, 17, 31)
    torch.testing.assert_close(out, torch.full((2, 17, 31), 0.25))


def test_gaussian_smooth_keeps_constants_and_mass_location():
    torch.testing.assert_close(gaussian_smooth(torch.full((1, 20, 20), 0.3), 2.0), torch.full((1, 20, 20), 0.3))
    spike = torch.zeros(1, 21, 21)
    spike[0, 10, 10] = 1.0
    out = gaussian_smooth(spike, 1.5)
    assert out[0].argmax().item() == 10 * 21 + 10
    assert out.sum().item() == pytest.approx(1.0, rel=1e-4)


def test_gaussian_smooth_takes_maps_smaller_than_its_kernel():
    """Issue 22: a radius (4σ) wider than the map no longer fails the reflect padding: each axis's kernel is cut
    to the map and renormalised, so constants stay constant and a map the kernel fits is smoothed as before."""
    for shape in ((1, 8, 12), (2, 1, 30), (1, 3, 1)):
        out = gaussian_smooth(torch.full(shape, 0.25), 5.0)
        torch.testing.assert_close(out, torch.full(shape, 0.25))
    wide = torch.rand(1, 40, 40)
    narrow = wide[:, :5, :]
    rows = gaussian_smooth(narrow, 3.0)  # radius 12 over 5 rows: cut to 4 rows, then the columns as before
    assert rows.shape == narrow.shape and torch.isfinite(rows).all()
    fits = gaussian_smooth(wide, 2.0)  # radius 8 < 40: the same numbers as a full reflect-padded blur
    x = torch.arange(-8, 9, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / 2.0) ** 2)
    k = k / k.sum()
    ref = torch.nn.functional.conv2d(
        torch.nn.functional.pad(wide[:, None], (8, 8, 0, 0), mode="reflect"), k.view(1, 1, 1, -1)
    )
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(ref, (0, 0, 8, 8), mode="reflect"), k.view(1, 1, -1, 1))
    torch.testing.assert_close(fits, ref[:, 0])
