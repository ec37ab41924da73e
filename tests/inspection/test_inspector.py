"""Running images through a profile (winclip.inspection.inspector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_model, textured
from winclip.inspection.inspector import Inspector
from winclip.inspection.profile import Profile


def _save_images(folder: Path, rng: np.random.Generator, n: int, size=(64, 64)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(textured(rng, *size)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def images(tmp_path, rng):
    return {
        "refs": _save_images(tmp_path / "refs", rng, 2),
        "queries": _save_images(tmp_path / "queries", rng, 3, size=(48, 80)),
        "holdout": _save_images(tmp_path / "holdout", rng, 5),
    }


def test_inspectors_sharing_a_model_rebind_their_own_profile(images):
    model = make_model()
    few = Inspector(Profile.create(model, "screw", images["refs"]), model)
    zero = Inspector(Profile.create(model, "bottle"), model)
    a = few.inspect(images["queries"][:1])[0]
    b = zero.inspect(images["queries"][:1])[0]
    fitted = make_model().set_object("screw").fit(images["refs"])
    assert a.score == pytest.approx(float(fitted.predict(images["queries"][:1]).scores[0]), abs=1e-6)
    assert b.score == pytest.approx(b.zero_shot) and b.zero_shot != pytest.approx(a.zero_shot)
    assert few.inspect(images["queries"][:1])[0].score == pytest.approx(a.score, abs=1e-7)
