"""A user's own product in folders.

``folder``::

    <root>/<class>/good/                 good test images
    <root>/<class>/defect/               anomalous test images, defect type "anomaly"
    <root>/<class>/defect/<type>/        anomalous test images of defect type <type>
    <root>/<class>/masks/                optional ground-truth masks
    <root>/<class>/reference/            optional good images for few-shot references

  If root itself holds ``good/`` or ``defect/``, root is the only class, named
  after root's folder. The mask of ``defect/[<type>/]<stem>.<ext>`` is
  ``masks/[<type>/]<stem>.<any ext>`` or ``masks/[<type>/]<stem>_mask.<any ext>``,
  looked up in ``masks/<type>/`` first, then in ``masks/``. Once ``masks/``
  exists every defect image needs exactly one mask and every mask must belong
  to exactly one defect image. Without ``reference/`` the class supports
  zero-shot only; ``sample_references`` then raises a ``DatasetError``.
"""

from __future__ import annotations

from pathlib import Path

from .core import ClassData, Found, Sample, images, sorted_samples, subdirs


def find_folder(root: Path) -> tuple[list[Found], list[str]]:
    """The folder layout at ``root``: one class per sub-folder, or root itself."""
    if (root / "good").is_dir() or (root / "defect").is_dir():
        return [_folder_class(root, root.resolve().name)], []
    class_dirs = [d for d in subdirs(root) if (d / "good").is_dir() or (d / "defect").is_dir()]
    return [_folder_class(d, d.name) for d in class_dirs], []


def _folder_class(class_dir: Path, name: str) -> Found:
    problems = []
    reference_dir = class_dir / "reference"
    references = images(reference_dir)
    if reference_dir.is_dir() and not references:
        problems.append(f"{reference_dir}: no images")
    defect_dir = class_dir / "defect"
    defects = [(path, "anomaly") for path in images(defect_dir)]
    defects += [(path, sub.name) for sub in subdirs(defect_dir) for path in images(sub)]
    masks_dir = class_dir / "masks"
    matched, mask_problems = _match_masks(masks_dir, defect_dir, [path for path, _ in defects])
    test = [Sample(path, 0, "good") for path in images(class_dir / "good")]
    test += [Sample(path, 1, defect, matched.get(path, ())) for path, defect in defects]
    data = ClassData(name, tuple(references), sorted_samples(test))
    return Found(data, str(class_dir), problems + mask_problems)


def _match_masks(
    masks_dir: Path, defect_dir: Path, defects: list[Path]
) -> tuple[dict[Path, tuple[Path, ...]], list[str]]:
    """Pair defect images with the mask files of ``masks_dir`` (see the module docstring)."""
    if not masks_dir.is_dir():
        return {}, []
    masks = images(masks_dir) + [path for sub in subdirs(masks_dir) for path in images(sub)]
    by_key: dict[tuple[Path, str], list[Path]] = {}
    for mask in masks:
        by_key.setdefault((mask.parent, mask.stem), []).append(mask)
    matched: dict[Path, tuple[Path, ...]] = {}
    owners: dict[Path, list[Path]] = {}
    problems = []
    for image in defects:
        candidates = []
        for folder in (masks_dir / image.parent.relative_to(defect_dir), masks_dir):
            candidates = by_key.get((folder, image.stem), []) + by_key.get((folder, f"{image.stem}_mask"), [])
            if candidates:
                break
        if not candidates:
            problems.append(f"{image}: no mask in {masks_dir} (expected {image.stem}.<ext> or {image.stem}_mask.<ext>)")
        elif len(candidates) > 1:
            problems.append(f"{image}: several masks match: {', '.join(p.name for p in candidates)}")
        else:
            matched[image] = (candidates[0],)
            owners.setdefault(candidates[0], []).append(image)
    for mask in masks:
        if mask not in owners:
            problems.append(f"{mask}: mask matches no defect image")
        elif len(owners[mask]) > 1:
            problems.append(f"{mask}: mask matches several defect images: {', '.join(map(str, owners[mask]))}")
    return matched, problems
