"""Small file utilities shared by the whole package: atomic writes and content digests."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def digest(obj: object) -> str:
    """sha256 hex of an object's canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file then rename, so an interrupted write leaves nothing half-done."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
