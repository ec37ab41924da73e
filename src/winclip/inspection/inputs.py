"""Inputs of a run, found and checked without torch: files, folders (recursed) and globs → `InputImage`s.

`discover` expands the arguments (hidden entries skipped; linked folders searched, each real folder
once, one that leads back above itself an error row: winclip.files.walk; two inputs that would write
outputs of the same name refused); `image_files` checks file arguments before any model loads (a missing,
unreadable or non-image file is one line, at once); `check_out_not_inside` refuses an output
folder inside an input folder (a resumed run would read its own overlays as photos).
`winclip_output` tells a picture winclip wrote (its PNG text chunk, written by
winclip.inspection.render), which may not become a good reference.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from ..files import walk
from ..images import IMAGE_EXTENSIONS, ImageError, image_size

OUTPUT_KEY = "winclip-output"  # PNG text chunk of every picture winclip writes: overlay, mask, composite


@dataclass(frozen=True)
class InputImage:
    """One input file and where its outputs go: `rel` is its relative output path without suffix."""

    path: Path
    rel: PurePosixPath
    problem: str | None = None  # why it cannot be inspected, found while searching (a link loop)


@dataclass(frozen=True)
class Discovery:
    """Inputs found, in order, and the arguments that matched nothing."""

    images: tuple[InputImage, ...]
    unmatched: tuple[str, ...]


def _searched(path: Path, top: Path) -> bool:
    """An entry a folder search yields: an image name (file or not: a folder or a broken link gets an error
    row), not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in path.relative_to(top).parts)


def discover(inputs: Sequence[str]) -> Discovery:
    """Expand files, folders (recursed, image names only, hidden entries skipped) and globs.

    Raises ValueError when two inputs would write the same output (e.g. `a.png` and `a.jpg`).
    """
    found: list[InputImage] = []
    unmatched: list[str] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            for p, why in sorted((p, why) for p, why in walk(path) if why is not None or _searched(p, path)):
                found.append(InputImage(p, PurePosixPath(p.relative_to(path).with_suffix("").as_posix()), why))
        elif path.exists() or path.is_symlink() or not glob.has_magic(arg):
            found.append(InputImage(path, PurePosixPath(path.stem)))  # a missing file becomes an error row
        else:
            matches = sorted(
                Path(m) for m in glob.glob(arg, recursive=True)
                if Path(m).is_file() or Path(m).suffix.lower() in IMAGE_EXTENSIONS
            )  # fmt: skip
            if not matches:
                unmatched.append(arg)
            found += [InputImage(m, PurePosixPath(m.stem)) for m in matches]
    unique = list({input_key(item.path): item for item in found}.values())
    seen: dict[PurePosixPath, Path] = {}
    for item in unique:
        other = seen.setdefault(item.rel, item.path)
        if other != item.path:
            raise ValueError(f"{other} and {item.path} would both write outputs named {item.rel}; rename one")
    return Discovery(tuple(unique), tuple(unmatched))


def input_key(path: Path | str, base: str | None = None) -> str:
    """The identity of an input: its resolved path (relative paths taken from `base`, else the current folder)."""
    path = Path(path)
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    return os.path.realpath(path)  # Path.resolve raises on a symbolic link loop


def check_out_not_inside(out: Path, inputs: Sequence[str]) -> None:
    """ValueError when `out` is an input folder or lies inside one (or inside the folder a `**` glob searches)."""
    target = Path(out).resolve()
    for arg in inputs:
        folder = Path(arg) if Path(arg).is_dir() else None
        if folder is None and glob.has_magic(arg) and "**" in arg:
            folder = Path(arg[: arg.index("**")] or ".")
        if folder is not None and (target == folder.resolve() or folder.resolve() in target.parents):
            raise ValueError(
                f"--out {out} is inside the input folder {arg}: its overlays would be read as photos; "
                "choose an output folder outside the inputs"
            )


def winclip_output(path: str | Path) -> str | None:
    """What a PNG is when winclip wrote it ("overlay", "mask", "composite"; its text chunk), else None."""
    try:
        with Image.open(path) as image:
            mark = image.info.get(OUTPUT_KEY) if image.format == "PNG" else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return mark if isinstance(mark, str) else None


def _check_header(path: str, what: str) -> None:
    """ValueError naming `what` and `path` unless it is a regular, non-empty file with a readable image header."""
    try:
        if image_size(path) is None:
            with Image.open(path):
                pass
    except ImageError as err:
        raise ValueError(f"{what} {path}: {err.reason}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValueError(f"{what} {path}: not an image file (format not recognised)") from None


def image_files(inputs: Sequence[str], what: str, *, refuse_outputs: bool = False, headers: bool = True) -> list[str]:
    """Files, folders and globs → paths, each checked now, before any model loads: ValueError naming `what`, the
    first file that is missing, (with `headers`) not a regular file or not an image (from its header), or (with
    `refuse_outputs`) a picture winclip wrote, and why; an argument that matches nothing is refused too. Without
    `headers`, only a missing file is refused: a batch that skips unreadable photos (calibration) reports them."""
    found = discover(list(inputs))
    if found.unmatched:
        raise ValueError(f"{what}: nothing matches {', '.join(found.unmatched)}")
    paths = [str(item.path) for item in found.images]
    for path in paths:
        if headers:
            _check_header(path, what)
        elif not os.path.lexists(path):
            raise ValueError(f"{what} {path}: file not found")
        kind = winclip_output(path) if refuse_outputs else None
        if kind is not None:
            raise ValueError(
                f"{what} {path}: a {kind} winclip wrote, not a photo; give the original photo (its path is in "
                "results.csv)"
            )
    return paths
