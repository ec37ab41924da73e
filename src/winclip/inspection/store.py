"""A profile on disk: one folder with `profile.json`, `tensors.safetensors` and an optional `roi.png`.

Nothing here knows what a profile means (winclip.inspection.profile does); this module reads and writes
the three files without pickle, and reads them without torch (tensors come back as numpy arrays), so
`winclip profile show` answers at once.

Saving is atomic for the whole folder: the new version is written into a hidden sibling
`.<name>.tmp-<random>/` (every file fsynced; anything else the old folder holds, such as the
service's `references/`, hard-linked or copied over), then swapped with the old folder in one
`renameat2(RENAME_EXCHANGE)` (Linux; elsewhere two renames) and the old version removed. A
kill at any point leaves the folder either all old or all new; a stale temporary sibling from
a crash is never read and is removed by the next save. Every file is created with the
process's umask (no file gets a stricter mode than another). A profile folder that is a symbolic
link is never written (the swap would replace the link, not what it points to).

Reading opens each file without blocking and refuses anything but a regular file (a FIFO named
`roi.png` cannot hang a reader; winclip.files.open_regular), a link loop included, in one line.
"""

from __future__ import annotations

import ctypes
import errno
import io
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from safetensors import SafetensorError
from safetensors.numpy import load as safetensors_load

if TYPE_CHECKING:
    import torch

from ..files import NotRegularError, read_regular
from ..images import DEFAULT_MAX_PIXELS, ImageError, check_pixels

FORMAT = "winclip-profile"
FORMAT_VERSION = 1
PROFILE_JSON = "profile.json"
TENSORS_FILE = "tensors.safetensors"
ROI_FILE = "roi.png"
OWN_FILES = (PROFILE_JSON, TENSORS_FILE, ROI_FILE)
TEMP_MARK = ".tmp-"  # a save in progress (or a crashed one): `.<name>.tmp-<hex>`
FILE_MODE = 0o666  # before the umask, as open() creates files
AT_FDCWD = -100
RENAME_EXCHANGE = 2  # linux/fs.h


class ProfileExistsError(FileExistsError, ValueError):
    """The profile folder exists and overwriting was not asked for."""


def check_writable(folder: Path, *, overwrite: bool) -> None:
    """Raise ProfileExistsError if `folder` exists (unless overwrite), is not a folder or is a symbolic link."""
    if folder.is_symlink():
        raise ProfileExistsError(f"{folder}: is a symbolic link; give the profile folder itself, not a link to it")
    if folder.exists() and not overwrite:
        raise ProfileExistsError(f"{folder}: already exists; pass overwrite=True (--overwrite) to replace it")
    if folder.exists() and not folder.is_dir():
        raise ProfileExistsError(f"{folder}: exists and is not a profile folder")


def temp_folders(folder: Path) -> list[Path]:
    """The hidden temporary siblings that saves of `folder` leave behind when killed."""
    prefix = f".{folder.name}{TEMP_MARK}"
    if not folder.parent.is_dir():
        return []
    return sorted(p for p in folder.parent.iterdir() if p.name.startswith(prefix))


def _write_synced(path: Path, data: bytes) -> None:
    """Create `path` (umask applies, as for every file here), write `data`, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy) everything of `old` but the profile's own files into `new`."""
    for entry in old.iterdir():
        if entry.name in OWN_FILES:
            continue
        target = new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        elif entry.is_dir():
            target.mkdir()
            _carry_over(entry, target)
        else:
            try:
                os.link(entry, target)
            except OSError:
                shutil.copy2(entry, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    if rename(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, folder: Path) -> None:
    """Make `tmp` the folder `folder`, removing the old version."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    if _exchange(tmp, folder):
        shutil.rmtree(tmp)  # now the old version
        return
    old = folder.parent / f".{folder.name}{TEMP_MARK}old-{secrets.token_hex(4)}"
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old)


def profile_files(meta: dict, tensors: dict[str, torch.Tensor], roi: np.ndarray | None) -> dict[str, bytes]:
    """The bytes of each file of a profile folder."""
    from safetensors.torch import save as safetensors_bytes

    files = {
        TENSORS_FILE: safetensors_bytes(tensors, metadata={"format": FORMAT}),
        PROFILE_JSON: (json.dumps(meta, indent=2) + "\n").encode(),
    }
    if roi is not None:
        buffer = io.BytesIO()
        Image.fromarray(roi.astype(np.uint8) * 255).save(buffer, format="PNG")
        files[ROI_FILE] = buffer.getvalue()
    return files


def write_folder(
    folder: Path, meta: dict, tensors: dict[str, torch.Tensor], roi: np.ndarray | None, *, overwrite: bool
) -> Path:
    """Write a profile folder atomically (module docstring); `meta` carries FORMAT and FORMAT_VERSION."""
    check_writable(folder, overwrite=overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in temp_folders(folder):
        shutil.rmtree(stale, ignore_errors=True)
    files = profile_files(meta, tensors, roi)
    tmp = folder.parent / f".{folder.name}{TEMP_MARK}{secrets.token_hex(4)}"
    os.mkdir(tmp)
    try:
        for name, data in files.items():
            _write_synced(tmp / name, data)
        if folder.exists():
            _carry_over(folder, tmp)
        _fsync_dir(tmp)
        _swap_in(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _read(folder: Path, name: str) -> bytes:
    """The bytes of one file of a profile folder; ValueError in one line for a FIFO, device, loop or read error."""
    try:
        return read_regular(folder / name)
    except NotRegularError as exc:
        raise ValueError(f"{folder}: malformed profile ({name}: {str(exc).rpartition(': ')[2]})") from None
    except OSError as exc:
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise ValueError(f"{folder}: malformed profile ({name}: {reason})") from None


def read_folder(folder: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray | None]:
    """profile.json (format checked), the tensors (numpy) and the ROI (bool `(H, W)` or None) of a profile folder."""
    if not os.path.lexists(folder / PROFILE_JSON):
        raise FileNotFoundError(f"{folder}: not a winclip profile (no {PROFILE_JSON})")
    try:
        meta = json.loads(_read(folder, PROFILE_JSON))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{folder / PROFILE_JSON}: invalid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder}: not a {FORMAT} version {FORMAT_VERSION} "
            f"(found {meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r})"
        )
    if not os.path.lexists(folder / TENSORS_FILE):
        raise FileNotFoundError(f"{folder}: {TENSORS_FILE} is missing")
    data = _read(folder, TENSORS_FILE)  # a FIFO, device or loop: one line already
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise ValueError(f"{folder}: malformed profile ({TENSORS_FILE}: {type(exc).__name__}: {exc})") from None
    roi = None
    if meta.get("roi") is not None:
        try:
            with Image.open(io.BytesIO(_read(folder, ROI_FILE))) as image:
                check_pixels(image, ROI_FILE, DEFAULT_MAX_PIXELS)  # from the header, before decoding
                roi = np.asarray(image.convert("L")) > 0
        except (OSError, ImageError, Image.DecompressionBombError) as exc:
            raise ValueError(f"{folder}: malformed profile ({ROI_FILE}: {exc})") from None
    return meta, tensors, roi
