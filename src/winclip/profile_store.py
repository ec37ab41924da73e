"""A profile on disk: one folder with `profile.json`, `tensors.safetensors` and an optional `roi.png`.

Nothing here knows what a profile means (winclip.profile does); this module reads and writes
the three files without pickle. Writes go through a temporary file and a rename.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "winclip-profile"
FORMAT_VERSION = 1
PROFILE_JSON = "profile.json"
TENSORS_FILE = "tensors.safetensors"
ROI_FILE = "roi.png"


class ProfileExistsError(FileExistsError, ValueError):
    """The profile folder exists and overwriting was not asked for."""


def check_writable(folder: Path, *, overwrite: bool) -> None:
    """Raise ProfileExistsError if `folder` exists (unless overwrite) or is not a folder."""
    if folder.exists() and not overwrite:
        raise ProfileExistsError(f"{folder}: already exists; pass overwrite=True (--overwrite) to replace it")
    if folder.exists() and not folder.is_dir():
        raise ProfileExistsError(f"{folder}: exists and is not a profile folder")


def write_folder(
    folder: Path, meta: dict, tensors: dict[str, torch.Tensor], roi: np.ndarray | None, *, overwrite: bool
) -> Path:
    """Write the three files of a profile (`meta` carries FORMAT and FORMAT_VERSION); removes a stale roi.png."""
    check_writable(folder, overwrite=overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    files = {PROFILE_JSON: (json.dumps(meta, indent=2) + "\n").encode()}
    if roi is not None:
        buffer = io.BytesIO()
        Image.fromarray(roi.astype(np.uint8) * 255).save(buffer, format="PNG")
        files[ROI_FILE] = buffer.getvalue()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        save_file(tensors, os.path.join(tmp, TENSORS_FILE), metadata={"format": FORMAT})
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        for name in (TENSORS_FILE, *files):
            os.replace(os.path.join(tmp, name), folder / name)
    if roi is None and (folder / ROI_FILE).exists():
        (folder / ROI_FILE).unlink()
    return folder


def read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor], np.ndarray | None]:
    """profile.json (format checked), the tensors and the ROI (bool `(H, W)` or None) of a profile folder."""
    if not (folder / PROFILE_JSON).is_file():
        raise FileNotFoundError(f"{folder}: not a winclip profile (no {PROFILE_JSON})")
    try:
        meta = json.loads((folder / PROFILE_JSON).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{folder / PROFILE_JSON}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder}: not a {FORMAT} version {FORMAT_VERSION} "
            f"(found {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})"
        )
    if not (folder / TENSORS_FILE).is_file():
        raise FileNotFoundError(f"{folder}: {TENSORS_FILE} is missing")
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{folder}: malformed profile ({TENSORS_FILE}: {type(exc).__name__}: {exc})") from None
    roi = None
    if meta.get("roi") is not None:
        try:
            with Image.open(folder / ROI_FILE) as image:
                roi = np.asarray(image.convert("L")) > 0
        except OSError as exc:
            raise ValueError(f"{folder}: malformed profile ({ROI_FILE}: {exc})") from None
    return meta, tensors, roi
