"""open_clip's registries (model configs, pretrained tags) without importing open_clip, and model-config files.

Importing open_clip imports torch (seconds), which `winclip weights where` and `winclip profile
show` should not pay for. So: where open_clip is already imported in this process, its own
functions answer (they see configs added with `open_clip.add_model_config` and changes made to
its registry); otherwise its files are read: the JSON configs in `open_clip/model_configs/`
(those with `embed_dim`, `vision_cfg` and `text_cfg`, as open_clip keeps them) and the tag
registry `open_clip/pretrained.py`, run as plain code with its package-relative imports read the
same way and `safetensors.torch` unavailable (its only torch import, optional there).

A model config given as a `.json` file is registered under the file's name (open_clip's rule);
a profile stores the file's content, and `register_config(name, content)` registers it again
from a copy in the cache (`$WINCLIP_CACHE`, else `$XDG_CACHE_HOME/winclip`, else
`~/.cache/winclip`), under `model-configs/<sha256>/<name>.json`, so the file itself is no longer
needed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")  # what open_clip requires of a model config
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")  # a config name that is safe as a file name
_FILES: dict[str, Path] = {}  # model configs registered from files: name → file


def _open_clip() -> ModuleType | None:
    """open_clip when this process has imported it already, else None."""
    return sys.modules.get("open_clip")


@cache
def _package() -> Path:
    """open_clip's folder, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed (pip install open-clip-torch)", name="open_clip")
    return Path(next(iter(spec.submodule_search_locations)))


def _run_module(name: str) -> dict[str, Any]:
    """One of open_clip's modules run as plain code (module docstring); its namespace."""
    path = _package() / f"{name}.py"
    tree = ast.parse(path.read_text(), str(path))
    namespace: dict[str, Any] = {"__name__": f"winclip_registry_{name}", "__file__": str(path)}
    body = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            module = _run_module(node.module)
            namespace.update({a.asname or a.name: module[a.name] for a in node.names})
        else:
            body.append(node)
    tree.body = body
    blocked = "safetensors.torch" not in sys.modules
    if blocked:
        sys.modules["safetensors.torch"] = None  # type: ignore[assignment]  # `import` raises ImportError
    try:
        exec(compile(tree, str(path), "exec"), namespace)  # open_clip's own registry code, read from its package
    finally:
        if blocked:
            del sys.modules["safetensors.torch"]
    return namespace


@cache
def _pretrained() -> dict[str, Any]:
    return _run_module("pretrained")


@cache
def _builtin_configs() -> dict[str, dict]:
    found = {}
    for path in sorted((_package() / "model_configs").glob("*.json")):
        cfg = json.loads(path.read_text())
        if all(k in cfg for k in CONFIG_KEYS):
            found[path.stem] = cfg
    return found


def list_models() -> list[str]:
    """Every model config's name (open_clip.list_models)."""
    oc = _open_clip()
    if oc is not None:
        return list(oc.list_models())
    return sorted({*_builtin_configs(), *_FILES}, key=_natural_key)


def _natural_key(name: str) -> list[int | str]:
    """open_clip.factory._natural_key: the order of list_models (numbers compared as numbers)."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def get_model_config(name: str) -> dict | None:
    """A model config by name (open_clip.get_model_config), None when unknown."""
    oc = _open_clip()
    if oc is not None:
        return oc.get_model_config(name)
    if name in _FILES:
        return json.loads(_FILES[name].read_text())
    cfg = _builtin_configs().get(name)
    return None if cfg is None else json.loads(json.dumps(cfg))


def get_pretrained_cfg(model: str, tag: str) -> dict:
    """open_clip.pretrained.get_pretrained_cfg: a tag's download and preprocessing settings ({} when unknown)."""
    oc = _open_clip()
    module = oc.pretrained.__dict__ if oc is not None else _pretrained()
    return module["get_pretrained_cfg"](model, tag)


def list_pretrained() -> list[tuple[str, str]]:
    """Every (model, tag) open_clip can download (open_clip.list_pretrained)."""
    oc = _open_clip()
    module = oc.pretrained.__dict__ if oc is not None else _pretrained()
    return list(module["list_pretrained"]())


def list_pretrained_tags_by_model(model: str) -> list[str]:
    """The tags of one model (open_clip.pretrained.list_pretrained_tags_by_model)."""
    oc = _open_clip()
    module = oc.pretrained.__dict__ if oc is not None else _pretrained()
    return list(module["list_pretrained_tags_by_model"](model))


def openclip_version() -> str:
    """open_clip's version."""
    oc = _open_clip()
    return oc.__version__ if oc is not None else _run_module("version")["__version__"]


def canonical(text: str, source: str) -> str:
    """A model config's JSON in one canonical form (sorted keys); ValueError naming `source` unless a config."""
    try:
        cfg = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not a model config (invalid JSON: {exc})") from None
    if not isinstance(cfg, dict) or any(k not in cfg for k in CONFIG_KEYS):
        raise ValueError(f"{source}: not an open_clip model config (it needs {', '.join(CONFIG_KEYS)})")
    return json.dumps(cfg, sort_keys=True)


def cache_root() -> Path:
    """winclip's cache folder: $WINCLIP_CACHE, else $XDG_CACHE_HOME/winclip, else ~/.cache/winclip."""
    if os.environ.get("WINCLIP_CACHE"):
        return Path(os.environ["WINCLIP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "winclip"


def stored_config(name: str, content: str) -> Path:
    """A model config a profile stored, as a file `model-configs/<sha256>/<name>.json` in the cache (written once;
    a temporary folder when the cache cannot be written)."""
    if not NAME.match(name):
        raise ValueError(f"model config name {name!r} is not a plain file name")
    text = canonical(content, f"the stored config of {name}")
    sha = hashlib.sha256(text.encode()).hexdigest()
    for root in (cache_root(), Path(tempfile.gettempdir()) / f"winclip-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        path = root / "model-configs" / sha / f"{name}.json"
        try:
            if not path.is_file() or canonical(path.read_text(), str(path)) != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(text + "\n")
                os.replace(tmp, path)
            return path
        except (OSError, ValueError):
            continue
    raise ValueError(f"cannot write the stored model config of {name} in {cache_root()} nor in a temporary folder")


def register_config(backbone: str, content: str | None = None) -> str:
    """The model name a backbone option names: a config `.json` file (or `content`, a config a profile stored, under
    the name `backbone`) registered under its file name; else a known model name (ValueError otherwise)."""
    if content is not None:
        path = stored_config(backbone, content)
    elif Path(backbone).suffix == ".json":
        path = Path(backbone)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model config file not found")
        canonical(path.read_text(), str(path))
    else:
        if backbone not in list_models():
            raise ValueError(f"unknown backbone {backbone!r}; see open_clip.list_models() or pass a config .json")
        return backbone
    _FILES[path.stem] = path
    oc = _open_clip()
    if oc is not None:
        oc.add_model_config(path)
    return path.stem


def config_content(name: str) -> str | None:
    """The canonical content of a model config registered from a file (None for open_clip's own)."""
    path = _FILES.get(name)
    return None if path is None else canonical(path.read_text(), str(path))
