"""Few-shot equations (winclip.method.few_shot): Eq. 4-6 against brute force."""

import pytest
import torch

from winclip.method.few_shot import ReferenceMemory, few_shot_map, few_shot_score, nearest_distance, vision_map


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
