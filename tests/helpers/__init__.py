"""What the tests share: the tiny random-weight test ViT (64 px, 8 px patches → an 8×8 grid) and textured images.

Fixtures are in tests/conftest.py; everything here is plain functions, imported as `from helpers import ...`.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

import winclip

TINY = str(Path(__file__).resolve().parent.parent / "tiny-vit.json")


def load_tiny(**loading) -> winclip.Backbone:
    """A freshly loaded tiny backbone with random (seeded) weights on the CPU (`loading`: precision, fused)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        return winclip.Backbone(TINY, None, device="cpu", **loading)


@cache
def shared_tiny(precision: str = "auto") -> winclip.Backbone:
    """One tiny backbone per precision for the whole session: for tests that only read it."""
    return load_tiny(precision=precision)


def make_model(**options) -> winclip.WinCLIP:
    """A fresh tiny model (its own backbone: tests may change or count what it does) with the given options."""
    loading = {k: options.pop(k) for k in ("precision",) if k in options}
    return winclip.WinCLIP(load_tiny(**loading), **options)


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB uint8 image."""
    small = rng.random((max(2, h // 8), max(2, w // 8), 3))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img).copy()


def without_torch(*argv: str, status: int = 0) -> str:
    """Run `winclip ARGV` in a fresh process; its stdout, asserting it ended with `status` without importing torch."""
    code = (
        "import sys; from winclip.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as done:\n    code = done.code\n"
        "print('imported:', sorted({'torch', 'open_clip'} & set(sys.modules)), 'status:', code)"
    )
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    end = f"imported: [] status: {status}"
    assert run.stdout.rstrip().endswith(end), (argv, run.stdout[-500:], run.stderr[-2000:])
    return run.stdout.rstrip()[: -len(end)]
