"""Decision rules (winclip.inspection.decisions): labels, confidence, regions, ROI."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage

from winclip.inspection.decisions import apply_roi, confidence, find_regions, label_of


def test_labels_and_confidence():
    assert confidence(0.3, 0.3, 0.05) == 0.5
    xs = np.linspace(0, 1, 201)
    cs = [confidence(x, 0.3, 0.05) for x in xs]
    assert len(cs) == 201 and all(a < b for a, b in pairwise(cs) if 0 < a < 1 and 0 < b < 1)
    assert all(a <= b for a, b in pairwise(cs))
    assert confidence(0.4, 0.3, 0.05) == pytest.approx(1 / (1 + math.exp(-2)))
    assert [label_of(s, 0.5, 0.4) for s in (0.39, 0.4, 0.49, 0.5)] == ["normal", "review", "review", "anomalous"]
    assert label_of(0.45, 0.5) == "normal"


def test_regions_are_the_8_connected_components(rng):
    score_map = rng.random((40, 60)).astype(np.float32) ** 4
    regions = find_regions(score_map, 0.6)
    labels, n = ndimage.label(score_map >= 0.6, structure=[[1, 1, 1]] * 3)
    assert n > 3 and len(regions) == n
    expected = set()
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        expected.add((*map(int, box), len(xs), float(score_map[labels == i].max())))
    assert {(r.x, r.y, r.width, r.height, r.area, r.peak) for r in regions} == expected
    big = find_regions(score_map, 0.6, min_area=3)
    assert 0 < len(big) < len(regions)  # the filter drops some regions and keeps others
    assert [r for r in regions if r.area >= 3] == sorted(big, key=lambda r: -r.peak) == list(big)


def test_roi_definition():
    m = np.zeros((10, 10), np.float32)
    m[1, 1], m[8, 8] = 0.9, 0.3
    roi = np.zeros((5, 5), bool)
    roi[3:, 3:] = True  # bottom-right quarter, resized to 10x10 with nearest neighbour
    score, masked = apply_roi(0.6, m, roi)
    assert score == pytest.approx(0.6 * 0.3 / 0.9) and masked[1, 1] == 0 and masked[8, 8] == np.float32(0.3)
    assert apply_roi(0.6, m, np.ones((3, 3), bool))[0] == 0.6
    assert apply_roi(0.6, m, None)[0] == 0.6
