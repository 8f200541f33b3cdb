"""Loaders for the chest X-ray layouts: "Chest X-ray Masks and Labels", Montgomery native, NIH ChestX-ray14."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from lesion.data._common import (
    Problems,
    Progress,
    clean_str,
    finish,
    index_images,
    norm_age,
    norm_sex,
    norm_target,
    raise_if_none_left,
    read_header,
    read_table,
    tick,
)
from lesion.data.io import read_mask
from lesion.data.records import Dataset, Record
from lesion.errors import DataError, MaskShapeError
from lesion.paths import atomic_target, cache_dir

_TB_DIGIT = re.compile(r"_([01])$")
_SOURCES = {"MCUCXR": "Montgomery", "CHNCXR": "Shenzhen"}
TB_DX = {0: "normal", 1: "tuberculosis"}


def _tb_label(stem: str) -> int | None:
    """Trailing ``_0``/``_1`` of an NLM file name (``MCUCXR_0001_0``) = normal/tuberculosis."""
    m = _TB_DIGIT.search(stem)
    return int(m.group(1)) if m else None


def _source(stem: str) -> str | None:
    return _SOURCES.get(stem.split("_")[0].upper())


# ------------------------------------------------------------------------ Chest X-ray Masks and Labels

def _cxr_dirs(folder: Path) -> tuple[Path, Path] | None:
    for base in (folder / "Lung Segmentation", folder):
        if (base / "CXR_png").is_dir() and (base / "masks").is_dir():
            return base / "CXR_png", base / "masks"
    return None


def detect_cxr_masks(folder: Path, csv: Path | None = None) -> bool:
    return _cxr_dirs(folder) is not None


def load_cxr_masks(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """Kaggle "Chest X-ray Masks and Labels": ``Lung Segmentation/CXR_png/`` + ``Lung Segmentation/masks/``.

    Montgomery masks share the image name; Shenzhen masks add ``_mask``. The label is the trailing ``_0``/``_1``
    (normal/tuberculosis), or the ``tuberculosis`` column of an optional ``labels.csv`` (image, mask, source,
    tuberculosis) which then also lists which images belong to the set. Each image is its own group (one
    X-ray per patient in both source sets).
    """
    dirs = _cxr_dirs(root)
    if dirs is None:
        raise DataError(f"No 'Lung Segmentation/CXR_png' and 'masks' folders in {root}.")
    image_dir, mask_dir = dirs
    images = index_images([image_dir])
    masks = index_images([mask_dir], strip_suffixes=("_mask",))
    csv = csv or (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    problems = Problems(csv, [image_dir])
    rows: dict[str, dict] = {}
    if csv is not None:
        df = read_table(csv, ("image",))
        rows = problems.unique_rows(df.to_dict("records"), key=lambda r: Path(r["image"]).stem,
                                    label=lambda r: clean_str(r.get("tuberculosis")))
        problems.missing += [k for k in rows if k not in images]
        keys = [k for k in rows if k in images]
    else:
        keys = list(images)
    records = []
    for key in keys:
        row = rows.get(key, {})
        label = _tb_label(key)
        if "tuberculosis" in row:
            label = norm_target(row["tuberculosis"], f"{csv.name}, image {key}")
        mask = masks.get(key)
        if row.get("mask"):
            mask = (mask_dir / row["mask"]) if (mask_dir / row["mask"]).is_file() else mask
        records.append(
            Record(
                id=key, image_path=images[key], mask_path=mask,
                diagnosis=TB_DX[label] if label is not None else None, target=label, group=key,
                meta={"age": None, "sex": None, "source": clean_str(row.get("source")) or _source(key)},
            )
        )
    if csv is not None:
        raise_if_none_left(records, csv, len(rows), [image_dir])
    no_mask = sum(r.mask_path is None for r in records)
    if no_mask:
        problems.notes.append(f"{no_mask} of {len(records)} X-rays have no lung mask in {mask_dir.name}/.")
    unlisted = len(set(images) - set(rows)) if csv is not None else 0
    if unlisted:  # labels.csv selects the set: say how many images it leaves out
        problems.notes.append(f"{unlisted} images in {image_dir.name}/ have no row in {csv.name} and are not part "
                              "of this data set.")
    return finish(name="Chest X-ray Masks and Labels", layout="cxr_masks", domain="cxr", root=root,
                  records=records, problems=problems)


# ---------------------------------------------------------------------------------- Montgomery native

def detect_montgomery(folder: Path, csv: Path | None = None) -> bool:
    return (folder / "CXR_png").is_dir() and (folder / "ManualMask" / "leftMask").is_dir()


def _merged_mask(left: Path | None, right: Path | None, cache: Path, stem: str) -> Path:
    """Union of the left and right lung masks, written once as a 0/255 PNG into ``cache`` (never beside the data).

    The cached file is rebuilt when a source mask is newer than it.
    """
    from PIL import Image

    out = cache / f"{stem}.png"
    sources = [p for p in (left, right) if p is not None]
    if out.is_file() and all(out.stat().st_mtime >= p.stat().st_mtime for p in sources):
        return out
    parts = [read_mask(p) for p in sources]
    if len(parts) == 2 and parts[0].shape != parts[1].shape:
        raise MaskShapeError(f"Left and right lung masks of {stem} differ in size: {parts[0].shape} vs {parts[1].shape}.")
    merged = np.logical_or.reduce(parts) if len(parts) > 1 else parts[0]
    with atomic_target(out) as tmp:  # a parallel reader never sees half a file
        Image.fromarray(merged.astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
    return out


def _clinical_reading(path: Path, problems: Problems | None = None) -> dict:
    """Sex, age and the finding text from a Montgomery ``ClinicalReadings/*.txt`` ("Patient's Sex: F")."""
    if not path.is_file():
        return {}
    out, rest = {}, []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if "sex" in key.lower():
            out["sex"] = norm_sex(value)
        elif "age" in key.lower():
            out["age"] = problems.age(path.stem, value) if problems is not None else norm_age(value)
        elif line.strip():
            rest.append(line.strip())
    out["reading"] = " ".join(rest) or None
    return out


def load_montgomery(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """Montgomery County native layout: ``CXR_png/`` + ``ManualMask/leftMask/`` + ``ManualMask/rightMask/``
    (+ optional ``ClinicalReadings/*.txt``).

    The two lung masks are merged into one mask per image, cached under
    ``lesion.paths.cache_dir()/masks/montgomery-<hash of root>/`` on the first load (the user's folder stays
    read-only); ``Record.mask_path`` points at the cached PNG. ``progress`` reports the merge.
    """

    images = index_images([root / "CXR_png"])
    lefts = index_images([root / "ManualMask" / "leftMask"])
    rights = index_images([root / "ManualMask" / "rightMask"])
    cache = cache_dir() / "masks" / f"montgomery-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    records, one_side = [], []
    problems = Problems("ClinicalReadings/")
    for i, (key, path) in enumerate(sorted(images.items())):
        left, right = lefts.get(key), rights.get(key)
        if (left is None) != (right is None):
            one_side.append(key)
        mask = _merged_mask(left, right, cache, key) if (left or right) else None
        label = _tb_label(key)
        reading = _clinical_reading(root / "ClinicalReadings" / f"{key}.txt", problems)
        records.append(
            Record(
                id=key, image_path=path, mask_path=mask, diagnosis=TB_DX[label] if label is not None else None,
                target=label, group=key,
                meta={"age": reading.get("age"), "sex": reading.get("sex"), "source": "Montgomery",
                      "reading": reading.get("reading")},
            )
        )
        tick(progress, i + 1, len(images))
    if one_side:
        problems.notes.append(f"{len(one_side)} X-rays have only one lung mask (e.g. {', '.join(one_side[:3])}); "
                              "their mask is that one lung.")
    return finish(name="Montgomery County CXR", layout="montgomery", domain="cxr", root=root, records=records,
                  problems=problems)


# ----------------------------------------------------------------------------------- NIH ChestX-ray14

#: The 14 NIH ChestX-ray14 finding labels ("No Finding" means none of them).
NIH_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
NIH_COLUMNS = ("Image Index", "Finding Labels")


def _nih_csv(folder: Path) -> Path | None:
    return next(iter(sorted(folder.glob("Data_Entry_2017*.csv"))), None)


def detect_nih14(folder: Path, csv: Path | None = None) -> bool:
    if csv is not None:
        return set(NIH_COLUMNS) <= set(read_header(csv))
    return _nih_csv(folder) is not None


def load_nih14(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """NIH ChestX-ray14: ``Data_Entry_2017.csv`` + ``images/`` or ``images_001/images/``...

    Findings = 'Finding Labels' split on '|' ("No Finding" -> no findings); target = 1 when any finding.
    Labels outside the 14 NIH labels are kept (a re-labelled copy may add classes) and listed in
    ``Dataset.warnings`` rather than refused. Group = Patient ID; meta: age, sex, view (PA/AP), follow_up.
    """
    csv = csv or _nih_csv(root)
    if csv is None:
        raise DataError(f"No Data_Entry_2017.csv in {root}.")
    df = read_table(csv, NIH_COLUMNS)
    image_dirs = [root / "images"] + sorted(root.glob("images_*/images")) + sorted(root.glob("images_*"))
    image_dirs = [d for d in image_dirs if d.is_dir()] or [root]
    images = index_images(image_dirs)
    problems = Problems(csv, image_dirs)
    rows = problems.unique_rows(df.to_dict("records"), key=lambda r: Path(r["Image Index"]).stem,
                                label=lambda r: r["Finding Labels"])
    records, unknown = [], set()
    for key, row in rows.items():
        path = images.get(key)
        if path is None:
            problems.missing.append(key)
            continue
        labels = [s.strip() for s in row["Finding Labels"].split("|") if s.strip()]
        findings = tuple(sorted({s for s in labels if s != "No Finding"}))
        unknown |= set(findings) - set(NIH_LABELS)
        patient = clean_str(row.get("Patient ID"))
        patient = (patient.lstrip("0") or "0") if patient else None  # "00001" and "1" are the same patient
        records.append(
            Record(
                id=key, image_path=path, findings=findings, target=int(bool(findings)), group=patient or key,
                meta={"age": problems.age(key, row.get("Patient Age")), "sex": norm_sex(row.get("Patient Gender")),
                      "view": clean_str(row.get("View Position")), "patient_id": patient,
                      "follow_up": clean_str(row.get("Follow-up #"))},
            )
        )
    raise_if_none_left(records, csv, len(rows), image_dirs)
    if unknown:
        problems.notes.append(f"Findings outside the 14 NIH labels were kept as classes: {', '.join(sorted(unknown))}.")
    for key in sorted(set(images) - set(rows)):  # images without a row: kept, unlabelled, counted
        problems.no_metadata.append(key)
        records.append(Record(id=key, image_path=images[key], group=key,
                              meta={"age": None, "sex": None, "view": None, "patient_id": None, "follow_up": None}))
    return finish(name="NIH ChestX-ray14", layout="nih14", domain="cxr", root=root, records=records,
                  problems=problems)
