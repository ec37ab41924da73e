"""Pictures of a result (winclip.inspection.render): the fixed colour scale anchored at the threshold."""

from __future__ import annotations

import numpy as np

from winclip.inspection.render import colorize, scale_values


def test_colour_scale_is_fixed_and_anchored_at_the_threshold():
    m = np.array([[0.0, 0.15, 0.3, 0.65, 1.0]], np.float32)
    np.testing.assert_allclose(scale_values(m, 0.3), [[0.0, 0.25, 0.5, 0.75, 1.0]], atol=1e-7)
    colours = colorize(m, 0.3)
    assert tuple(colours[0, 2]) == (255, 230, 0) and tuple(colours[0, 4]) == (200, 0, 0)
    low = np.full((4, 4), 0.1, np.float32)
    low[0, 0] = 0.12  # a normal image with tiny variation is not stretched to the full scale
    assert (colorize(low, 0.3)[..., 2] > colorize(low, 0.3)[..., 0]).all()  # blue everywhere
