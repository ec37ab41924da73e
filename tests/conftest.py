"""Shared fixtures: the tiny random-weight test ViT, shared for the session where tests only read it; offline."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
# winclip's cache (the kernel choice, winclip.backbones.kernels) goes to a folder of the test session, not ~/.cache
os.environ["WINCLIP_CACHE"] = tempfile.mkdtemp(prefix="winclip-test-cache-")
atexit.register(shutil.rmtree, os.environ["WINCLIP_CACHE"], True)
# one kernel for every fp32 product in every process (Ray workers included): results compared across processes stay
# equal to 1e-6; tests/backbones/test_kernels.py unsets it to test the measured choice
os.environ["WINCLIP_KERNELS"] = "onednn"

import winclip  # noqa: E402
from helpers import shared_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_backbone() -> winclip.Backbone:
    """The session's tiny backbone: load it once; tests must not change it (use helpers.make_model for that)."""
    return shared_tiny()


@pytest.fixture
def model(tiny_backbone: winclip.Backbone) -> winclip.WinCLIP:
    """A fresh WinCLIP ("bottle") on the session's backbone: its options and fitted state are the test's own."""
    return winclip.WinCLIP(tiny_backbone).set_object("bottle")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
