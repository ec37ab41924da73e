"""A profile's reference images, encoded once: their features, views, names and digests; and its ROI mask."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import ImageInput, file_sha256, load_image, source_name
from ..method.features import Features
from ..model import WinCLIP


def image_digest(src: ImageInput, image: Image.Image | None = None) -> str:
    """sha256 of a file's bytes, or of the decoded RGB pixels (with the size) for in-memory images."""
    if isinstance(src, (str, Path)):
        return file_sha256(src)
    image = image if image is not None else load_image(src, source_name(src, 0))
    h = hashlib.sha256(f"{image.width}x{image.height}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def roi_array(roi: ImageInput | np.ndarray | None) -> np.ndarray | None:
    """A bool ROI from a mask image/path/array (nonzero = inside); refuses an empty ROI."""
    if roi is None:
        return None
    if isinstance(roi, np.ndarray) and roi.ndim == 2:
        arr = roi != 0
    else:
        arr = np.asarray(load_image(roi, source_name(roi, 0), 1).convert("L")) > 0
    if not arr.any():
        raise ValueError(f"{source_name(roi, 0)}: the ROI mask is empty (no nonzero pixel)")
    return arr


@dataclass(frozen=True)
class References:
    """Encoded reference images: features of every view, views per image, names and sha256s."""

    features: Features
    views: tuple[int, ...]
    names: tuple[str, ...]
    hashes: tuple[str, ...]

    @staticmethod
    def encode(model: WinCLIP, images: Sequence[ImageInput]) -> References:
        """Decode (ImageError names a bad file) and encode reference images through the model's one path."""
        decoded = [model.load(src, i) for i, src in enumerate(images)]
        enc = model.encode_images(decoded)
        return References(
            enc.features.to("cpu"),
            tuple(len(enc.views_of(i)) for i in range(len(decoded))),
            tuple(source_name(src, i) for i, src in enumerate(images)),
            tuple(image_digest(src, img) for src, img in zip(images, decoded, strict=True)),
        )

    @staticmethod
    def cat(parts: Sequence[References]) -> References:
        """References encoded in parts, as one (in order)."""
        return References(
            Features.cat([p.features for p in parts]),
            tuple(v for p in parts for v in p.views),
            tuple(n for p in parts for n in p.names),
            tuple(h for p in parts for h in p.hashes),
        )
