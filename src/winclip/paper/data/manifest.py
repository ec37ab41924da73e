"""A CSV manifest that lists every image, for datasets in no other layout.

``manifest`` (``--root`` is the CSV file itself, not a folder)::

    path,label,mask,split,class
    widget/train/000.png,good,,train,widget
    widget/test/000.png,good,,test,widget
    widget/test/001.png,anomaly,widget/masks/001.png,test,widget

  Columns may come in any order; other columns are ignored. ``path`` and
  ``mask`` are relative to the CSV's folder (absolute paths are used as they
  are). ``split`` is ``train`` or ``test``. ``label``, in any case, is one of
  ``0``, ``good``, ``normal``, ``ok`` for normal images and one of ``1``,
  ``anomaly``, ``anomalous``, ``bad``, ``defect``, ``ng`` for anomalous ones.
  ``mask`` is required for anomalous test rows and not used elsewhere (leave it
  empty). Normal train rows are the class's candidate few-shot references;
  anomalous train rows are not used; each class needs at least one normal train
  row, and good and anomalous test rows. An image listed twice is an error.
  Anomalous images have the defect type "anomaly".
"""

from __future__ import annotations

from pathlib import Path

from .core import Found
from .listing import TableFormat, find_table

MANIFEST = TableFormat(
    columns={"class": "class", "split": "split", "label": "label", "image": "path", "mask": "mask"},
    labels={
        **dict.fromkeys(("0", "good", "normal", "ok"), 0),
        **dict.fromkeys(("1", "anomaly", "anomalous", "bad", "defect", "ng"), 1),
    },
)


def find_manifest(table: Path) -> tuple[list[Found], list[str]]:
    """The dataset listed in the CSV file ``table``."""
    return find_table(table, table.parent, MANIFEST)
