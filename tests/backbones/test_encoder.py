"""What every backbone shares (winclip.backbones.encoder): preprocessing."""

import pytest
from PIL import Image

from winclip.backbones.openclip import Preprocess


def test_preprocess_resizes_and_normalises():
    img = Image.new("RGB", (50, 30), (255, 0, 128))
    x = Preprocess((16, 24), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(img)
    assert x.shape == (3, 16, 24)
    assert x[0].mean().item() == pytest.approx(2.0)
    assert x[1].mean().item() == pytest.approx(-2.0)
