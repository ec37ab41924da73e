"""`winclip weights`: what would be loaded (`where`), carrying weights (`fetch`), checking them (`verify`).

`fetch` downloads, on a connected machine, exactly the files open_clip would load, into a
folder laid out as a Hugging Face cache (or open_clip's URL cache for URL-only tags), and
records them in `winclip-weights.json` (file, sha256, size, source, open_clip name and tag).
Copied to an offline machine, the folder is a cache: `--cache-dir DIR` finds the weights with
no network, and `verify DIR` checks every byte against the record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ... import __version__
from ...images import file_sha256
from .locate import (
    HF_CONFIG,
    Candidate,
    WeightsUnavailableError,
    candidates,
    describe,
    download,
    hub_cache,
    locate_local,
    read_record,
    split_source,
    url_cache,
)
from .registry import openclip_version, register_config
from .setup import SAFETENSORS, TORCH_LOAD, TORCHSCRIPT, choose_setup, config_name, is_torchscript, source_config

MANIFEST = "winclip-weights.json"
MANIFEST_VERSION = "winclip-weights/1"


@dataclass(frozen=True)
class Where:
    """What `where` found: label/value lines, and whether the weights are on this machine."""

    lines: tuple[tuple[str, str], ...]
    found: bool


def _format(path: Path) -> str:
    if path.suffix == ".safetensors":
        return SAFETENSORS
    return TORCHSCRIPT if is_torchscript(path) else TORCH_LOAD


def where(backbone: str, pretrained: str, cache_dir: str | None = None) -> Where:
    """What loading (backbone, pretrained) would read on this machine, without downloading anything."""
    name = register_config(backbone)
    lines = [("backbone", name), ("pretrained", pretrained)]
    if pretrained.lower() == "none":
        return Where((*lines, ("status", "random weights (seeded): nothing to load, scores are meaningless")), True)
    found = locate_local(name, pretrained, cache_dir)
    if found is None:
        looked = [describe(c, cache_dir) for c in candidates(name, pretrained)]
        lines += [("status", "NOT on this machine (winclip weights fetch downloads it)")]
        lines += [("looked for", place) for place in looked]
        return Where(tuple(lines), False)
    cfg = source_config(found)
    if cfg:
        name = config_name(cfg["model_cfg"], pretrained, name)
        lines[0] = ("backbone", f"{name} (from {found.config})")
    fmt = _format(found.path)
    sha = file_sha256(found.path)
    setup = choose_setup(name, pretrained, found, cfg, fmt, sha)
    lines += [
        ("file", str(found.path)),
        ("found in", found.origin),
        ("format", fmt),
        ("bytes", f"{found.path.stat().st_size:,}"),
        ("sha256", sha),
        ("activation", "QuickGELU" if setup.quick_gelu else "GELU"),
        ("mean / std", f"{list(setup.mean)} / {list(setup.std)}"),
        ("config from", setup.reason),
    ]
    return Where(tuple(lines), True)


def _record(root: Path, path: Path) -> dict:
    return {"path": os.path.relpath(path, root), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def _hub_ref(root: Path, repo: str) -> Path:
    """refs/main of a repo in a Hugging Face cache: offline lookups need it to find the snapshot."""
    return root / f"models--{repo.replace('/', '--')}" / "refs" / "main"


def fetch(backbone: str, pretrained: str, out: str | Path | None = None) -> tuple[Path, dict]:
    """Download what open_clip would load into `out` (a cache layout; default: the caches); returns the manifest."""
    name = register_config(backbone)
    errors = []
    for c in candidates(name, pretrained):
        try:
            path = download(c, out)
        except Exception as exc:  # noqa: BLE001 - a missing alternative is normal; the last error is reported
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            continue
        return _write_entry(name, pretrained, c, path, out)
    raise WeightsUnavailableError(f"cannot fetch {name}/{pretrained}: {errors[-1] if errors else 'nothing to fetch'}")


def _write_entry(name: str, pretrained: str, c: Candidate, path: Path, out: str | Path | None) -> tuple[Path, dict]:
    root = (url_cache(out) if c.url else hub_cache(out)).absolute()
    files = [path]
    if c.repo:
        if split_source(pretrained)[0] == "hf-hub":
            files.append(download(Candidate(repo=c.repo, filename=HF_CONFIG), out))
        files.append(_hub_ref(root, c.repo))
    entry = {
        "backbone": name,
        "pretrained": pretrained,
        "source": f"hf-hub:{c.repo}/{c.filename}" if c.repo else c.url or c.path,
        "files": [_record(root, Path(f).absolute()) for f in files],
        "open_clip": openclip_version(),
        "winclip": __version__,
        "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = root / MANIFEST
    manifest: dict[str, Any] = (
        read_manifest(root) if manifest_path.is_file() else {"format": MANIFEST_VERSION, "entries": []}
    )
    keep = [e for e in manifest["entries"] if (e["backbone"], e["pretrained"]) != (name, pretrained)]
    manifest["entries"] = [*keep, entry]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path, entry


def read_manifest(folder: str | Path) -> dict:
    """The manifest `fetch` wrote into a folder (one-line errors when absent or malformed)."""
    return read_record(
        Path(folder) / MANIFEST, MANIFEST_VERSION, f"{folder}: no {MANIFEST} (written by `winclip weights fetch`)"
    )


def recorded_files(folder: str | Path) -> list[dict]:
    """The files a manifest records, each `{path, sha256, bytes}` checked for its types and for a path inside the
    folder (relative, no `..`, not leading out through a link); ValueError in one line naming the first fault."""
    root = Path(folder)
    manifest = read_manifest(root)
    where = root / MANIFEST

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{where}: malformed ({what})")

    entries = manifest.get("entries")
    need(isinstance(entries, list), "entries must be a list")
    assert isinstance(entries, list)  # need() raised otherwise
    files = []
    for i, entry in enumerate(entries):
        need(isinstance(entry, dict) and isinstance(entry.get("files"), list), f"entries[{i}].files must be a list")
        for j, rec in enumerate(entry["files"]):
            at = f"entries[{i}].files[{j}]"
            need(isinstance(rec, dict), f"{at} must be an object")
            need(isinstance(rec.get("path"), str) and rec["path"] != "", f"{at}.path must be a file name")
            need(isinstance(rec.get("sha256"), str) and len(rec["sha256"]) == 64, f"{at}.sha256 must be 64 hex digits")
            need(type(rec.get("bytes")) is int and rec["bytes"] >= 0, f"{at}.bytes must be a whole number")
            parts = Path(rec["path"]).parts
            inside = not Path(rec["path"]).is_absolute() and ".." not in parts
            need(inside and root.resolve() in (root / rec["path"]).resolve().parents, f"{at}.path leads out of {root}")
            files.append(rec)
    need(bool(files), "it records no file")
    return files


def verify(folder: str | Path) -> list[tuple[str, str]]:
    """(file, "ok" or what is wrong) for every file the manifest records, checked by size and sha256."""
    root = Path(folder)
    results = []
    for rec in recorded_files(root):
        path = root / rec["path"]
        if not path.is_file():
            status = "MISSING"
        elif path.stat().st_size != rec["bytes"]:
            status = f"WRONG SIZE: {path.stat().st_size:,} bytes, recorded {rec['bytes']:,}"
        elif file_sha256(path) != rec["sha256"]:
            status = "WRONG SHA256: the file changed since it was fetched"
        else:
            status = "ok"
        results.append((rec["path"], status))
    return results
