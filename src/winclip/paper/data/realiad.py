"""Real-IAD (Wang et al., CVPR 2024), evaluated one image at a time.

``realiad`` and ``realiad-sv`` (``--root`` is the image folder of one resolution)::

    Real-IAD/realiad_256/<class>/OK/S0001/<class>_0001_OK_C1_<time>.jpg     images; realiad_512/, realiad_1024/
    Real-IAD/realiad_256/<class>/NG/<code>/S0123/<...>_NG_C3_<time>.jpg     and realiad_raw/ alike
    Real-IAD/realiad_256/<class>/NG/<code>/S0123/<...>_NG_C3_<time>_mask.png
    Real-IAD/realiad_jsons/<class>.json       the split ``realiad`` reads
    Real-IAD/realiad_jsons_sv/<class>.json    the split ``realiad-sv`` reads

  A JSON holds ``meta`` (``prefix``, e.g. ``"audiojack/"``, and ``normal_class``,
  ``"OK"``) and ``train`` and ``test`` lists of entries with ``image_path``,
  ``mask_path`` (null for normal entries) and ``anomaly_class`` (``category``
  is not used): the image is ``<root>/<prefix><image_path>``, its mask
  ``<root>/<prefix><mask_path>`` (prefix ``<class>/`` when meta gives none). An
  entry is normal when its ``anomaly_class`` is ``normal_class`` (``OK`` when
  meta gives none) and anomalous otherwise, its
  defect type being that code (``AK``, ``BX``, ...). The entry's label is what
  counts, not its folder: views of an NG sample that do not show the defect are
  listed as OK. The class is the JSON's name; a key other than ``meta``,
  ``train`` and ``test`` is an error. The JSON folder is looked up beside root,
  then one level down as anomalib arranges it (``Real-IAD/realiad_jsons/realiad_jsons_sv/``).

  Views: every Real-IAD sample is photographed by five cameras, C1 to C5, and
  WinCLIP scores single images, so every listed image is a sample of its own;
  no multi-view fusion is done. ``realiad`` reads the standard split
  (``realiad_jsons``): all five views are independent test images and the
  references are drawn from the normal training images of all views.
  ``realiad-sv`` reads the dataset's single-view split (``realiad_jsons_sv``,
  camera C1 only). Both follow the listed-layout rules of ``winclip.paper.data.listing``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .core import DatasetError, Found
from .listing import SPLITS, Entry, Listing, expected

KEYS = ("meta", *SPLITS)


def find_realiad(root: Path, json_set: str) -> tuple[list[Found], list[str]]:
    """Real-IAD images at ``root`` (``Real-IAD/realiad_<resolution>``), split by the JSONs of ``json_set``."""
    folder = _json_folder(root, json_set)
    listing, problems = Listing(), []
    for table in sorted(folder.glob("*.json")):
        problems += _add_json(table, root, listing)
    return listing.classes(lambda name: str(folder / f"{name}.json")), problems


def _json_folder(root: Path, json_set: str) -> Path:
    """The first of ``<root>/../<json_set>`` and ``<root>/../realiad_jsons/<json_set>`` holding JSON files."""
    candidates = [root.resolve().parent / json_set, root.resolve().parent / "realiad_jsons" / json_set]
    for folder in candidates:
        if any(folder.glob("*.json")):
            return folder
    hint = f"root is the image folder of one resolution, e.g. Real-IAD/realiad_256; {json_set} is read beside it"
    raise DatasetError([f"{root}: no <class>.json files in {candidates[0]} or {candidates[1]} ({hint})"])


def _add_json(table: Path, root: Path, listing: Listing) -> list[str]:
    """Add the entries of one class's JSON to ``listing``; return the problems of the file itself."""
    try:
        doc = json.loads(table.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return [f"{table}: not readable JSON ({err})"]
    if not isinstance(doc, dict):
        return [f"{table}: expected an object with train and test lists"]
    meta = doc["meta"] if isinstance(doc.get("meta"), dict) else {}
    prefix, normal = meta.get("prefix", f"{table.stem}/"), meta.get("normal_class", "OK")
    if not isinstance(prefix, str) or not isinstance(normal, str):
        return [f"{table}: meta's prefix and normal_class must be strings"]
    base = root / prefix
    problems = [f"{table}: unknown split {key!r} (expected {expected(KEYS)})" for key in doc if key not in KEYS]
    for split in SPLITS:
        items = doc.get(split)
        if not isinstance(items, list):
            problems.append(f"{table}: no {split} list")
            continue
        for index, item in enumerate(items):
            where = f"{table}: {split}[{index}]"
            if not _is_entry(item):
                problems.append(f"{where}: expected image_path and anomaly_class strings, mask_path a string or null")
                continue
            code = item["anomaly_class"]
            mask = item.get("mask_path") or ""
            listing.add(Entry(where, table.stem, base, split, int(code != normal), code, item["image_path"], mask))
    return problems


def _is_entry(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("image_path"), str)
        and isinstance(item.get("anomaly_class"), str)
        and isinstance(item.get("mask_path"), (str, type(None)))
    )
