"""MVTec LOCO AD (Bergmann et al., IJCV 2022): logical and structural anomalies, several masks per image.

``mvtec-loco``::

    <root>/<class>/train/good/*.png                          good training images (references)
    <root>/<class>/validation/good/*.png                     ignored (see below)
    <root>/<class>/test/good/*.png                           good test images
    <root>/<class>/test/logical_anomalies/<name>.png         anomalous test images, defect type
    <root>/<class>/test/structural_anomalies/<name>.png      "logical_anomalies" or "structural_anomalies"
    <root>/<class>/ground_truth/<defect>/<name>/000.png      the masks of ``<name>.png``: 000.png, 001.png, ...

  The classes are breakfast_box, juice_bottle, pushpins, screw_bag and
  splicing_connectors (any sub-folder of root holding ``train/`` or ``test/``).
  Every image file in ``ground_truth/<defect>/<name>/`` is a mask of that image
  and they are united: a pixel is anomalous when it is nonzero in any of them.
  LOCO masks hold defect ids and saturation thresholds rather than 255, so only
  zero versus nonzero matters here.

  ``validation/good`` is neither a reference pool nor test data: the references
  are drawn from ``train/good`` only (over 300 images per class), as the
  paper's protocol draws them from the training split, so few-shot draws stay
  comparable with other LOCO results and the validation images stay free for
  what they are for, choosing thresholds and hyperparameters.

  Out of scope: LOCO's own localisation metric, sPRO (saturated per-region
  overlap, which needs each defect's saturation threshold from
  ``defects_config.json``); the pixel metrics here are those of every layout,
  computed on the united mask.
"""

from __future__ import annotations

from pathlib import Path

from .core import Found, images
from .mvtec import find_tree


def find_loco(root: Path) -> tuple[list[Found], list[str]]:
    """MVTec LOCO AD at ``root`` (``mvtec_loco_anomaly_detection/``)."""
    return find_tree(root, "good", _loco_masks)


def _loco_masks(folder: Path, defects: list[Path]) -> tuple[dict[Path, tuple[Path, ...]], list[str]]:
    """Every image file of ``<folder>/<stem>/``, sorted."""
    masks, problems = {}, []
    for image in defects:
        found = images(folder / image.stem)
        if found:
            masks[image] = tuple(found)
        else:
            problems.append(f"{image}: no mask; expected {folder / image.stem}/000.png")
    return masks, problems
