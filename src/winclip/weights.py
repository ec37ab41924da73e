"""Where pretrained weights come from: the open_clip / Hugging Face cache, or a download."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model

PROBE_TIMEOUT_S = 5.0  # how long an offline machine waits before it is told so


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


def _host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe, so that an offline machine fails at once instead of retrying for a minute."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_checkpoint(name: str, tag: str, cache_dir: str | Path | None = None) -> Path:
    """Path of the weights for an open_clip pretrained tag: cache first, else download.

    Raises WeightsUnavailableError in one line when they are neither cached nor downloadable.
    """
    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(name)) or "none"
        raise WeightsUnavailableError(f"{tag!r} is neither a file nor a pretrained tag of {name} (known tags: {tags})")
    cache = str(cache_dir) if cache_dir else None
    hint = (
        f"cannot get weights {name}/{tag}: {{why}}; download them on a connected machine and pass "
        f"--pretrained /path/to/checkpoint (or --cache-dir with the open_clip cache)"
    )
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        try:
            return Path(
                hf_hub_download(repo, filename or "open_clip_pytorch_model.bin", cache_dir=cache, local_files_only=True)
            )
        except Exception:  # noqa: BLE001 - any miss of the cache (not there, partial, unreadable) means: download
            pass
        url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise WeightsUnavailableError(hint.format(why="not in the cache and HF_HUB_OFFLINE is set"))
    else:
        url = cfg.get("url", "")
    if not _host_reachable(url):
        raise WeightsUnavailableError(hint.format(why=f"not in the cache and {urlparse(url).hostname} is unreachable"))
    try:
        return Path(download_pretrained(cfg, cache_dir=cache))
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear line
        raise WeightsUnavailableError(hint.format(why=str(exc).splitlines()[0])) from None
