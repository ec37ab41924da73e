"""How a checkpoint runs, decided without torch: its format's name, QuickGELU or not, mean/std, and why.

`known_tag` finds the open_clip tag a file is, by the sha256 that open_clip's download URLs carry;
`choose_setup` decides the activation and mean/std a checkpoint runs with (its tag, the open_clip
config beside it, its known sha256, its format, else the model's defaults) and says why;
`config_name` names the open_clip config a source's own config equals. open_clip's registries are
read through `registry`, so `winclip weights where` imports no torch.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .locate import Located, split_source
from .registry import get_model_config, get_pretrained_cfg, list_models, list_pretrained

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's defaults, OpenAI's normalisation
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SAFETENSORS, TORCH_LOAD, TORCHSCRIPT = "safetensors", "torch.load(weights_only=True)", "TorchScript archive"
MIN_DIGEST_CHARS = 8  # mlfoundations URLs carry the first 8 hex digits of the sha256


def is_torchscript(path: Path) -> bool:
    """A zip archive with `constants.pkl`: TorchScript (torch.load's own test)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/")[-1] == "constants.pkl" for n in z.namelist())


def known_tag(sha256: str) -> tuple[str, str, dict] | None:
    """(model, tag, pretrained cfg) of the open_clip download whose URL carries this sha256, if any."""
    for model, tag in list_pretrained():
        cfg = get_pretrained_cfg(model, tag)
        url = cfg.get("url", "")
        if "openaipublic" in url:
            digest = url.split("/")[-2]
        elif "mlfoundations" in url:
            digest = Path(url).stem.split("-")[-1]
        else:
            continue
        if len(digest) >= MIN_DIGEST_CHARS and sha256.startswith(digest.lower()):
            return model, tag, cfg
    return None


@dataclass(frozen=True)
class Setup:
    """How a checkpoint is run: QuickGELU or not, preprocessing mean/std, and where that was read."""

    quick_gelu: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    reason: str


def source_config(found: Located | None) -> dict:
    """open_clip_config.json of an hf-hub: repo or local-dir: folder ({} when there is none)."""
    if found is None or found.config is None:
        return {}
    try:
        cfg = json.loads(found.config.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{found.config}: unreadable open_clip config ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict):
        raise ValueError(f"{found.config}: an open_clip config needs a 'model_cfg' object")
    return cfg


def config_name(model_cfg: dict, pretrained: str, preferred: str) -> str:
    """The open_clip name whose config is `model_cfg` (QuickGELU aside; `preferred` first), else the source's own.

    The source's own name does not depend on where it lies: `hf-hub:ORG/REPO`, `local-dir:<folder name>`.
    """
    plain = {k: v for k, v in model_cfg.items() if k != "quick_gelu"}
    for name in [preferred, *list_models()]:
        cfg = get_model_config(name) or {}
        if {k: v for k, v in cfg.items() if k != "quick_gelu"} == plain:
            return name
    kind, rest = split_source(pretrained)
    return f"local-dir:{Path(rest).name}" if kind == "local-dir" else pretrained


def choose_setup(name: str, pretrained: str, found: Located, source_cfg: dict, fmt: str, sha: str) -> Setup:
    """Activation and mean/std for a checkpoint: its tag, its config, its known sha256, its format, else defaults."""
    model_qg = bool((get_model_config(name) or {}).get("quick_gelu", False))
    tag = get_pretrained_cfg(name, pretrained) if not split_source(pretrained)[0] else {}
    if tag:
        reason = f"pretrained tag {pretrained}"
    elif source_cfg:
        tag = {**source_cfg.get("preprocess_cfg", {}), "quick_gelu": source_cfg["model_cfg"].get("quick_gelu", False)}
        reason = f"{found.config}"
    elif sha and (known := known_tag(sha)):
        tag, reason = known[2], f"sha256 is open_clip's {known[0]}/{known[1]}"
    elif fmt == TORCHSCRIPT:
        tag, reason = {"quick_gelu": True}, "TorchScript archive: OpenAI's release format"
    else:
        return Setup(model_qg, OPENAI_MEAN, OPENAI_STD, f"no config with the checkpoint: {name}'s own")
    mean, std = tuple(tag.get("mean", OPENAI_MEAN)), tuple(tag.get("std", OPENAI_STD))
    return Setup(model_qg or bool(tag.get("quick_gelu", False)), mean, std, reason)
