"""The evaluation feature cache: one safetensors file per image content, per feature settings (docs/method.md §5).

Features are stored in ``<cache>/<settings>/<sha256 of the file>.safetensors`` (fp32, never
pickle), where ``<settings>`` digests everything that changes features: backbone, weights
identity, input size, window scales, precision, resize mode and tiling, preprocessing mean/std, and
what the model adds itself (`WinCLIP.feature_key`: projected patches, a baseline's own features).

Multi-crop embeddings (docs/method.md §3) add to the same views, so they live in the same entry as an extra
``crops`` tensor, written when a run first needs them: rows with and without multi-crop share one
encoding, and an entry without crops is completed by encoding only the crops.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..files import atomic_write, digest, write_file
from ..images import ImageError
from ..method.features import Features
from ..model import WinCLIP
from ..progress import Bar

CACHE_FORMAT = 1


def feature_settings(model: WinCLIP) -> dict:
    """Everything that changes the encoded features of an image file."""
    info = model.info
    return model.feature_key() | {
        "format": CACHE_FORMAT,
        "backbone": info.name,
        "weights": info.weights_id,
        "image_size": list(info.image_size),
        "patch_size": list(info.patch_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "scales": list(model.options.scales),
        "precision": model.backbone.precision,
        "resize": model.options.resize,
        "tile_overlap": model.options.tile_overlap if model.options.resize == "tile" else None,
    }


def check_encoding_model(model: WinCLIP, encoding: WinCLIP | None) -> WinCLIP:
    """`encoding` (None: `model` itself) when its features hold all that `model` scores (its window scales or
    more, the same views the same way), else ValueError."""
    if encoding is None:
        return model
    mine, theirs = feature_settings(model), feature_settings(encoding)
    scales = set(mine.pop("scales"))
    if encoding.backbone is not model.backbone or mine != {k: v for k, v in theirs.items() if k != "scales"}:
        raise ValueError("the encoding model must share the model's backbone and encode the same views the same way")
    if not scales <= set(theirs["scales"]):
        raise ValueError(f"the encoding model's window scales {theirs['scales']} lack some of {sorted(scales)}")
    return encoding


@dataclass(frozen=True)
class Encoded:
    """Features of one image file's views (1 for squash, its tiles for tile) and its decoded size (H, W)."""

    features: Features
    size: tuple[int, int]


class FeatureCache:
    """One safetensors file per image content under a folder per feature settings (fp32)."""

    def __init__(self, root: Path, model: WinCLIP) -> None:
        settings = feature_settings(model)
        self.folder = Path(root) / digest(settings)[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        write_file(self.folder / "settings.json", (json.dumps(settings, indent=2) + "\n").encode())

    @classmethod
    def open(cls, folder: Path) -> FeatureCache:
        """An existing settings folder, read without a model (e.g. by ``winclip report``)."""
        if not (Path(folder) / "settings.json").is_file():
            raise FileNotFoundError(f"{folder}: not a feature cache folder (no settings.json)")
        cache = cls.__new__(cls)
        cache.folder = Path(folder)
        return cache

    def path(self, sha: str) -> Path:
        return self.folder / f"{sha}.safetensors"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def has_crops(self, sha: str) -> bool:
        """Whether the (existing) entry holds the multi-crop embeddings."""
        with safe_open(str(self.path(sha)), framework="pt") as handle:
            return "crops" in handle.keys()

    def complete(self, sha: str, crops: bool) -> bool:
        """Whether the entry exists, with the multi-crop embeddings when `crops`."""
        return self.has(sha) and (not crops or self.has_crops(sha))

    def save(self, sha: str, item: Encoded) -> None:
        tensors = {k: v.clone() for k, v in item.features.to_tensors().items()}  # not views of a larger batch
        meta = {"height": str(item.size[0]), "width": str(item.size[1])}
        atomic_write(self.path(sha), lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    def load(self, sha: str) -> Encoded:
        path = self.path(sha)
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        features = Features.from_tensors(load_file(str(path)))
        if features is None:
            raise ValueError(f"{path}: not a feature cache entry (no image features)")
        return Encoded(features, (int(meta["height"]), int(meta["width"])))


def encode_files(
    model: WinCLIP, cache: FeatureCache, files: Sequence[tuple[Path, str]], bar: Bar, *, crops: bool | None = None
) -> tuple[int, dict[str, ImageError]]:
    """Encode the (path, sha) files not yet cached, ``model.batch_size`` images at a time.

    ``crops`` (default: the model's ``multi_crop``): also the multi-crop embeddings; a cached
    entry without them gets only those encoded. Returns the number of images encoded and the
    decode errors by sha.
    """
    crops = model.options.multi_crop if crops is None else crops
    errors: dict[str, ImageError] = {}
    encoded = 0
    unique = {sha: path for path, sha in files}
    todo = [(sha, path, cache.has(sha)) for sha, path in unique.items() if not cache.has(sha) or crops]
    todo = [(sha, path, partial) for sha, path, partial in todo if not partial or not cache.has_crops(sha)]
    for start in range(0, len(todo), model.batch_size):
        decoded = []
        for sha, path, partial in todo[start : start + model.batch_size]:
            try:
                decoded.append((sha, model.load(path), partial))
            except ImageError as err:
                errors[sha] = err
                bar.update(1)
        for partial in (False, True):  # whole entries, then the crops of entries that lack only them
            group = [(sha, img) for sha, img, p in decoded if p == partial]
            if group:
                _encode_group(model, cache, group, crops, partial)
                bar.update(len(group))
                encoded += len(group)
    return encoded, errors


def _encode_group(
    model: WinCLIP, cache: FeatureCache, group: list[tuple[str, Image.Image]], crops: bool, partial: bool
) -> None:
    """Encode and save decoded images: whole entries, or (partial) only the crops an entry lacks."""
    images = [img for _, img in group]
    if partial:
        counts = [len(model.view_images(img)[0]) for img in images]
        added = model.encode_crops(images).split(counts)
        for (sha, _), extra in zip(group, added, strict=True):
            old = cache.load(sha)
            cache.save(sha, Encoded(old.features.with_crops(extra), old.size))
        return
    enc = model.encode_images(images, crops=crops)
    for i, (sha, _) in enumerate(group):
        cache.save(sha, Encoded(enc.features[enc.views_of(i)], enc.sizes[i]))


@dataclass(frozen=True)
class ViewSet:
    """Cached features of several images, all views concatenated, and which image each view belongs to."""

    features: Features
    owner: torch.Tensor  # (V,) index of the image of each view
    sizes: tuple[tuple[int, int], ...]  # (H, W) per image

    @staticmethod
    def load(cache: FeatureCache, shas: Sequence[str]) -> ViewSet:
        items = [cache.load(sha) for sha in shas]
        owner = torch.cat([torch.full((len(e.features),), i) for i, e in enumerate(items)])
        return ViewSet(Features.cat([e.features for e in items]), owner, tuple(e.size for e in items))
