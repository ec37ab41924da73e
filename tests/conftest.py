"""Shared fixtures: a tiny random-weight open_clip ViT (64 px, 8 px patches → 8×8 grid), offline."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

import winclip

TINY = str(Path(__file__).with_name("tiny-vit.json"))


def make_model(**options) -> winclip.WinCLIP:
    """A fresh tiny model with random (seeded) weights on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        return winclip.WinCLIP(TINY, None, device="cpu", **options)


@pytest.fixture
def model() -> winclip.WinCLIP:
    return make_model().set_object("bottle")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB uint8 image."""
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    from PIL import Image

    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img).copy()
