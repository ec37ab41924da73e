"""VisA (Zou et al., 2022), its 1-class split.

``visa``::

    <root>/split_csv/1cls.csv    columns object,split,label,image,mask

  Paths are relative to root; split is ``train`` or ``test``; label is
  ``normal`` or ``anomaly`` (both in any case); mask is empty for normal rows. Train rows labelled
  normal are the references; anomalous train rows are not used. The classes are
  the distinct ``object`` values; each needs a normal train row. An image listed
  twice is an error.
"""

from __future__ import annotations

from pathlib import Path

from .core import Found
from .listing import TableFormat, find_table

VISA_CSV = Path("split_csv") / "1cls.csv"
VISA = TableFormat(
    columns={"class": "object", "split": "split", "label": "label", "image": "image", "mask": "mask"},
    labels={"normal": 0, "anomaly": 1},
)


def find_visa(root: Path) -> tuple[list[Found], list[str]]:
    """VisA at ``root`` (the folder holding ``split_csv/``)."""
    return find_table(root / VISA_CSV, root, VISA)
