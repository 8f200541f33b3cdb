"""The one record model every loader produces.

A :class:`Record` is one image with its optional mask, labels, metadata and group id; a :class:`Dataset`
is a list of records plus what is known about the collection (layout, domain, classes). Loaders only read
file lists and tables: pixels are read lazily by :mod:`lesion.data.io`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

Domain = Literal["derm", "cxr"]

#: Diagnoses counted as malignant for the binary target (HAM10000 / ISIC codes, PH2 names, ISIC 2016's word).
MALIGNANT_DX = frozenset({"mel", "bcc", "akiec", "melanoma", "scc", "malignant"})


#: (algorithm, path, size, mtime_ns, ctime_ns, inode) -> hex digest: each file version is hashed once per process.
_DIGESTS: dict[tuple, str] = {}


def file_version(path: str | Path) -> tuple | None:
    """``(absolute path, size, mtime_ns, ctime_ns, inode)`` of a file, None when it does not exist.

    Writing a file always moves its ctime (which ``os.utime`` cannot set back), and a replacement by rename has
    another inode, so a file overwritten with the same size and a restored mtime still has a new version.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_content_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes, memoised per :func:`file_version` (``"missing"`` when there is no file)."""
    version = file_version(path)
    if version is None:
        return "missing"
    key = (algorithm, *version)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.new(algorithm)
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            return "unreadable"
        digest = h.hexdigest()
        if file_version(path) == version:  # not rewritten while we read it
            _DIGESTS[key] = digest
    return digest


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


def _eg(items, n: int = 3) -> str:
    items = list(items)
    return ", ".join(str(i) for i in items[:n]) + (", ..." if len(items) > n else "")


@dataclass(frozen=True)
class DataReport:
    """What a loader found wrong in a data set, counted and named, never hidden.

    Loaders fill it (:func:`lesion.data._common.finish`); ``Dataset.warnings`` holds the same lines. Errors
    that make labels meaningless (an unknown HAM10000 ``dx``) are raised as ``DataError`` instead.

    Attributes:
        images: records in the data set.
        label_file: name of the label table read, or None.
        rows: rows read from the label table (after dropping duplicate ids: the distinct ids).
        image_folders: folders searched for the images the rows name.
        no_metadata: ids of images that have no row in the label table (kept, unlabelled).
        missing_images: ids named by table rows whose image file is absent (those rows are skipped).
        bad_ages: ``(id, raw value)`` of ages that are not a number in 0-120 ("forty", -5, 300): set unknown.
        duplicate_ids: ``(id, rows)`` of ids listed in more than one table row: the first row is used.
        conflicting_ids: the duplicated ids whose rows disagree on the diagnosis / label.
        notes: the loader's other readable notes (masks missing, labels outside the known list...).
    """

    images: int = 0
    label_file: str | None = None
    rows: int = 0
    image_folders: tuple[str, ...] = ()
    no_metadata: tuple[str, ...] = ()
    missing_images: tuple[str, ...] = ()
    bad_ages: tuple[tuple[str, str], ...] = ()
    duplicate_ids: tuple[tuple[str, int], ...] = ()
    conflicting_ids: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is nothing to report."""
        return not (self.no_metadata or self.missing_images or self.bad_ages or self.duplicate_ids or self.notes)

    def counts(self) -> dict[str, int]:
        """Problem counts for a summary table: images, without metadata, rows without image, bad ages, duplicates."""
        return {
            "images": self.images,
            "images without metadata": len(self.no_metadata),
            "rows without image": len(self.missing_images),
            "ages not in 0-120": len(self.bad_ages),
            "duplicate ids": len(self.duplicate_ids),
        }

    def lines(self) -> list[str]:
        """Readable one-line statements, counted problems first, then the loader's notes; [] when all is well."""
        table = self.label_file or "the label table"
        out = []
        if self.no_metadata:
            n = len(self.no_metadata)
            out.append(f"{n} of {self.images} images have no row in {table}; they are kept, unlabelled "
                       f"(no diagnosis, age or sex): {_eg(self.no_metadata)}.")
        if self.missing_images:
            n = len(self.missing_images)
            where = ", ".join(self.image_folders) or "the data-set folder"
            of = f" of {self.rows}" if self.rows else ""
            out.append(f"{n}{of} rows of {table} name images that are not in {where}; they were skipped "
                       f"(e.g. {_eg(self.missing_images)}).")
        if self.bad_ages:
            eg = _eg(f"'{v}' ({i})" for i, v in self.bad_ages)
            one = len(self.bad_ages) == 1
            out.append(f"{len(self.bad_ages)} {'age' if one else 'ages'} in {table} {'is' if one else 'are'} not a "
                       f"number of years in 0-120 and {'was' if one else 'were'} set to unknown: {eg}.")
        if self.duplicate_ids:
            eg = _eg(f"{i} ({k} rows)" for i, k in self.duplicate_ids)
            clash = (f"; {len(self.conflicting_ids)} of them disagree on the label ({_eg(self.conflicting_ids)})"
                     if self.conflicting_ids else "")
            one = len(self.duplicate_ids) == 1
            out.append(f"{len(self.duplicate_ids)} image {'id appears' if one else 'ids appear'} in more than one row "
                       f"of {table}; the first row was used: {eg}{clash}.")
        return out + [n for n in self.notes if n not in out]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists of ids; for CLI ``--json`` output and logs)."""
        return {"images": self.images, "label_file": self.label_file, "rows": self.rows,
                "image_folders": list(self.image_folders), "no_metadata": list(self.no_metadata),
                "missing_images": list(self.missing_images), "bad_ages": [list(p) for p in self.bad_ages],
                "duplicate_ids": [list(p) for p in self.duplicate_ids],
                "conflicting_ids": list(self.conflicting_ids), "notes": list(self.notes)}


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
            For loaded data sets these are ``report.lines()``.
        report: the counted data problems (:class:`DataReport`): images without metadata, rows without
            image, ages out of range, duplicate ids.
    """

    name: str
    layout: str
    domain: Domain
    root: Path
    records: list[Record]
    classes: tuple[str, ...] = ()
    synthetic: bool = False
    warnings: tuple[str, ...] = ()
    report: DataReport = field(default_factory=DataReport, compare=False)

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
        """Stable name of the data set: layout, root and the file list (not the pixels).

        It names the data set's cache folder (review tags live there, so it must not change when a file is
        edited); whatever depends on the pixels keys on :meth:`content_fingerprint` instead.
        """

        h = hashlib.sha1(f"{self.layout}|{self.root}|{len(self.records)}".encode())
        for r in self.records:
            h.update(f"{r.id}|{r.image_path}|{r.mask_path}|{r.diagnosis}".encode())
        return h.hexdigest()[:16]

    def content_fingerprint(self) -> str:
        """:meth:`fingerprint` plus the sha1 of the bytes of every image and mask file, and the labels.

        Images overwritten under the same names (even with the same size and mtime) give another value. Each
        file is hashed once per process and file version (:func:`file_content_digest`): the 4,242 HAM10000 JPEGs
        (42 MB) took 0.2 s the first time (0.8 s with a cold disk cache) and 0.05-0.08 s after (one stat per
        file) on two CPU cores.
        """
        h = hashlib.sha1(self.fingerprint().encode())
        for r in self.records:
            h.update(f"{r.id}|{r.target}|{'/'.join(r.findings)}|{file_content_digest(r.image_path)}|"
                     f"{file_content_digest(r.mask_path) if r.mask_path is not None else '-'}".encode())
        return h.hexdigest()[:20]

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
