"""BTAD (beanTech Anomaly Detection, Mishra et al., 2021).

``btad``::

    <root>/<class>/train/ok/*.<ext>                  good training images (references)
    <root>/<class>/test/ok/*.<ext>                   good test images
    <root>/<class>/test/ko/<name>.<ext>              anomalous test images, defect type "ko"
    <root>/<class>/ground_truth/ko/<name>.<ext>      their masks: same stem, no ``_mask`` suffix

  The classes are ``01``, ``02`` and ``03`` (any sub-folder of root holding
  ``train/`` or ``test/`` is a class). Extensions differ between classes and
  between an image and its mask (01: bmp images, png masks; 02: png and png;
  03: bmp and bmp), so a mask is the one image file of ``ground_truth/<defect>/``
  whose stem is the image's stem, whatever its extension; two candidates are an
  error. Any other sub-folder of ``test/`` is a defect type like ``ko``.
"""

from __future__ import annotations

from pathlib import Path

from .core import Found, images
from .mvtec import find_tree


def find_btad(root: Path) -> tuple[list[Found], list[str]]:
    """BTAD at ``root`` (``BTech_Dataset_transformed/``)."""
    return find_tree(root, "ok", _btad_masks)


def _btad_masks(folder: Path, defects: list[Path]) -> tuple[dict[Path, tuple[Path, ...]], list[str]]:
    """The file of ``folder`` with each image's stem, any extension."""
    by_stem: dict[str, list[Path]] = {}
    for mask in images(folder):
        by_stem.setdefault(mask.stem, []).append(mask)
    masks: dict[Path, tuple[Path, ...]] = {}
    problems: list[str] = []
    for image in defects:
        candidates = by_stem.get(image.stem, [])
        if len(candidates) == 1:
            masks[image] = (candidates[0],)
        elif candidates:
            problems.append(f"{image}: several masks match: {', '.join(p.name for p in candidates)}")
        else:
            problems.append(f"{image}: no mask; expected {folder / image.stem}.<ext>")
    return masks, problems
