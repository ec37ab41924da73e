"""Where pretrained weights come from, found in open_clip's own order, offline first.

`pretrained` is an open_clip tag, `hf-hub:ORG/REPO`, `local-dir:PATH` or a checkpoint file.
A tag or `hf-hub:` name is looked up in the Hugging Face cache exactly as open_clip's
downloader would fetch it (`open_clip.pretrained.download_pretrained_from_hf`: the
safetensors alternative first, then the named file), a URL-only tag in open_clip's URL
cache; only when it is in neither, and the machine is online, is it downloaded.
`local-dir:` follows `open_clip.factory._find_checkpoint_in_dir`. The cache is the one
huggingface_hub uses: `cache_dir`, else HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub;
HF_HUB_OFFLINE=1 means no network at all.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .registry import get_pretrained_cfg, list_pretrained_tags_by_model

PROBE_TIMEOUT_S = 5.0  # how long an offline machine waits before it is told so
HF_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip.constants.HF_WEIGHTS_NAME
HF_SAFE_WEIGHTS = "open_clip_model.safetensors"  # open_clip.constants.HF_SAFE_WEIGHTS_NAME
HF_CONFIG = "open_clip_config.json"  # open_clip.constants.HF_CONFIG_NAME
HF_PREFIX, LOCAL_PREFIX = "hf-hub:", "local-dir:"
# open_clip.factory._find_checkpoint_in_dir: these names first, in this order; else safetensors, then any
LOCAL_DIR_ORDER = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth")
TRUE_VALUES = ("1", "on", "yes", "true")  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


@dataclass(frozen=True)
class Candidate:
    """One file open_clip would load: from a Hugging Face repo, a URL, or a local path."""

    repo: str = ""  # Hugging Face repo id
    filename: str = ""  # file in the repo, or the URL's file name
    url: str = ""
    path: str = ""  # a local file


@dataclass(frozen=True)
class Located:
    """A checkpoint found on this machine: the file, how it was found, and the open_clip config beside it."""

    path: Path
    origin: str  # e.g. "Hugging Face cache timm/x (open_clip_model.safetensors)"
    config: Path | None = None  # open_clip_config.json of an hf-hub: repo, a local-dir: folder or beside a file


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face hub cache, resolved now as huggingface_hub.constants does at import."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(hub)).expanduser()


def url_cache(cache_dir: str | Path | None = None) -> Path:
    """open_clip's cache of URL downloads (`download_pretrained_from_url`)."""
    return Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/clip").expanduser()


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: nothing may be downloaded."""
    flags = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return flags in TRUE_VALUES


def safe_alternatives(filename: str) -> list[str]:
    """The safetensors files open_clip tries before `filename` (`pretrained._get_safe_alternatives`)."""
    if filename == HF_WEIGHTS:
        return [HF_SAFE_WEIGHTS]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors"]
    return []


def hub_files(hub: str) -> tuple[str, list[str]]:
    """open_clip's `hf_hub` entry ("org/repo/" or "org/repo/file") → repo id and files in the order tried."""
    repo, filename = os.path.split(hub) if not hub.endswith("/") else (hub.rstrip("/"), "")
    filename = filename or HF_WEIGHTS
    return repo, [*safe_alternatives(filename), filename]


def split_source(pretrained: str) -> tuple[str, str]:
    """("hf-hub" | "local-dir" | "", rest) of a `pretrained` value."""
    for prefix in (HF_PREFIX, LOCAL_PREFIX):
        if pretrained.startswith(prefix):
            rest = pretrained[len(prefix) :].strip()
            if not rest:
                raise ValueError(f"{pretrained!r}: empty name after {prefix}")
            return prefix[:-1], rest
    return "", pretrained


def candidates(name: str, pretrained: str) -> list[Candidate]:
    """The files open_clip would load for a tag or `hf-hub:` name, in its order (a download target each)."""
    kind, rest = split_source(pretrained)
    if kind == "hf-hub":
        repo, files = hub_files(rest + "/")
        return [Candidate(repo=repo, filename=f) for f in files]
    cfg = get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(name)) or "none"
        raise WeightsUnavailableError(
            f"{pretrained!r} is neither a file nor a pretrained tag of {name} (known tags: {tags})"
        )
    if cfg.get("file"):
        return [Candidate(path=cfg["file"])]
    if cfg.get("hf_hub"):  # open_clip prefers the hub whenever huggingface_hub is installed (it is a dependency)
        repo, files = hub_files(cfg["hf_hub"])
        return [Candidate(repo=repo, filename=f) for f in files]
    url = cfg.get("url", "")
    return [Candidate(url=url, filename=os.path.basename(urlparse(url).path))]


def in_cache(c: Candidate, cache_dir: str | Path | None) -> Path | None:
    """The cached file of a candidate, without any network access."""
    if c.path:
        return Path(c.path) if Path(c.path).is_file() else None
    if c.url:
        path = url_cache(cache_dir) / c.filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(c.repo, c.filename, cache_dir=str(hub_cache(cache_dir)))
    return Path(found) if isinstance(found, str) else None


def describe(c: Candidate, cache_dir: str | Path | None) -> str:
    """Where a candidate is (or would be) on this machine, in words."""
    if c.path:
        return c.path
    if c.url:
        return str(url_cache(cache_dir) / c.filename)
    return f"{c.repo}/{c.filename} in the Hugging Face cache {hub_cache(cache_dir)}"


def local_dir_checkpoint(folder: Path) -> Path | None:
    """The checkpoint open_clip picks in a folder (`factory._find_checkpoint_in_dir`)."""
    found = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
    preferred = [p for p in found if p.name in LOCAL_DIR_ORDER]
    if preferred:
        return min(preferred, key=lambda p: LOCAL_DIR_ORDER.index(p.name))
    found.sort(key=lambda p: p.suffix != ".safetensors")  # stable: safetensors first, then by name
    return found[0] if found else None


def locate_local(name: str, pretrained: str, cache_dir: str | Path | None = None) -> Located | None:
    """The checkpoint for `pretrained` on this machine, or None when it would have to be downloaded."""
    kind, rest = split_source(pretrained)
    if kind == "local-dir":
        folder = Path(rest).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: local-dir: folder not found")
        path = local_dir_checkpoint(folder)
        if path is None:
            raise FileNotFoundError(f"{folder}: no checkpoint (*.safetensors, *.bin, *.pth) in the local-dir: folder")
        config = folder / HF_CONFIG
        return Located(path, f"local-dir {folder}", config if config.is_file() else None)
    if not kind and Path(pretrained).is_file():
        config = Path(pretrained).with_name(HF_CONFIG)  # a checkpoint's own config beside it
        return Located(Path(pretrained), "file", config if config.is_file() else None)
    if not kind and (Path(pretrained).suffix or os.sep in pretrained):
        raise FileNotFoundError(f"{pretrained}: checkpoint file not found")
    for c in candidates(name, pretrained):
        path = in_cache(c, cache_dir)
        if path is not None:
            return Located(path, _origin(c), _hub_config(c, cache_dir) if kind else None)
    return None


def _origin(c: Candidate) -> str:
    if c.repo:
        return f"Hugging Face cache {c.repo} ({c.filename})"
    return "open_clip URL cache" if c.url else "file"


def _hub_config(c: Candidate, cache_dir: str | Path | None) -> Path | None:
    """open_clip_config.json of an hf-hub: repo, from the cache (downloaded with the weights)."""
    return in_cache(Candidate(repo=c.repo, filename=HF_CONFIG), cache_dir)


def _host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe, so that an offline machine fails at once instead of retrying for a minute."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def download(c: Candidate, cache_dir: str | Path | None) -> Path:
    """Download one candidate into the cache (Hugging Face or open_clip's URL cache); raises on failure."""
    if c.url:
        from open_clip.pretrained import download_pretrained_from_url

        return Path(download_pretrained_from_url(c.url, cache_dir=str(url_cache(cache_dir))))
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(c.repo, c.filename, cache_dir=str(hub_cache(cache_dir))))


def unavailable(name: str, pretrained: str, cache_dir: str | Path | None, why: str) -> WeightsUnavailableError:
    """The one-line error of weights that are neither on this machine nor downloadable, naming where we looked."""
    looked = "; ".join(describe(c, cache_dir) for c in candidates(name, pretrained))
    return WeightsUnavailableError(
        f"cannot get weights {name}/{pretrained}: {why} (looked for {looked}); on a connected machine run "
        f"`winclip weights fetch --backbone {name} --pretrained {pretrained} --out DIR`, copy DIR here and pass "
        "--cache-dir DIR (or pass --pretrained /path/to/checkpoint)"
    )


def resolve_checkpoint(name: str, pretrained: str, cache_dir: str | Path | None = None) -> Located:
    """The checkpoint for `pretrained`: on this machine first, else downloaded (unless offline).

    Raises WeightsUnavailableError in one line when it is neither cached nor downloadable.
    """
    found = locate_local(name, pretrained, cache_dir)
    if found is not None:
        return found
    if offline():
        raise unavailable(name, pretrained, cache_dir, "not on this machine and HF_HUB_OFFLINE is set")
    kind = split_source(pretrained)[0]
    errors = []
    for c in candidates(name, pretrained):
        host = c.url or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        if not _host_reachable(host):
            raise unavailable(
                name, pretrained, cache_dir, f"not on this machine and {urlparse(host).hostname} is unreachable"
            )
        try:
            path = download(c, cache_dir)
        except Exception as exc:  # noqa: BLE001 - a missing alternative is normal; the last error is reported
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        config = None
        if kind == "hf-hub":
            config = download(Candidate(repo=c.repo, filename=HF_CONFIG), cache_dir)
        return Located(path, f"downloaded: {_origin(c)}", config)
    raise unavailable(name, pretrained, cache_dir, errors[-1] if errors else "nothing to download")


def read_record(path: Path, version: str, absent: str) -> dict:
    """A JSON record winclip wrote (weights manifest, export.json), checked for its format version.

    absent: what to say when the file is not there. Raises FileNotFoundError / ValueError in one line.
    """
    if not path.is_file():
        raise FileNotFoundError(absent)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(record, dict) or record.get("format") != version:
        raise ValueError(f"{path}: not a {version} file")
    return record
