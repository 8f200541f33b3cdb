"""Data layer: one record model (:class:`Record`, :class:`Dataset`) and loaders for the real folder layouts.

``load_dataset(path)`` detects the layout (HAM10000, ISIC task 1, SIIM-ISIC 2020, PH2, Chest X-ray Masks and
Labels, Montgomery, NIH ChestX-ray14, plain folder) and lists the files; pixels are read later with
:func:`read_image` / :func:`read_mask` / :func:`load_sample`. Importing this package stays light (no torch,
no pandas: loaders import pandas when they run).
"""
from lesion.data.io import ReadNote, read_image, read_mask, resize_image, summarise_notes, to_uint8_rgb
from lesion.data.layouts import LAYOUTS, Layout, detect_layout, load_dataset, load_sample
from lesion.data.records import MALIGNANT_DX, DataReport, Dataset, Record

__all__ = [
    "LAYOUTS",
    "MALIGNANT_DX",
    "DataReport",
    "Dataset",
    "Layout",
    "ReadNote",
    "Record",
    "detect_layout",
    "load_dataset",
    "load_sample",
    "read_image",
    "read_mask",
    "resize_image",
    "summarise_notes",
    "to_uint8_rgb",
]
