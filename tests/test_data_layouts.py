"""Several masks per image: Sample.masks and their union in load_mask (winclip.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from winclip.data import DatasetError, Sample, load_mask


def test_sample_masks_accept_one_path_none_or_several() -> None:
    one = Sample(Path("a.png"), 1, "crack", Path("a_mask.png"))
    assert one.masks == (Path("a_mask.png"),) and one.mask == Path("a_mask.png")
    good = Sample(Path("b.png"), 0, "good")
    assert good.masks == () and good.mask is None
    assert Sample(Path("b.png"), 0, "good", None) == good
    several = Sample(Path("c.png"), 1, "logical", [Path("c/000.png"), "c/001.png"])
    assert several.masks == (Path("c/000.png"), Path("c/001.png")) and several.mask == Path("c/000.png")
    assert hash(several) == hash(Sample(Path("c.png"), 1, "logical", (Path("c/000.png"), Path("c/001.png"))))


def test_load_mask_unites_masks_and_names_the_one_of_another_size(tmp_path: Path) -> None:
    first, second = np.zeros((4, 6), dtype=np.uint8), np.zeros((4, 6), dtype=np.uint8)
    first[0, :3], second[0, 2:4], second[3, 5] = 3, 200, 1
    Image.fromarray(first).save(tmp_path / "000.png")
    Image.fromarray(second).save(tmp_path / "001.png")
    masks = (tmp_path / "000.png", tmp_path / "001.png")
    expected = np.zeros((4, 6), dtype=bool)
    expected[0, :4] = expected[3, 5] = True
    np.testing.assert_array_equal(load_mask(masks, (4, 6)), expected)
    np.testing.assert_array_equal(load_mask(masks[1], (4, 6)), second != 0)
    assert not load_mask((), (4, 6)).any()
    Image.fromarray(second[:, :5]).save(tmp_path / "001.png")
    with pytest.raises(DatasetError, match=r"001.png: mask is 5x4 but 6x4 was expected \(WxH\)"):
        load_mask(masks, (4, 6))
