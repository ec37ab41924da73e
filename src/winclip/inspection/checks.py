"""Checks of a profile's raw content (profile.json, its tensors, its ROI) before it becomes a `Profile`.

A profile folder may come from another machine, an older winclip, a hand edit or a crash, so
`check_profile` refuses anything that could score wrongly or fail later, with one line naming
the first fault: missing or mistyped fields; a reference count or views that disagree with the
tensors; window tensors that are not the shape the grid and the window scales give
(`W_k = (h − k + 1)(w − k + 1)` windows of k×k patches on the h×w patch grid, docs/method.md §2);
prototypes and reference features of different embedding sizes; non-finite values anywhere;
thresholds outside (0, 1], a review threshold above the threshold, a confidence scale ≤ 0;
an ROI of another size than recorded, or empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import numpy as np

ArrayLike = Any  # a numpy array or a CPU torch tensor: read through np.asarray, so no torch is imported here
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PROTOTYPES = ("prototype.normal", "prototype.anomalous")
REFERENCE = "reference."


class ProfileFormatError(ValueError):
    """A profile folder whose content is inconsistent, out of range or malformed (one line)."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ProfileFormatError(message)


def _finite(x: object) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _field(meta: dict, path: str, check: Callable[[object], bool], what: str, prefix: str = "") -> Any:
    """`meta[a][b]` for path "a.b" (named `prefix` + path in messages), refused unless `check(value)`.

    Returns the JSON value as parsed (Any, like json.loads): `check` is what vouches for its type.
    """
    value: object = meta
    for key in path.split("."):
        if not (isinstance(value, dict) and key in value):
            raise ProfileFormatError(f"{prefix}{path} is missing")
        value = value[key]
    _need(check(value), f"{prefix}{path} must be {what}, got {str(value)[:80]!r}")
    return value


def _strings(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def check_decision(threshold: object, review: object, scale: object) -> None:
    """Thresholds in (0, 1], review in [0, threshold] (or None), confidence scale finite and > 0."""
    if not (_finite(threshold) and 0.0 < threshold <= 1.0):
        raise ProfileFormatError(f"threshold must be in (0, 1], got {threshold}")
    _need(
        review is None or (_finite(review) and 0.0 <= review <= threshold),
        f"review threshold must be in [0, threshold {threshold}] or null, got {review}",
    )
    _need(_finite(scale) and scale > 0, f"confidence scale must be a finite number > 0, got {scale}")


def _check_meta(meta: dict) -> None:
    for key in ("version", "created", "backbone", "weights_id"):
        _field(meta, key, lambda v: isinstance(v, str), "a string")
    _field(meta, "pretrained", lambda v: v is None or isinstance(v, str), "a string or null")
    size = _field(meta, "preprocess.image_size", lambda v: isinstance(v, list) and len(v) == 2, "[height, width]")
    _need(all(isinstance(s, int) and s > 0 for s in size), f"preprocess.image_size must be positive, got {size}")
    _field(meta, "preprocess.mean", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_finite, v)), "3 numbers")
    _field(
        meta,
        "preprocess.std",
        lambda v: isinstance(v, list) and len(v) == 3 and all(_finite(x) and x > 0 for x in v),
        "3 positive numbers",
    )
    _field(meta, "options", lambda v: isinstance(v, dict), "an object")
    _field(meta, "options.scales", lambda v: isinstance(v, list) and all(isinstance(k, int) for k in v), "sizes")
    for key in ("object_name", "object_phrase"):
        _field(meta, f"prompts.{key}", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
    for key in ("normal_states", "anomalous_states", "templates"):
        _field(meta, f"prompts.{key}", lambda v: _strings(v) and len(v) > 0, "a non-empty list of strings")
    refs = _field(meta, "references", lambda v: isinstance(v, list), "a list")
    for i, ref in enumerate(refs):
        _need(isinstance(ref, dict), f"references[{i}] must be an object")
        at = f"references[{i}]."
        _field(ref, "name", lambda v: isinstance(v, str), "a string", at)
        _field(ref, "sha256", lambda v: isinstance(v, str) and bool(SHA256.match(v)), "64 hex digits", at)
        _field(ref, "views", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1", at)
    for key in ("threshold", "review_threshold", "confidence_scale"):
        _need(key in meta, f"{key} is missing")
    check_decision(meta["threshold"], meta["review_threshold"], meta["confidence_scale"])
    _field(meta, "roi", lambda v: v is None or isinstance(v, dict), "an object or null")
    _field(meta, "calibration", lambda v: v is None or isinstance(v, dict), "an object or null")
    if meta.get("model_config") is not None:
        config = _field(meta, "model_config", lambda v: isinstance(v, dict), "an object (a model config)")
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
        _need(not missing, f"model_config lacks {', '.join(missing)}")


def patch_grid(image_size: Sequence[int], patches: int) -> tuple[int, int]:
    """The h×w patch grid with `patches` cells and the input's aspect ratio (ProfileFormatError if none)."""
    height, width = image_size
    h = round(math.sqrt(patches * height / width))
    w = patches // h if h else 0
    _need(h > 0 and h * w == patches, f"{patches} patch tokens do not form a grid of a {height}x{width} input")
    return h, w


def _check_tensor(name: str, tensor: ArrayLike, shape: tuple[int | None, ...]) -> None:
    t = np.asarray(tensor)
    want = "x".join("?" if s is None else str(s) for s in shape)
    ok = t.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, t.shape, strict=True))
    _need(ok, f"tensor {name} has shape {'x'.join(map(str, t.shape)) or 'scalar'}, expected {want}")
    _need(t.dtype == np.float32, f"tensor {name} is {t.dtype}, expected float32")
    _need(bool(np.isfinite(t).all()), f"tensor {name} holds NaN or infinite values")


def _check_tensors(meta: dict, tensors: dict[str, ArrayLike]) -> None:
    refs, scales = meta["references"], meta["options"]["scales"]
    expected = set(PROTOTYPES)
    if refs:
        expected |= {f"{REFERENCE}image", f"{REFERENCE}patches", *(f"{REFERENCE}windows.{k}" for k in scales)}
    for name in sorted(expected - set(tensors)):
        _need(False, f"tensor {name} is missing ({len(refs)} reference(s), window scales {scales})")
    for name in sorted(set(tensors) - expected):
        _need(False, f"unexpected tensor {name} ({len(refs)} reference(s), window scales {scales})")
    normal = np.asarray(tensors[PROTOTYPES[0]])
    _need(normal.ndim == 1, f"tensor {PROTOTYPES[0]} must be one vector, got shape {tuple(normal.shape)}")
    dim = normal.shape[0]
    for name in PROTOTYPES:
        _check_tensor(name, tensors[name], (dim,))
        _need(bool(np.any(np.asarray(tensors[name]) != 0)), f"tensor {name} is all zeros")
    if not refs:
        return
    views = sum(r["views"] for r in refs)
    _check_tensor(f"{REFERENCE}image", tensors[f"{REFERENCE}image"], (views, dim))
    patches = np.asarray(tensors[f"{REFERENCE}patches"])
    _check_tensor(f"{REFERENCE}patches", patches, (views, None, None))
    h, w = patch_grid(meta["preprocess"]["image_size"], patches.shape[1])
    for k in scales:
        _need(1 <= k <= min(h, w), f"window scale {k} does not fit the {h}x{w} patch grid")
        _check_tensor(
            f"{REFERENCE}windows.{k}", tensors[f"{REFERENCE}windows.{k}"], (views, (h - k + 1) * (w - k + 1), dim)
        )


def check_profile(meta: dict, tensors: dict[str, ArrayLike], roi: np.ndarray | None) -> None:
    """ProfileFormatError naming the first inconsistent, non-finite or out-of-range part (module docstring)."""
    _check_meta(meta)
    _check_tensors(meta, tensors)
    spec = meta["roi"]
    if spec is not None:
        height = _field(spec, "height", lambda v: isinstance(v, int) and v > 0, "a positive integer", "roi.")
        width = _field(spec, "width", lambda v: isinstance(v, int) and v > 0, "a positive integer", "roi.")
        _need(roi is not None and roi.shape == (height, width), f"roi.png is not {width}x{height} as recorded")
        assert roi is not None  # refused just above
        _need(bool(roi.any()), "roi.png is empty (no pixel inside)")
