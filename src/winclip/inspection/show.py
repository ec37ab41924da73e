"""A profile folder read and described without torch: what `winclip profile show` prints, and a profile's digest.

`Profile.load` reads through `read_checked`, and `Profile.summary` and `Profile.digest` call
`summary` and `content_digest` on a loaded profile's content, so `show` and a loaded profile say
the same thing. Only JSON, numpy arrays (safetensors) and the ROI's PNG are read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..options import MethodOptions
from ..progress import plural
from .calibration import Calibration
from .checks import ProfileFormatError, check_profile
from .evidence import Evidence
from .store import read_folder


def read_checked(folder: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray | None]:
    """A profile folder's JSON, tensors (numpy) and ROI, checked (winclip.inspection.checks); one-line ValueError
    naming the folder and the first fault."""
    meta, tensors, roi = read_folder(folder)
    try:
        check_profile(meta, tensors, roi)
        MethodOptions(**meta["options"])  # every option in its one range (options.OPTION_RANGES)
    except (KeyError, TypeError, ValueError) as exc:
        detail = str(exc) if isinstance(exc, ProfileFormatError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{folder}: malformed profile ({detail})") from None
    return meta, tensors, roi


def content_digest(meta: dict, arrays: dict[str, np.ndarray], roi: np.ndarray | None) -> str:
    """`sha256:<hex>` of a profile's content: its JSON but the creation time, its float32 tensors by name, its ROI."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "created"}, sort_keys=True).encode())
    for name, t in sorted(arrays.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(t, dtype=np.float32).tobytes())
    if roi is not None:
        h.update(np.packbits(roi).tobytes())
    return f"sha256:{h.hexdigest()}"


def summary(meta: dict, arrays: dict[str, np.ndarray], roi: np.ndarray | None) -> str:
    """A few lines describing a profile's content (checked)."""
    p, refs = meta["prompts"], meta["references"]
    names = "".join(f"\n  {r['name']}  sha256:{r['sha256'][:16]}..." for r in refs)
    inside = "none" if roi is None else f"{roi.shape[1]}x{roi.shape[0]}, {roi.mean():.1%} inside"
    review = "" if meta["review_threshold"] is None else f", review from {meta['review_threshold']:.6f}"
    stored = "; model config stored in the profile" if meta.get("model_config") is not None else ""
    cal, evidence = meta["calibration"], meta.get("evidence")
    lines = [
        f"object: {p['object_name']!r} (phrase {p['object_phrase']!r}); {len(p['normal_states'])} normal and "
        f"{len(p['anomalous_states'])} anomalous states x {len(p['templates'])} templates",
        f"model: {meta['backbone']}, pretrained {meta['pretrained'] or 'none (random weights)'}, "
        f"weights {meta['weights_id']}{stored}",
        f"options: {MethodOptions(**meta['options'])}",
        f"references: {plural(len(refs), 'image')}, {plural(sum(r['views'] for r in refs), 'view')}{names}",
        f"roi: {inside}",
        f"threshold: {meta['threshold']:.6f}{review}; confidence scale {meta['confidence_scale']:.6g}",
        f"made with winclip {meta['version']} on {meta['created'] or 'unknown date'}; "
        f"digest {content_digest(meta, arrays, roi)}",
        Calibration.from_json(cal).report() if cal else "calibration: none (run `winclip profile calibrate`)",
        Evidence.from_json(evidence).table() if evidence else "precision evidence: none (auto runs fp32)",
    ]
    return "\n".join(lines)


def show(folder: str | Path) -> str:
    """What `winclip profile show` prints for a profile folder."""
    return summary(*read_checked(Path(folder)))
