import math

import pytest
import torch

from winclip.method.few_shot import ReferenceMemory, few_shot_map, few_shot_score, nearest_distance, vision_map
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


def test_nearest_distance_matches_brute_force_with_chunks():
    torch.manual_seed(2)
    q = torch.randn(3, 7, 16)
    mem = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    out = nearest_distance(q, mem, chunk=8)
    qn = torch.nn.functional.normalize(q, dim=-1)
    expected = torch.empty(3, 7)
    for n in range(3):
        for i in range(7):
            expected[n, i] = min(0.5 * (1 - torch.dot(qn[n, i], mem[r]).item()) for r in range(50))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_reference_memory_pools_every_position_of_every_reference():
    patches, windows = torch.randn(3, 10, 6), {2: torch.randn(3, 4, 5)}
    mem = ReferenceMemory.from_features(patches, windows)
    assert mem.shots == 3 and mem.patches.shape == (30, 6) and mem.windows[2].shape == (12, 5)
    torch.testing.assert_close(mem.patches.norm(dim=-1), torch.ones(30))
    # a query equal to any stored position is at distance 0
    assert nearest_distance(patches[2:3, 7:8], mem.patches).item() == pytest.approx(0.0, abs=1e-6)


def test_vision_map_and_few_shot_score():
    maps = [torch.tensor([[0.0, 0.3]]), torch.tensor([[0.3, 0.3]]), torch.tensor([[0.6, 0.0]])]
    mw = vision_map(maps)
    torch.testing.assert_close(mw, torch.tensor([[0.3, 0.2]]))
    torch.testing.assert_close(few_shot_score(torch.tensor([0.5]), mw), torch.tensor([0.4]))
    assert few_shot_score(torch.tensor([0.5]), mw, "vision").item() == pytest.approx(0.3)
    assert few_shot_score(torch.tensor([0.5]), mw, "zero-shot").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="few-shot score terms"):
        few_shot_score(torch.tensor([0.5]), mw, "max")


def test_few_shot_map_fusions():
    m0, mw = torch.tensor([[0.2, 0.5, 0.0]]), torch.tensor([[0.6, 0.5, 0.4]])
    torch.testing.assert_close(few_shot_map(m0, mw), torch.tensor([[0.4, 0.5, 0.2]]))
    torch.testing.assert_close(few_shot_map(m0, mw, "harmonic"), torch.tensor([[0.3, 0.5, 0.0]]))
    with pytest.raises(ValueError, match="few-shot fusion"):
        few_shot_map(m0, mw, "max")
