"""Profile names, checked in one place for the API, the start-up scan and `winclip profile create`; file names.

A profile is a folder of the profiles folder, named by its profile: 1-64 letters, digits, `_ . -`,
starting with a letter or digit (so never a dot-name, which the station's temporary folders and
locks use), without `..`. Names that are, or could become, the station's own files are reserved,
compared case-insensitively (some file systems are): the record (`inspections.sqlite` and the
journals SQLite puts beside it: `-journal`, `-wal`, `-shm`, `-mj...`), the default keep folder
(`kept`), and any other name the configuration puts in the profiles folder (a `--db` file or a
`--keep-dir` there). A profile given such a name could keep the station from ever starting again.

Files the station writes from uploads are named by `safe_filename` (never hidden, `[A-Za-z0-9_.-]`
only) with the extension of the decoded format (`reference_filename`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ..images import IMAGE_FORMATS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DATABASE_FILE = "inspections.sqlite"  # the record's default file, in the profiles folder
KEEP_FOLDER = "kept"  # the default folder of photos kept for audit, in the profiles folder
FILENAME_LIMIT = 80  # characters kept of an uploaded file name on disk
MEDIA_TYPES = dict(IMAGE_FORMATS.values())  # file extension → media type of the stored references


def reserved(name: str, others: Iterable[str] = ()) -> bool:
    """True when `name` is, case-insensitively, one of the station's own files, or a file SQLite would put beside
    one (`<file>-journal`, `-wal`, ...): the record, the keep folder and `others` (module docstring)."""
    folded = name.casefold()
    for own in (DATABASE_FILE, KEEP_FOLDER, *others):
        own = own.casefold()
        if folded == own or folded.startswith(f"{own}-"):
            return True
    return False


def check_name(name: str, others: Iterable[str] = ()) -> str:
    """The profile name if valid and not reserved, else ValueError in one line (module docstring)."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid profile name {name[:80]!r}: use 1-64 letters, digits, '_', '.', '-', starting with a letter "
            "or digit, without '..'"
        )
    if reserved(name, others):
        raise ValueError(f"profile name {name!r} is reserved: the station keeps its own files under that name")
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
