"""The Scorer (winclip.method.scorer) against independent computations: one-class prompts, the few-shot choices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import make_model, textured
from winclip.method.few_shot import nearest_distance
from winclip.method.windows import coverage_matrix
from winclip.method.zero_shot import aggregate_windows, harmonic_fusion


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
