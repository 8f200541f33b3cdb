"""The plain layout: ``images/`` + optional ``masks/``, ``labels.csv`` and ``dataset.json`` (also the demo sets).

```
root/
  images/NAME.(png|jpg|tif|dcm|...)
  masks/NAME.png | NAME_mask.png | NAME_segmentation.png      (optional)
  labels.csv   image[, diagnosis, target, findings, group|patient_id, lesion_id, age, sex, site, split, ...]
  dataset.json {"name": ..., "domain": "derm"|"cxr", "synthetic": false}                      (optional)
```
"""
from __future__ import annotations

import json
from pathlib import Path

from lesion.data._common import (
    Problems,
    Progress,
    unknown_values_error,
    clean_str,
    derm_target,
    index_images,
    list_images,
    norm_sex,
    norm_target,
    raise_if_none_left,
    read_table,
    finish,
)
from lesion.data.io import DICOM_EXTENSIONS, IMAGE_EXTENSIONS
from lesion.data.labels import DERM_DX, known_derm_dx
from lesion.data.records import Dataset, Record
from lesion.errors import DataError

#: Columns with a fixed meaning; every other labels.csv column goes into ``Record.meta`` as a string.
KNOWN_COLUMNS = ("image", "diagnosis", "target", "findings", "group", "patient_id", "lesion_id", "age", "sex", "site")
DOMAINS = ("derm", "cxr")


def detect_plain(folder: Path, csv: Path | None = None) -> bool:
    return bool(list_images(folder / "images"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}).") from e
    if not isinstance(info, dict):
        raise DataError(f"{path} must hold a JSON object like {{\"name\": ..., \"domain\": \"derm\"}}.")
    return info


def _guess_domain(columns: list[str], first_image: Path) -> str:
    """X-ray when labels are multi-label findings or the first image is stored as greyscale; else dermoscopy."""
    if "findings" in columns or first_image.suffix.lower() in DICOM_EXTENSIONS:
        return "cxr"
    from PIL import Image

    try:
        with Image.open(first_image) as im:  # reads the header only
            return "cxr" if im.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "1") else "derm"
    except OSError:
        return "derm"


def _stem(value: str) -> str:
    """'a.png' -> 'a'; 'a' -> 'a'; 'a.b' (no image extension) stays 'a.b'."""
    p = Path(value)
    return p.stem if p.suffix.lower() in IMAGE_EXTENSIONS else p.name


def load_plain(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """Plain folder: every file in ``images/`` is a record; ``labels.csv`` (column ``image``: file name or
    stem) adds labels and metadata; ``masks/`` adds masks by stem (optional ``_mask``/``_segmentation`` suffix).

    Target = the ``target`` column, else (derm) diagnosis in MALIGNANT_DX, else (findings column) any finding.
    Group = ``group``, else ``patient_id``, else ``lesion_id``, else the id. Images without a row stay, unlabelled.
    A dermoscopy target taken from a diagnosis outside :data:`~lesion.data.labels.DERM_DX` is a DataError (it
    would silently count as benign): give a ``target`` column for your own class names. Rows without image,
    images without row, ages out of 0-120 and duplicate rows (first used) are counted in ``Dataset.report``.
    """
    image_dir = root / "images"
    images = index_images([image_dir])
    if not images:
        raise DataError(f"No image files in {image_dir}.")
    masks = index_images([root / "masks"], strip_suffixes=("_mask", "_segmentation"))
    info = _read_json(root / "dataset.json")
    csv = csv or (root / "labels.csv" if (root / "labels.csv").is_file() else None)
    rows: dict[str, dict] = {}
    columns: list[str] = []
    problems = Problems(csv, [image_dir])
    if csv is not None:
        df = read_table(csv, ("image",))
        columns = list(df.columns)
        numbered = [dict(r, _row=i + 2) for i, r in enumerate(df.to_dict("records"))]
        rows = problems.unique_rows(numbered, key=lambda r: _stem(r["image"]),
                                    label=lambda r: (clean_str(r.get("diagnosis")), clean_str(r.get("target")),
                                                     clean_str(r.get("findings"))))
        problems.missing += [k for k in rows if k not in images]
        if rows and len(problems.missing) == len(rows):
            raise_if_none_left([], csv, len(rows), [image_dir])
        problems.no_metadata += sorted(set(images) - set(rows))
    domain = info.get("domain") or _guess_domain(columns, next(iter(images.values())))
    if domain not in DOMAINS:
        raise DataError(f"{root / 'dataset.json'}: domain '{domain}' is not one of {', '.join(DOMAINS)}.")

    records, unknown = [], {}
    for key, path in images.items():
        row = rows.get(key, {})
        where = f"{csv.name if csv else 'labels.csv'} row {row.get('_row')}"
        dx = clean_str(row.get("diagnosis"))
        findings = tuple(sorted({f.strip() for f in (row.get("findings") or "").split("|") if f.strip()} - {"No Finding"}))
        target = norm_target(row.get("target"), where)
        if target is None and dx is not None and domain == "derm":
            if not known_derm_dx(dx):  # a target from an unknown name would be a silent "benign"
                unknown.setdefault(dx, []).append(key)
            target = derm_target(dx)
        if target is None and "findings" in row:
            target = int(bool(findings))
        patient, lesion = clean_str(row.get("patient_id")), clean_str(row.get("lesion_id"))
        meta = {"age": problems.age(key, row.get("age")), "sex": norm_sex(row.get("sex")), "site": clean_str(row.get("site"))}
        if patient:
            meta["patient_id"] = patient
        if lesion:
            meta["lesion_id"] = lesion
        meta.update({c: clean_str(row.get(c)) for c in columns if c not in KNOWN_COLUMNS})
        records.append(
            Record(
                id=key, image_path=path, mask_path=masks.get(key), diagnosis=dx, findings=findings, target=target,
                group=clean_str(row.get("group")) or patient or lesion or key, meta=meta,
            )
        )
    if unknown:
        raise unknown_values_error(
            csv, "diagnosis", unknown, DERM_DX,
            "or give those rows a 'target' column of 0/1, which is used instead of the diagnosis")
    return finish(
        name=str(info.get("name") or root.name), layout="plain", domain=domain, root=root, records=records,
        problems=problems, synthetic=bool(info.get("synthetic", False)),
    )
