"""Small file utilities shared by the whole package: atomic writes, content digests, safe reads and writes.

Writing into a folder a user names (`--out`): `write_new` and `open_new` walk the relative path one
folder at a time from a descriptor of the root, each opened with `O_NOFOLLOW`, so a symbolic link
anywhere on the path (the root included) is a `LinkError` (one line) and nothing is ever written
through it. Files are created exclusively (`O_EXCL`); `replace=True` writes an exclusive temporary
sibling and renames it over the target (a rename replaces the entry itself, never what a link points
to; a link at the target is refused all the same), so a picture is never half-written either.

Reading what may come from someone else's folder: `open_regular` opens without blocking
(`O_NONBLOCK`, so a FIFO cannot hang the reader) and refuses anything but a regular file (FIFO,
device, socket, folder) before a byte is read (`NotRegularError`, one line).

Searching a folder: `walk` follows linked folders, each real folder once; a link that leads back into
one of its own ancestors is reported as a loop instead of being entered.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o666  # before the umask, as open() creates files


class LinkError(ValueError):
    """A symbolic link where winclip writes (or removes) files (one line)."""


class NotRegularError(ValueError):
    """A path that must be a regular file is a FIFO, device, socket or folder (one line)."""


def digest(obj: object) -> str:
    """sha256 hex of an object's canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file then rename, so an interrupted write leaves nothing half-done.

    The temporary file is created first, exclusively, under an unguessable name (never a link planted there), and
    the rename replaces whatever `path` is, a link included, rather than writing through it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, CREATE_FLAGS | os.O_EXCL, FILE_MODE))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(path: str | Path, data: bytes) -> None:
    """Write `path` whole, replacing a regular file there by a rename, never through a link (its folder or the file
    itself a link: LinkError); write_new with `replace`."""
    path = Path(path)
    write_new(path.parent, path.name, data, replace=True)


def kind(mode: int) -> str:
    """What a file mode says a path is, for messages."""
    for test, name in ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a regular file"


def open_regular(path: str | Path) -> IO[bytes]:
    """Open a file for reading without ever blocking on it; NotRegularError unless it is a regular file.

    Symbolic links are followed (a loop is an OSError with errno ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularError(f"{path}: {kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path) -> bytes:
    """The bytes of a regular file (open_regular)."""
    with open_regular(path) as f:
        return f.read()


def _parts(rel: str | PurePosixPath) -> tuple[str, ...]:
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] == "/" or any(p in ("..", ".") for p in parts):
        raise ValueError(f"{str(rel)!r} is not a relative path inside the output folder")
    return parts


def _refused(root: Path, parts: tuple[str, ...], exc: OSError) -> Exception:
    """The error to raise for a failed open of root/parts: LinkError when the entry is a link, else `exc`."""
    path = root.joinpath(*parts)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST) and path.is_symlink():
        return LinkError(
            f"{path}: is a symbolic link; winclip never writes through links in an output folder: remove it"
        )
    return exc


def _parent(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder that holds root/parts, creating folders on the way; none of them may be a link."""
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise _refused(root, (), exc) from None
    for i, part in enumerate(parts[:-1]):
        try:
            os.mkdir(part, dir_fd=fd)
        except FileExistsError:
            pass
        except OSError:
            os.close(fd)
            raise
        try:
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise _refused(root, parts[: i + 1], exc) from None
        finally:
            os.close(fd)
        fd = inner
    return fd


def write_new(root: str | Path, rel: str, data: bytes, *, replace: bool = False) -> None:
    """Create root/rel (folders on the way) holding `data`, never through a link (module docstring).

    FileExistsError when it exists, unless `replace`: then a regular file there is replaced by a rename."""
    root, parts = Path(root), _parts(rel)
    fd = _parent(root, parts)
    name = parts[-1]
    target = name
    try:
        if replace:
            try:
                if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _refused(root, parts, OSError(errno.ELOOP, "link"))
            except FileNotFoundError:
                pass
            target = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            out = os.open(target, CREATE_FLAGS | os.O_EXCL, FILE_MODE, dir_fd=fd)
        except OSError as exc:
            raise _refused(root, parts, exc) from None
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
            if replace:
                os.replace(target, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            if replace:
                os.unlink(target, dir_fd=fd)
            raise
    finally:
        os.close(fd)


def open_new(root: str | Path, rel: str, mode: str, *, newline: str | None = None) -> IO[str]:
    """Open root/rel as text to write ("w": truncated) or append ("a"), never through a link and never blocking
    on a FIFO (NotRegularError unless a regular file); folders on the way are created."""
    root, parts = Path(root), _parts(rel)
    flags = CREATE_FLAGS | os.O_NONBLOCK | {"w": os.O_TRUNC, "a": os.O_APPEND}[mode]
    fd = _parent(root, parts)
    try:
        out = os.open(parts[-1], flags, FILE_MODE, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise NotRegularError(f"{root.joinpath(*parts)}: a pipe, not a regular file") from None
        raise _refused(root, parts, exc) from None
    finally:
        os.close(fd)
    try:
        file_mode = os.fstat(out).st_mode
        if not stat.S_ISREG(file_mode):
            raise NotRegularError(f"{root.joinpath(*parts)}: {kind(file_mode)}, not a regular file")
        os.set_blocking(out, True)
        return os.fdopen(out, mode, encoding="utf-8", newline=newline)
    except BaseException:
        os.close(out)
        raise


def check_no_links(root: str | Path, rel: str) -> None:
    """LinkError when root/rel, or a folder on the way from root, is a symbolic link."""
    root, parts = Path(root), _parts(rel)
    for i in range(len(parts) + 1):
        path = root.joinpath(*parts[:i])
        if path.is_symlink():
            raise LinkError(f"{path}: is a symbolic link; winclip never removes or writes through links in an output "
                            "folder: remove it")  # fmt: skip


def walk(top: str | Path) -> Iterator[tuple[Path, str | None]]:
    """(path, None) for every entry under `top`, sorted by name folder by folder, following linked folders (each
    real folder searched once; hidden folders not entered); (path, why) for a linked folder that leads back to a
    folder above it, or a folder that cannot be read, instead of entering it."""

    def visit(folder: Path, above: frozenset[tuple[int, int]]) -> Iterator[tuple[Path, str | None]]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield folder, f"cannot read the folder ({exc.strerror or exc})"
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                info = path.stat() if entry.is_dir() else None
            except OSError:
                info = None  # a link that went away meanwhile: an ordinary entry
            if info is None:
                yield path, None
                continue
            here = (info.st_dev, info.st_ino)
            if here in above:
                yield path, "symbolic link loop (it leads back to a folder above it)"
            elif here not in seen and not entry.name.startswith("."):
                seen.add(here)
                yield path, None
                yield from visit(path, above | {here})

    info = Path(top).stat()
    seen = {(info.st_dev, info.st_ino)}
    yield from visit(Path(top), frozenset(seen))
