"""Independent computations of features and fidelity, shared by the tower, precision and CUDA tests."""

from __future__ import annotations

import torch
from scipy.stats import spearmanr

import winclip
from winclip.method.windows import window_indices


def reference_features(visual: torch.nn.Module, x: torch.Tensor, scales=(2, 3)) -> winclip.Features:
    """Features through open_clip's own modules: encode_image, output tokens and one window at a time."""
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    seq = visual.conv1(x).flatten(2).transpose(1, 2) + visual.positional_embedding[1:]
    cls = visual.class_embedding + visual.positional_embedding[0]
    windows = {}
    for k in scales:
        idx = window_indices(tuple(visual.grid_size), k)
        per_window = []
        for w in idx:  # one window of every image per forward, through ln_pre → open_clip's blocks → ln_post
            s = torch.cat([cls.expand(len(x), 1, -1), seq[:, w]], dim=1)
            per_window.append(visual.ln_post(visual.transformer(visual.ln_pre(s)))[:, 0] @ visual.proj)
        windows[k] = torch.stack(per_window, dim=1)
    return winclip.Features(pooled, windows, tokens)


def max_abs_diff(a: winclip.Features, b: winclip.Features) -> float:
    diffs = [(a.image - b.image).abs().max(), (a.patches - b.patches).abs().max()]
    diffs += [(a.windows[k] - b.windows[k]).abs().max() for k in b.windows]
    assert len(diffs) == 2 + len(b.windows)
    return max(d.item() for d in diffs)


def fidelity(model: winclip.WinCLIP, reference: winclip.WinCLIP, images: list) -> tuple[float, float]:
    """(Spearman of image scores, max relative map difference) of `model` against `reference`."""
    a, b = reference.predict(images), model.predict(images)
    rho = spearmanr(a.scores.numpy(), b.scores.numpy()).statistic
    rel = max(((m - r).abs().max() / r.abs().max()).item() for m, r in zip(b.maps, a.maps, strict=True))
    return float(rho), rel
