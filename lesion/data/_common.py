"""Helpers shared by the layout loaders: file indexes, CSV reading, metadata normalisation, final checks.

Loaders only list files and read tables; pixels are read later by :mod:`lesion.data.io`. pandas is imported
inside :func:`read_table` so that ``import lesion.data`` stays light.
"""
from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lesion.data.io import IMAGE_EXTENSIONS
from lesion.data.records import MALIGNANT_DX, DataReport, Dataset, Domain, Record
from lesion.errors import DataError

Progress = Callable[[int, int], None]

#: Values that mean "not recorded" in the tables we read (HAM10000 writes "unknown", NIH nothing).
_MISSING = {"", "nan", "none", "null", "na", "n/a", "unknown", "?"}


def is_image_name(name: str) -> bool:
    """True for a visible file with an image extension (macOS ``._x.jpg`` resource forks are skipped)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name; [] when it is not a folder.

    Raises:
        DataError: an entry cannot be examined (a symbolic-link loop, a file that vanished mid-listing with
            another error, no permission): one line naming it.
    """
    if not folder.is_dir():
        return []
    out = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if not is_image_name(e.name):
                    continue
                try:
                    if e.is_file():
                        out.append(Path(e.path))
                except OSError as err:
                    what = ("is a symbolic link that loops (it points, through links, back at itself)"
                            if err.errno == errno.ELOOP else f"cannot be read ({err.strerror or err})")
                    raise DataError(f"{e.path} {what}; remove or fix it.") from None
    except PermissionError as err:
        raise DataError(f"Cannot list {folder} ({err.strerror}).") from None
    return sorted(out)


def index_images(
    folders: Iterable[Path],
    *,
    strip_suffixes: Sequence[str] = (),
    keep: Callable[[str], bool] | None = None,
    require_suffix: bool = False,
) -> dict[str, Path]:
    """Map id -> file over the image files directly inside ``folders``.

    Args:
        folders: folders to scan (missing ones are ignored).
        strip_suffixes: stem suffixes removed to form the id (``_segmentation`` turns a mask name into its
            image id); the first suffix that matches is removed.
        keep: optional filter on the id.
        require_suffix: only files whose stem ends with one of ``strip_suffixes`` (masks sharing a folder
            with their images).

    Raises:
        DataError: two files give the same id (``a.png`` and ``a.jpg``), which would make ids ambiguous.
    """
    index: dict[str, Path] = {}
    for folder in folders:
        for path in list_images(Path(folder)):
            key = path.stem
            for suffix in strip_suffixes:
                if key.endswith(suffix):
                    key = key[: -len(suffix)]
                    break
            else:
                if require_suffix:
                    continue
            if keep is not None and not keep(key):
                continue
            if key in index and index[key] != path:
                raise DataError(
                    f"Two files have the same id '{key}': {index[key]} and {path}. Remove one so that ids are unique."
                )
            index[key] = path
    return index


def read_header(csv: Path) -> list[str]:
    """Column names of a CSV (first line, stripped); [] when the file cannot be read."""
    try:
        with open(csv, encoding="utf-8-sig", errors="replace") as f:
            line = f.readline()
    except OSError:
        return []
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]


def read_table(csv: Path, required: Sequence[str] = (), *, header: bool = True):
    """Read a CSV as strings (no NA guessing: empty cells stay ``""``) and check required columns.

    Args:
        csv: the file.
        required: columns that must be present; the error names the first missing one and the file.
        header: False for header-less files (ISIC 2016 ground truth); columns are then 0, 1, ...

    Returns:
        pandas DataFrame with stripped column names and ``str`` cells.

    Raises:
        DataError: the file is missing, unreadable, not a CSV, or lacks a required column.
    """
    import pandas as pd

    if not csv.is_file():
        raise DataError(f"Label file not found: {csv}")
    try:
        df = pd.read_csv(
            csv, dtype=str, keep_default_na=False, header=0 if header else None, skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"Cannot read {csv.name} as a CSV table ({e}).") from e
    if header:
        df.columns = [str(c).strip() for c in df.columns]
    for col in required:
        if col not in df.columns:
            found = ", ".join(map(str, df.columns)) or "no columns"
            raise DataError(f"{csv.name} is missing the required column '{col}' (found: {found}). File: {csv}")
    return df.apply(lambda s: s.str.strip()) if len(df) else df


def clean_str(value: Any) -> str | None:
    """Stripped string, or None for empty / NaN / 'unknown'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    return None if s.lower() in _MISSING else s


#: Ages outside this range (years) are data errors: set unknown and counted.
AGE_RANGE = (0.0, 120.0)


def parse_age(value: Any) -> tuple[float | None, str | None]:
    """``(age in years, None)`` for ``45``, ``45.0``, ``058Y``; ``(None, None)`` when missing; ``(None, raw)``
    for a value that is not a number of years in :data:`AGE_RANGE` ("forty", "-5", "300")."""
    s = clean_str(value)
    if s is None:
        return None, None
    m = re.match(r"^(\d+(?:\.\d*)?)\s*[yY]?$", s)
    if not m:
        return None, s
    age = float(m.group(1))
    if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        return None, s
    return age, None


def norm_age(value: Any) -> float | None:
    """Age in years as float; accepts ``45``, ``45.0`` and NIH/DICOM style ``058Y``; None when missing or not
    a number in 0-120 (use :class:`Problems` ``.age`` to have such values counted)."""
    return parse_age(value)[0]


class Problems:
    """Collects a loader's data problems while it reads; :meth:`report` makes the :class:`DataReport`.

    Args:
        label_file: the label table (its name is used in the report lines), or None.
        image_folders: folders searched for the images rows name (for the "rows without image" line).
    """

    def __init__(self, label_file: Path | str | None = None, image_folders: Sequence[Path] = ()) -> None:
        self.label_file = label_file.name if isinstance(label_file, Path) else label_file
        self.image_folders = tuple(str(p) for p in image_folders)
        self.rows = 0
        self.no_metadata: list[str] = []
        self.missing: list[str] = []
        self.bad_ages: list[tuple[str, str]] = []
        self.duplicates: dict[str, int] = {}
        self.conflicts: list[str] = []
        self.notes: list[str] = []

    def age(self, record_id: str, value: Any) -> float | None:
        """The age, or None; a present value that is not a number in 0-120 is counted."""
        age, bad = parse_age(value)
        if bad is not None:
            self.bad_ages.append((record_id, bad))
        return age

    def unique_rows(self, rows: Iterable[dict], key: Callable[[dict], str],
                    label: Callable[[dict], Any] | None = None) -> dict[str, dict]:
        """Rows by id, first row kept; later rows of the same id are counted (and ids whose ``label`` differs
        between rows are listed as conflicting)."""
        out: dict[str, dict] = {}
        for row in rows:
            k = key(row)
            if k in out:
                self.duplicates[k] = self.duplicates.get(k, 1) + 1
                if label is not None and label(row) != label(out[k]) and k not in self.conflicts:
                    self.conflicts.append(k)
                continue
            out[k] = row
        self.rows = len(out)
        return out

    def report(self, images: int, notes: Sequence[str] = ()) -> DataReport:
        return DataReport(
            images=images, label_file=self.label_file, rows=self.rows, image_folders=self.image_folders,
            no_metadata=tuple(sorted(self.no_metadata)), missing_images=tuple(self.missing),
            bad_ages=tuple(self.bad_ages), duplicate_ids=tuple(self.duplicates.items()),
            conflicting_ids=tuple(self.conflicts), notes=tuple(self.notes) + tuple(notes),
        )


def norm_sex(value: Any) -> str | None:
    """``'male'`` / ``'female'`` from M/F/male/Female/...; None for anything else (unknown, other)."""
    s = (clean_str(value) or "").lower()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(s)


def norm_target(value: Any, where: str) -> int | None:
    """0/1 target from ``0``, ``1``, ``0.0``, ``1.0``, ``true``/``false``; None when empty.

    Raises:
        DataError: any other value (``where`` names the file and row for the message).
    """
    s = clean_str(value)
    if s is None:
        return None
    s = s.lower()
    if s in ("1", "1.0", "true", "yes", "malignant"):
        return 1
    if s in ("0", "0.0", "false", "no", "benign"):
        return 0
    raise DataError(f"{where}: target must be 0 or 1, got '{value}'.")


def derm_target(diagnosis: str | None) -> int | None:
    """Binary derm target: 1 for a malignant diagnosis (:data:`MALIGNANT_DX`), 0 otherwise, None if unknown."""
    if diagnosis is None:
        return None
    return int(diagnosis.lower() in MALIGNANT_DX)


def unknown_values_error(table: Path, column: str, found: dict[str, list[str]], accepted: Iterable[str],
                         extra: str = "") -> DataError:
    """DataError naming the values of ``column`` this loader does not know (with their row counts and an id
    each) and the values it accepts."""
    n = sum(len(v) for v in found.values())
    vals = ", ".join(f"'{v}' ({len(ids)} row{'s' if len(ids) > 1 else ''}, e.g. {ids[0]})"
                     for v, ids in sorted(found.items(), key=lambda kv: -len(kv[1]))[:8])
    more = ", ..." if len(found) > 8 else ""
    tail = f" ({extra})" if extra else ""
    return DataError(f"{table.name}: {n} rows have a {column} this loader does not know: {vals}{more}. "
                     f"Accepted: {', '.join(sorted(accepted))}{tail}. Fix or remove those rows.")


def missing_images_note(csv: Path, missing: list[str], total: int, searched: Sequence[Path]) -> str:
    """Warning text for CSV rows whose image file is absent (they are skipped)."""
    eg = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    where = ", ".join(str(p) for p in searched) or "the data-set folder"
    return f"{len(missing)} of {total} rows of {csv.name} name images that are not in {where}; they were skipped (e.g. {eg})."


def raise_if_none_left(records: list, csv: Path, total: int, searched: Sequence[Path]) -> None:
    """Raise when every row of a label table points at a missing image."""
    if total and not records:
        where = ", ".join(str(p) for p in searched) or "the data-set folder"
        raise DataError(f"None of the {total} rows of {csv.name} has its image file in {where}.")


def finish(
    *,
    name: str,
    layout: str,
    domain: Domain,
    root: Path,
    records: list[Record],
    warnings: Sequence[str] = (),
    synthetic: bool = False,
    problems: Problems | None = None,
) -> Dataset:
    """Sort records by id, check ids are unique, derive classes and build the :class:`Dataset`.

    ``classes`` are the sorted findings when any record has findings (multi-label), else the sorted diagnoses.
    ``problems`` (what the loader counted) and ``warnings`` become ``Dataset.report``; ``Dataset.warnings`` is
    ``report.lines()``.

    Raises:
        DataError: no records, or duplicate ids.
    """
    if not records:
        raise DataError(f"No images found for the {layout} layout in {root}.")
    records = sorted(records, key=lambda r: r.id)
    dups = sorted({a.id for a, b in zip(records, records[1:]) if a.id == b.id})
    if dups:
        eg = ", ".join(dups[:5]) + (", ..." if len(dups) > 5 else "")
        raise DataError(f"{len(dups)} image ids appear more than once in {root} ({eg}); ids must be unique.")
    findings = sorted({f for r in records for f in r.findings})
    if findings:
        classes = tuple(findings)
    else:
        classes = tuple(sorted({r.diagnosis for r in records if r.diagnosis is not None}))
    report = (problems or Problems()).report(len(records), warnings)
    return Dataset(
        name=name, layout=layout, domain=domain, root=root, records=records, classes=classes,
        synthetic=synthetic, warnings=tuple(report.lines()), report=report,
    )


def tick(progress: Progress | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when a callback was given."""
    if progress is not None:
        progress(done, total)
