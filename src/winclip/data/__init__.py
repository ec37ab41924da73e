"""Evaluation datasets: MVTec-AD, VisA and folder layouts, validated up front (SPEC §6)."""

from winclip.data.datasets import (
    IMAGE_EXTENSIONS,
    LAYOUTS,
    ClassData,
    DatasetError,
    Sample,
    load_dataset,
    load_mask,
    resize_mask,
    sample_references,
)

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
