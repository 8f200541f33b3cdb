"""Loaders for the dermoscopy layouts: HAM10000, ISIC challenge task-1 folders, SIIM-ISIC 2020 and PH2.

Every loader takes the data-set folder (and optionally the label file the user pointed at), lists files, reads
the label table and returns a :class:`~lesion.data.records.Dataset`. Binary target: 1 when the diagnosis is in
:data:`~lesion.data.records.MALIGNANT_DX` (mel, bcc, akiec, scc, melanoma).
"""
from __future__ import annotations

import re
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
    read_header,
    read_table,
    finish,
)
from lesion.data.labels import HAM7
from lesion.data.records import Dataset, Record
from lesion.errors import DataError

# --------------------------------------------------------------------------------------------- HAM10000

HAM_CSV = "HAM10000_metadata.csv"
HAM_MASK_DIR = "HAM10000_segmentations_lesion_tschandl"
HAM_COLUMNS = ("lesion_id", "image_id", "dx")


def detect_ham10000(folder: Path, csv: Path | None = None) -> bool:
    if csv is not None:
        return csv.name.startswith("HAM10000_metadata") or set(HAM_COLUMNS) <= set(read_header(csv))
    return (folder / HAM_CSV).is_file()


def load_ham10000(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """HAM10000: ``HAM10000_metadata.csv`` + ``HAM10000_images_part_*/`` + ``HAM10000_segmentations_lesion_tschandl/``.

    Group = ``lesion_id`` (several images of one lesion must stay in one fold). Nothing is dropped silently;
    ``Dataset.report`` counts and names:

    * rows whose image is absent (the held-back or not-downloaded part): skipped;
    * images without a metadata row: kept as unlabelled records (no diagnosis, target or age) with their mask;
    * ages that are not a number in 0-120: set unknown;
    * image ids listed in several rows: the first row is used.

    A ``dx`` outside HAM10000's seven codes (:data:`~lesion.data.labels.HAM7`) is a :class:`DataError` naming
    the values found and the codes accepted; blank or ``unknown`` means no diagnosis.
    """
    csv = csv or root / HAM_CSV
    df = read_table(csv, HAM_COLUMNS)
    image_dirs = sorted(p for p in root.glob("HAM10000_images*") if p.is_dir()) + [root / "images"]
    image_dirs = [d for d in image_dirs if d.is_dir()] or [root]
    images = index_images(image_dirs)
    mask_dirs = [root / HAM_MASK_DIR, root / "masks"] + sorted(p for p in root.glob("*segmentation*") if p.is_dir())
    masks = index_images(dict.fromkeys(mask_dirs), strip_suffixes=("_segmentation", "_mask"))

    problems = Problems(csv, image_dirs)
    rows = problems.unique_rows(df.to_dict("records"), key=lambda r: r["image_id"],
                                label=lambda r: (clean_str(r["dx"]) or "").lower())
    records, unknown = [], {}
    for image_id, row in rows.items():
        path = images.get(image_id)
        if path is None:
            problems.missing.append(image_id)
            continue
        dx = (clean_str(row["dx"]) or "").lower() or None
        if dx is not None and dx not in HAM7:
            unknown.setdefault(row["dx"], []).append(image_id)
            continue
        lesion_id = clean_str(row["lesion_id"])
        records.append(
            Record(
                id=image_id,
                image_path=path,
                mask_path=masks.get(image_id),
                diagnosis=dx,
                target=derm_target(dx),
                group=lesion_id or image_id,
                meta={
                    "age": problems.age(image_id, row.get("age")),
                    "sex": norm_sex(row.get("sex")),
                    "site": clean_str(row.get("localization")),
                    "lesion_id": lesion_id,
                    "dx_type": clean_str(row.get("dx_type")),
                },
            )
        )
    if unknown:
        raise unknown_values_error(csv, "dx", unknown, HAM7, "blank or 'unknown' = no diagnosis")
    raise_if_none_left(records, csv, len(rows), image_dirs)
    for image_id in sorted(set(images) - set(rows)):
        problems.no_metadata.append(image_id)
        records.append(Record(id=image_id, image_path=images[image_id], mask_path=masks.get(image_id),
                              group=image_id, meta={"age": None, "sex": None, "site": None, "lesion_id": None,
                                                    "dx_type": None}))
    return finish(name="HAM10000", layout="ham10000", domain="derm", root=root, records=records, problems=problems)


# ------------------------------------------------------------------------------------- SIIM-ISIC 2020

SIIM_IMAGE_DIRS = ("train", "jpeg/train", "ISIC_2020_Training_JPEG/train", "ISIC_2020_Training_JPEG", "images")


def _siim_csv(folder: Path) -> Path | None:
    for p in [folder / "train.csv", *sorted(folder.glob("ISIC_2020_Training_GroundTruth*.csv"))]:
        if p.is_file() and "image_name" in read_header(p):
            return p
    return None


def detect_siim2020(folder: Path, csv: Path | None = None) -> bool:
    if csv is not None:
        return {"image_name", "target"} <= set(read_header(csv))
    return _siim_csv(folder) is not None


def load_siim2020(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """SIIM-ISIC 2020: ``train.csv`` (image_name, patient_id, sex, age_approx, anatom_site_general_challenge,
    diagnosis, benign_malignant, target) + JPEGs in ``train/`` or ``jpeg/train/``.

    Target = the ``target`` column (else benign_malignant, else the diagnosis); group = ``patient_id``.
    The diagnosis "unknown" (most benign images) becomes None: the target is still known. Images without a
    row are kept unlabelled; rows without image, bad ages and duplicate rows are counted in ``Dataset.report``.
    The DICOM copies are not read: point at the JPEG folders.
    """
    csv = csv or _siim_csv(root)
    if csv is None:
        raise DataError(f"No train.csv with an 'image_name' column in {root}.")
    df = read_table(csv, ("image_name",))
    image_dirs = [root / d for d in SIIM_IMAGE_DIRS if (root / d).is_dir()] or [root]
    images = index_images(image_dirs)
    problems = Problems(csv, image_dirs)
    numbered = [dict(r, _row=i + 2) for i, r in enumerate(df.to_dict("records"))]
    rows = problems.unique_rows(numbered, key=lambda r: Path(r["image_name"]).stem,
                                label=lambda r: (clean_str(r.get("target")), clean_str(r.get("diagnosis"))))
    records = []
    for name, row in rows.items():
        path = images.get(name)
        if path is None:
            problems.missing.append(name)
            continue
        dx = clean_str(row.get("diagnosis"))
        dx = dx.lower() if dx else None
        where = f"{csv.name} row {row['_row']}"
        target = norm_target(row.get("target"), where)
        if target is None:
            target = norm_target(row.get("benign_malignant"), where)
        if target is None:
            target = derm_target(dx)
        patient = clean_str(row.get("patient_id"))
        records.append(
            Record(
                id=name,
                image_path=path,
                diagnosis=dx,
                target=target,
                group=patient or name,
                meta={
                    "age": problems.age(name, row.get("age_approx")),
                    "sex": norm_sex(row.get("sex")),
                    "site": clean_str(row.get("anatom_site_general_challenge") or row.get("anatom_site_general")),
                    "patient_id": patient,
                    "lesion_id": clean_str(row.get("lesion_id")),
                },
            )
        )
    raise_if_none_left(records, csv, len(rows), image_dirs)
    for name in sorted(set(images) - set(rows)):  # images without a row: kept, unlabelled, counted
        problems.no_metadata.append(name)
        records.append(Record(id=name, image_path=images[name], group=name,
                              meta={"age": None, "sex": None, "site": None, "patient_id": None, "lesion_id": None}))
    return finish(name="SIIM-ISIC 2020", layout="siim2020", domain="derm", root=root, records=records,
                  problems=problems)


# ----------------------------------------------------------------------------- ISIC challenge task 1

_ISIC_ID = re.compile(r"^ISIC_\d+$")
_MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_mask")
_MASK_DIR_HINT = re.compile(r"groundtruth|ground_truth|mask|segmentation", re.I)
#: ISIC 2018/2019 one-hot ground-truth columns -> our (HAM10000) diagnosis codes. 2019 calls akiec "AK".
_ONE_HOT = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "AK": "akiec", "BKL": "bkl", "DF": "df",
            "VASC": "vasc", "SCC": "scc", "UNK": "unknown"}


def _isic_ids(folder: Path) -> bool:
    return any(_ISIC_ID.match(p.stem) for p in list_images(folder))


def _isic_image_dirs(folder: Path) -> list[Path]:
    dirs = [folder] if _isic_ids(folder) else []
    if folder.is_dir():
        dirs += [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".") and _isic_ids(d)]
    return dirs


def detect_isic(folder: Path, csv: Path | None = None) -> bool:
    return bool(_isic_image_dirs(folder))


def _split_from_name(name: str) -> str | None:
    n = name.lower()
    for key, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        if key in n:
            return split
    return None


def _isic_labels(csvs: list[Path]) -> tuple[dict[str, str], dict[str, int], list[str]]:
    """Read every ISIC ground-truth CSV we recognise: 2018/2019 one-hot, 2017 (melanoma, seborrheic_keratosis),
    2016 (header-less ``id,benign|malignant``). Returns (diagnosis by id, target by id, files used)."""
    dx: dict[str, str] = {}
    target: dict[str, int] = {}
    used = []
    for csv in csvs:
        header = read_header(csv)
        if not header:
            continue
        if header[0] in ("image", "image_id") and any(c in _ONE_HOT for c in header[1:]):
            df = read_table(csv, (header[0],))
            cols = [c for c in df.columns if c in _ONE_HOT]
            for row in df.to_dict("records"):
                hot = [c for c in cols if clean_str(row[c]) not in (None, "0", "0.0")]
                if len(hot) == 1:
                    dx[row[header[0]]] = _ONE_HOT[hot[0]]
                    target[row[header[0]]] = derm_target(_ONE_HOT[hot[0]]) or 0
        elif header[0] == "image_id" and "melanoma" in header:
            df = read_table(csv, ("image_id", "melanoma"))
            for row in df.to_dict("records"):
                mel = norm_target(row["melanoma"], csv.name)
                sk = norm_target(row.get("seborrheic_keratosis"), csv.name)
                dx[row["image_id"]] = "melanoma" if mel else "seborrheic_keratosis" if sk else "nevus"
                target[row["image_id"]] = int(bool(mel))
        elif _ISIC_ID.match(header[0]) and len(header) == 2:
            df = read_table(csv, header=False)
            for key, value in zip(df[0], df[1]):
                t = norm_target(value, csv.name)
                if t is not None:
                    dx[key] = "malignant" if t else "benign"
                    target[key] = t
        else:
            continue
        used.append(csv.name)
    return dx, target, used


def load_isic(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """ISIC challenge task-1 folders: ``ISIC_x.jpg`` + ``ISIC_x_segmentation.png``.

    Images are read from ``root`` and its sub-folders holding ISIC ids; masks from the same folders, or from
    sibling folders named like ``*GroundTruth*``/``*mask*``. A ground-truth CSV (2016/2017/2018/2019 formats)
    next to them adds labels. ``meta['split']`` comes from folder names (Training/Validation/Test). Each image
    is its own group (these folders carry no lesion or patient id).
    """
    image_dirs = _isic_image_dirs(root)
    if not image_dirs:
        raise DataError(f"No ISIC_<number> images in {root} or its sub-folders.")
    images: dict[str, Path] = {}
    for d in image_dirs:
        for key, path in index_images([d], keep=_ISIC_ID.match).items():
            if key in images:
                raise DataError(f"Two files have the same id '{key}': {images[key]} and {path}.")
            images[key] = path
    mask_dirs = [root] + [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    csvs = sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv"))
    if root in image_dirs:  # pointed at the input folder itself: ground truth lives next to it
        mask_dirs += [d for d in sorted(root.parent.iterdir()) if d.is_dir() and d != root and _MASK_DIR_HINT.search(d.name)]
        csvs += sorted(root.parent.glob("*.csv"))
    # Masks may share a folder with their images, so only suffixed names count as masks.
    masks = index_images(dict.fromkeys(mask_dirs), strip_suffixes=_MASK_SUFFIXES,
                         keep=lambda k: bool(_ISIC_ID.match(k)), require_suffix=True)
    dx, target, used = _isic_labels([csv] if csv is not None else csvs)
    records = []
    for key, path in images.items():
        split = _split_from_name(path.parent.name)  # ISIC2018_Task1-2_Training_Input -> "train"
        records.append(
            Record(
                id=key, image_path=path, mask_path=masks.get(key), diagnosis=dx.get(key), target=target.get(key),
                group=key, meta={"age": None, "sex": None, "site": None, "split": split},
            )
        )
    problems = Problems(", ".join(used) or None, image_dirs)
    if csv is not None and not used:
        problems.notes.append(f"{csv.name} is not an ISIC ground-truth table this loader knows; labels were not read.")
    if used:
        problems.no_metadata += [r.id for r in records if r.diagnosis is None and r.target is None]
    return finish(name=f"ISIC ({root.name})", layout="isic", domain="derm", root=root, records=records,
                  problems=problems)


# ------------------------------------------------------------------------------------------------ PH2

PH2_DX = {0: "common_nevus", 1: "atypical_nevus", 2: "melanoma"}
PH2_IMAGES = "PH2 Dataset images"
_IMD = re.compile(r"^IMD\d+$")


def _ph2_images_dir(folder: Path) -> Path | None:
    for d in (folder / "PH2Dataset" / PH2_IMAGES, folder / PH2_IMAGES, folder):
        if d.is_dir() and any(_IMD.match(c.name) and (c / f"{c.name}_Dermoscopic_Image").is_dir() for c in d.iterdir()):
            return d
    return None


def detect_ph2(folder: Path, csv: Path | None = None) -> bool:
    return _ph2_images_dir(folder) is not None


def _snake(name: str) -> str:
    """'Dots/Globules\\n(A/AT/T)' -> 'dots_globules' (drop the legend in brackets)."""
    name = re.split(r"[\n(]", str(name))[0]
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _ph2_from_txt(path: Path) -> dict[str, dict]:
    """Parse the original '||'-delimited PH2_dataset.txt; cells split on '||' and '|', stripped."""
    header, rows = None, {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        s = line.strip()
        if not s.startswith("||"):
            continue
        s = s[2:-2] if s.endswith("||") else s[2:]
        cells = [c.strip() for part in s.split("||") for c in part.split("|")]
        if header is None:
            header = [_snake(c) for c in cells]
            if "name" not in header or "clinical_diagnosis" not in header:
                raise DataError(f"{path.name}: header row has no 'Name' and 'Clinical Diagnosis' columns.")
            continue
        if len(cells) != len(header):
            raise DataError(f"{path.name}: a row has {len(cells)} cells, the header {len(header)}: {line.strip()[:80]}")
        row = dict(zip(header, cells))
        rows[row["name"]] = row
    if header is None:
        raise DataError(f"{path.name} has no '||'-delimited header row.")
    return rows


def _ph2_from_xlsx(path: Path) -> dict[str, dict]:
    """Parse the original PH2_dataset.xlsx: legend rows, then a header row with 'Image Name'; clinical diagnosis
    and colours are X marks in one column per class / colour."""
    import pandas as pd

    try:
        raw = pd.read_excel(path, header=None, dtype=str)
    except Exception as e:  # openpyxl raises several types for a bad file
        raise DataError(f"Cannot read {path.name} as a spreadsheet ({e}).") from e
    head = next((i for i, row in raw.iterrows() if any(clean_str(v) in ("Image Name", "Name") for v in row)), None)
    if head is None:
        raise DataError(f"{path.name} has no header row with 'Image Name'.")
    cols = [_snake(v) if clean_str(v) else f"c{j}" for j, v in enumerate(raw.iloc[head])]
    colours = ["white", "red", "light_brown", "dark_brown", "blue_gray", "black"]
    rows = {}
    for _, r in raw.iloc[head + 1:].iterrows():
        cells = {c: clean_str(v) for c, v in zip(cols, r)}
        name = cells.get("image_name") or cells.get("name")
        if not name or not _IMD.match(name):
            continue
        marks = [k for k, cls in enumerate(("common_nevus", "atypical_nevus", "melanoma")) if cells.get(cls)]
        if len(marks) != 1:
            raise DataError(f"{path.name}: {name} has {len(marks)} clinical-diagnosis marks, expected 1.")
        row = {c: v or "" for c, v in cells.items() if c not in colours and not c.startswith("c")}
        row.update(name=name, clinical_diagnosis=str(marks[0]),
                   colors=" ".join(str(k + 1) for k, c in enumerate(colours) if cells.get(c)))
        rows[name] = row
    return rows


def _ph2_from_csv(path: Path) -> dict[str, dict]:
    df = read_table(path, ("image_id", "clinical_diagnosis"))
    return {r["image_id"]: dict(r, name=r["image_id"]) for r in df.to_dict("records")}


def _ph2_label_file(root: Path, images_dir: Path) -> Path | None:
    # The original text file first, then our CSV, then the spreadsheet (slowest to read); all three agree.
    places = list(dict.fromkeys([root, root / "PH2Dataset", images_dir.parent, images_dir.parent.parent]))
    for name in ("PH2_dataset.txt", "PH2_labels.csv", "PH2_dataset.xlsx"):
        for place in places:
            if (place / name).is_file():
                return place / name
    return None


def load_ph2(root: Path, csv: Path | None = None, progress: Progress | None = None) -> Dataset:
    """PH2: ``PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.(bmp|png)`` and
    ``IMDxxx_lesion/IMDxxx_lesion.(bmp|png)``; labels from ``PH2_dataset.txt``, ``PH2_labels.csv`` or
    ``PH2_dataset.xlsx``. Clinical diagnosis 0/1/2 = common nevus / atypical nevus / melanoma; target = melanoma.
    """
    images_dir = _ph2_images_dir(root)
    if images_dir is None:
        raise DataError(f"No '{PH2_IMAGES}/IMDxxx/IMDxxx_Dermoscopic_Image' folders in {root}.")
    label_file = csv or _ph2_label_file(root, images_dir)
    labels: dict[str, dict] = {}
    if label_file is not None:
        parse = {".txt": _ph2_from_txt, ".xlsx": _ph2_from_xlsx, ".xls": _ph2_from_xlsx}.get(label_file.suffix.lower(), _ph2_from_csv)
        labels = parse(label_file)
    records = []
    for case in sorted(d for d in images_dir.iterdir() if d.is_dir() and _IMD.match(d.name)):
        name = case.name
        image = index_images([case / f"{name}_Dermoscopic_Image"]).get(name)
        if image is None:
            continue
        mask = index_images([case / f"{name}_lesion"]).get(f"{name}_lesion")
        row = labels.get(name, {})
        clinical = clean_str(row.get("clinical_diagnosis"))
        if clinical is not None and clinical not in ("0", "1", "2"):
            raise DataError(f"{label_file.name}: {name} has clinical diagnosis '{clinical}', expected 0, 1 or 2.")
        dx = PH2_DX[int(clinical)] if clinical is not None else None
        meta = {"age": None, "sex": None, "site": None,
                "clinical_diagnosis": int(clinical) if clinical is not None else None}
        for key in ("histological_diagnosis", "asymmetry", "pigment_network", "dots_globules", "streaks",
                    "regression_areas", "blue_whitish_veil", "colors"):
            if key in row:
                value = clean_str(row[key])
                meta[key] = " ".join(value.split()) if value else None
        records.append(Record(id=name, image_path=image, mask_path=mask, diagnosis=dx, target=derm_target(dx),
                              group=name, meta=meta))
    problems = Problems(label_file, [images_dir])
    problems.rows = len(labels)
    if label_file is None:
        problems.notes.append("No PH2_dataset.txt, PH2_labels.csv or PH2_dataset.xlsx found: images have no labels.")
    else:
        problems.no_metadata += [r.id for r in records if r.diagnosis is None]
        problems.missing += sorted(set(labels) - {r.id for r in records})
    return finish(name="PH2", layout="ph2", domain="derm", root=root, records=records, problems=problems)
