"""Names the station accepts from clients: profile names, and uploaded file names made safe for its disk."""

from __future__ import annotations

import re
from pathlib import Path

from ..images import IMAGE_FORMATS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FILENAME_LIMIT = 80  # characters kept of an uploaded file name on disk
MEDIA_TYPES = dict(IMAGE_FORMATS.values())  # file extension → media type of the stored references


def check_name(name: str) -> str:
    """The profile name if valid, else ValueError: letters, digits, `_ . -`, at most 64, no `..`."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid profile name {name[:80]!r}: use 1-64 letters, digits, '_', '.', '-', starting with a letter "
            "or digit, without '..'"
        )
    return name


def safe_filename(filename: str) -> str:
    """A file name reduced to `[A-Za-z0-9_.-]`, at most FILENAME_LIMIT characters, never hidden or empty."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(filename.replace("\\", "/")).name)[-FILENAME_LIMIT:].lstrip(".")
    return base or "image"


def reference_filename(index: int, filename: str, extension: str) -> str:
    """`<index>_<stem of the upload's name><extension of the decoded format>`: the upload never picks the type."""
    if extension not in MEDIA_TYPES:
        raise ValueError(f"{extension!r} is not the extension of an accepted image format")
    return f"{index:03d}_{Path(safe_filename(filename)).stem or 'image'}{extension}"
