import pytest
import torch

from winclip.method.windows import coverage_matrix, window_indices
from winclip.method.zero_shot import aggregate_windows


def test_window_counts_for_the_default_grid():
    assert window_indices((15, 15), 2).shape == (196, 4)
    assert window_indices((15, 15), 3).shape == (169, 9)


def test_window_indices_are_row_major_squares():
    idx = window_indices((4, 5), 2)
    assert idx.shape == (12, 4)
    assert idx[0].tolist() == [0, 1, 5, 6]
    assert idx[-1].tolist() == [13, 14, 18, 19]
    assert torch.equal(
        window_indices((4, 5), 4)[0], torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18])
    )
    assert torch.equal(window_indices((3, 3), 3)[0], torch.arange(9))


def test_coverage_counts_match_window_geometry():
    cov = coverage_matrix((5, 5), 3)
    assert cov.shape == (25, 9)
    counts = cov.sum(1).view(5, 5)
    expected = torch.tensor([1.0, 2, 3, 2, 1])
    assert torch.equal(counts, expected[:, None] * expected[None, :])
    assert torch.equal(cov.sum(0), torch.full((9,), 9.0))


def test_harmonic_aggregation_matches_the_formula_by_hand():
    grid, k = (3, 4), 2
    scores = torch.rand(2, 6) * 0.9 + 0.05
    idx = window_indices(grid, k)
    out = aggregate_windows(scores, coverage_matrix(grid, k))
    expected = torch.zeros(2, 12)
    for n in range(2):
        for j in range(12):
            covering = [w for w in range(idx.shape[0]) if j in idx[w].tolist()]
            assert covering, "every patch is covered by some window"
            expected[n, j] = len(covering) / sum(1.0 / scores[n, w] for w in covering)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    # corner patch 0 is covered only by window 0; patch 5 (row 1, col 1) by windows 0, 1, 3, 4
    assert out[0, 0] == pytest.approx(scores[0, 0].item(), rel=1e-6)
    s = scores[1, [0, 1, 3, 4]]
    assert out[1, 5] == pytest.approx((4 / (1 / s).sum()).item(), rel=1e-6)


def test_mean_aggregation_and_zero_scores():
    cov = coverage_matrix((3, 3), 2)
    scores = torch.tensor([[0.2, 0.4, 0.6, 0.8]])
    assert aggregate_windows(scores, cov, "mean")[0, 4].item() == pytest.approx(0.5)
    zero = aggregate_windows(torch.zeros(1, 4), cov)
    assert zero.shape == (1, 9) and zero.max().item() < 1e-30  # zero scores give (numerically) zero patches
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_windows(scores, cov, "max")


def test_window_larger_than_grid_is_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        window_indices((2, 2), 3)
