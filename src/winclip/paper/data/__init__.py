"""Evaluation datasets, validated up front (docs/method.md §6): ``LAYOUTS`` names them, ``layouts.py`` where each is."""

from winclip.paper.data.core import (
    IMAGE_EXTENSIONS,
    ClassData,
    DatasetError,
    Sample,
    load_mask,
    resize_mask,
    sample_references,
)
from winclip.paper.data.layouts import LAYOUTS, load_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "ClassData",
    "DatasetError",
    "Sample",
    "load_dataset",
    "load_mask",
    "resize_mask",
    "sample_references",
]
