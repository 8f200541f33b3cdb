"""The one record model every loader produces.

A :class:`Record` is one image with its optional mask, labels, metadata and group id; a :class:`Dataset`
is a list of records plus what is known about the collection (layout, domain, classes). Loaders only read
file lists and tables: pixels are read lazily by :mod:`lesion.data.io`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

Domain = Literal["derm", "cxr"]

#: Diagnoses counted as malignant for the binary target (HAM10000 / ISIC codes and PH2 names).
MALIGNANT_DX = frozenset({"mel", "bcc", "akiec", "melanoma", "scc"})


@dataclass(frozen=True)
class Record:
    """One image of a data set.

    Attributes:
        id: unique id inside the data set (file stem, e.g. ``ISIC_0024306``).
        image_path: path of the image file.
        mask_path: path of the binary mask (lesion or both lungs), or None when the layout has none.
        diagnosis: single-label class name (``mel``, ``nv``, ``melanoma``, ``tuberculosis``...), or None.
        findings: multi-label findings (NIH ChestX-ray14 / demo X-rays); empty tuple for "No Finding".
        target: binary target (1 = malignant / abnormal), or None when unknown.
        group: patient or lesion id; all images of a group stay in one fold.
        meta: metadata such as ``age`` (years, float or None), ``sex`` ("male"/"female"/None),
            ``site`` (anatomical site or None), ``view`` (X-ray view position).
    """

    id: str
    image_path: Path
    mask_path: Path | None = None
    diagnosis: str | None = None
    findings: tuple[str, ...] = ()
    target: int | None = None
    group: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def has_mask(self) -> bool:
        return self.mask_path is not None


@dataclass
class Dataset:
    """A loaded data set.

    Attributes:
        name: human-readable name (e.g. ``"HAM10000"``, ``"Demo dermoscopy (synthetic)"``).
        layout: layout key from :data:`lesion.data.layouts.LAYOUTS` (``ham10000``, ``isic``, ``plain``...).
        domain: ``"derm"`` or ``"cxr"``.
        root: folder the data set was read from.
        records: the images, in a stable order (sorted by id).
        classes: diagnosis or finding names present, sorted; empty when unlabelled.
        synthetic: True for the built-in generated demo set (the UI labels it so).
        warnings: readable notes from the loader about what it skipped or could not interpret
            (CSV rows whose image is missing, labels outside the known vocabulary...); pages show them.
    """

    name: str
    layout: str
    domain: Domain
    root: Path
    records: list[Record]
    classes: tuple[str, ...] = ()
    synthetic: bool = False
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def by_id(self, record_id: str) -> Record:
        for r in self.records:
            if r.id == record_id:
                return r
        raise KeyError(record_id)

    @property
    def has_masks(self) -> bool:
        return any(r.mask_path is not None for r in self.records)

    @property
    def has_labels(self) -> bool:
        return any(r.target is not None or r.diagnosis is not None or r.findings for r in self.records)

    def fingerprint(self) -> str:
        """Stable key for caches: layout, root and the file list (not the pixels)."""

        h = hashlib.sha1(f"{self.layout}|{self.root}|{len(self.records)}".encode())
        for r in self.records:
            h.update(f"{r.id}|{r.image_path}|{r.mask_path}|{r.diagnosis}".encode())
        return h.hexdigest()[:16]

    def to_frame(self):
        """One row per record: id, diagnosis, target, findings, group, has_mask and the metadata columns."""
        import pandas as pd

        rows = []
        for r in self.records:
            row = {
                "id": r.id,
                "diagnosis": r.diagnosis,
                "target": r.target,
                "findings": "|".join(r.findings),
                "group": r.group,
                "has_mask": r.mask_path is not None,
            }
            row.update(dict(r.meta))
            rows.append(row)
        return pd.DataFrame(rows)
