"""Issue 22: every numeric method option has one stated range, in `MethodOptions`; anything else is refused."""

from __future__ import annotations

import math

import pytest

import winclip.options as options
from winclip.options import MethodOptions


def test_every_numeric_option_has_a_range():
    numeric = {"temperature", "tile_overlap", "smooth_sigma", "scales", "vision_scales"}
    assert numeric <= set(options.OPTION_RANGES)
    assert MethodOptions() == MethodOptions(**{})  # the defaults are inside their ranges


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", math.nan), ("temperature", math.inf), ("temperature", 0.0), ("temperature", -1.0),
     ("temperature", 1e9), ("smooth_sigma", math.nan), ("smooth_sigma", math.inf), ("smooth_sigma", 1e6),
     ("smooth_sigma", -0.5), ("tile_overlap", math.nan), ("tile_overlap", 1.0), ("tile_overlap", -math.inf),
     ("scales", (0, 2)), ("scales", (2, 10_000)), ("scales", (2, 2)), ("vision_scales", (5,)),
     ("temperature", "0.07"), ("smooth_sigma", True), ("scales", (2.5,)), ("scales", "23"),
     ("temperature", 10**400), ("scales", (2, 10**400))],  # integers beyond any float: JSON allows them
)  # fmt: skip
def test_out_of_range_or_non_finite_options_are_refused_naming_the_option(field, value):
    with pytest.raises(ValueError, match=field) as err:
        MethodOptions(**{field: value})
    assert "\n" not in str(err.value)


def test_the_edges_of_the_ranges_are_accepted():
    low, high = options.OPTION_RANGES["smooth_sigma"][:2]
    assert MethodOptions(smooth_sigma=low).smooth_sigma == low
    assert MethodOptions(smooth_sigma=high).smooth_sigma == high
    assert (
        MethodOptions(temperature=options.OPTION_RANGES["temperature"][1]).temperature
        == options.OPTION_RANGES["temperature"][1]
    )
    assert MethodOptions(scales=(1, 2, 3), vision_scales=(1,)).scales == (1, 2, 3)
    assert MethodOptions(temperature=1).temperature == 1.0 and isinstance(
        MethodOptions(temperature=1).temperature, float
    )
