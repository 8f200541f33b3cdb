"""Issue 12, item 5: data problems are reported, not hidden (Dataset.report, a DataReport), on generated folders
whose answer is known: images without metadata, unknown diagnoses, ages out of 0-120, duplicate ids."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion.data import DataReport, load_dataset
from lesion.data.labels import HAM7
from lesion.errors import DataError

W, H = 8, 6


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), 120).save(path)


def _ham(root: Path, rows: list[tuple[str, str, str]], images: list[str], ages: dict[str, str] | None = None) -> Path:
    """HAM10000 folder: ``rows`` of (lesion_id, image_id, dx), ``images`` the files present."""
    ages = ages or {}
    root.mkdir(parents=True, exist_ok=True)
    text = "lesion_id,image_id,dx,dx_type,age,sex,localization\n" + "".join(
        f"{les},{iid},{dx},histo,{ages.get(iid, '50')},male,back\n" for les, iid, dx in rows)
    (root / "HAM10000_metadata.csv").write_text(text)
    for iid in images:
        _img(root / "HAM10000_images_part_1" / f"{iid}.jpg")
    masks = root / "HAM10000_segmentations_lesion_tschandl"
    masks.mkdir(exist_ok=True)
    for iid in images:
        arr = np.zeros((H, W), np.uint8)
        arr[1:3, 1:4] = 255
        Image.fromarray(arr).save(masks / f"{iid}_segmentation.png")
    return root


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"ISIC_{i:07d}" for i in range(start, start + n)]


def test_ham_images_without_metadata_are_counted(tmp_path: Path) -> None:
    # The sweep's case: 30 images, 25 metadata rows. All 30 are kept (the 5 unlabelled, with their masks).
    ids = _ids(30)
    root = _ham(tmp_path / "ham", [(f"HAM_{i}", iid, "nv" if i % 2 else "mel") for i, iid in enumerate(ids[:25])], ids)
    ds = load_dataset(root)
    assert len(ds) == 30 and all(r.mask_path is not None for r in ds)
    unlabelled = [r.id for r in ds if r.diagnosis is None]
    assert unlabelled == ids[25:] and all(ds.by_id(i).target is None for i in unlabelled)
    assert ds.report.no_metadata == tuple(ids[25:]) and ds.report.images == 30
    assert ds.report.counts()["images without metadata"] == 5
    line = ds.report.lines()[0]
    assert line.startswith("5 of 30 images have no row in HAM10000_metadata.csv") and ids[25] in line
    assert ds.warnings == tuple(ds.report.lines())
    # Classification keeps only labelled records (25); segmentation can use all 30 masks.
    from lesion.data.labels import make_targets, record_label

    labelled = [r for r in ds if record_label(r, "melanoma") is not None]
    assert len(labelled) == 25 and make_targets(labelled, "melanoma").sum() == 13


def test_unknown_dx_is_an_error_naming_values(tmp_path: Path) -> None:
    ids = _ids(5)
    rows = [("HAM_0", ids[0], "mel"), ("HAM_1", ids[1], "banana"), ("HAM_2", ids[2], "melanoma"),
            ("HAM_3", ids[3], "banana"), ("HAM_4", ids[4], "unknown")]
    root = _ham(tmp_path / "ham", rows, ids)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert "3 rows have a dx this loader does not know" in msg
    assert "'banana' (2 rows, e.g. ISIC_0000001)" in msg and "'melanoma' (1 row" in msg
    assert f"Accepted: {', '.join(HAM7)}" in msg and "\n" not in msg
    # "unknown" (and blank) is HAM10000's own word for no diagnosis: unlabelled, not an error, never benign.
    rows = [("HAM_0", ids[0], "mel"), ("HAM_4", ids[4], "unknown"), ("HAM_1", ids[1], "")]
    ds = load_dataset(_ham(tmp_path / "ok", rows, [ids[0], ids[1], ids[4]]))
    assert [(r.diagnosis, r.target) for r in ds] == [("mel", 1), (None, None), (None, None)]


def test_plain_unknown_diagnosis_without_target_is_an_error(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _img(tmp_path / "images" / f"{name}.png")
    (tmp_path / "labels.csv").write_text("image,diagnosis\na,mel\nb,Seborrheic Keratosis\nc,melanoma in situ\n")
    with pytest.raises(DataError, match="'melanoma in situ' \\(1 row, e.g. c\\).*Accepted: .*akiec.*'target'"):
        load_dataset(tmp_path)
    # With a target column the user's own class names are fine; "malignant" is malignant, never benign.
    (tmp_path / "labels.csv").write_text("image,diagnosis,target\na,mel,\nb,malignant,\nc,melanoma in situ,1\n")
    ds = load_dataset(tmp_path)
    assert [r.target for r in ds] == [1, 1, 1]


@pytest.mark.parametrize("layout", ["ham10000", "plain", "nih14", "siim2020"])
def test_age_out_of_range_is_counted(tmp_path: Path, layout: str) -> None:
    ages = {"i0": "45", "i1": "forty", "i2": "-5", "i3": "300", "i4": "120", "i5": "", "i6": "058Y"}
    expected = {"i0": 45.0, "i1": None, "i2": None, "i3": None, "i4": 120.0, "i5": None, "i6": 58.0}
    ids = dict(zip(ages, _ids(len(ages))))
    if layout == "ham10000":
        root = _ham(tmp_path, [(f"HAM_{k}", iid, "nv") for k, iid in ids.items()], list(ids.values()),
                    ages={iid: ages[k] for k, iid in ids.items()})
    elif layout == "plain":
        root = tmp_path
        for iid in ids.values():
            _img(root / "images" / f"{iid}.png")
        (root / "labels.csv").write_text("image,age\n" + "".join(f"{iid},{ages[k]}\n" for k, iid in ids.items()))
    elif layout == "nih14":
        root = tmp_path
        for iid in ids.values():
            _img(root / "images" / f"{iid}.png")
        (root / "Data_Entry_2017.csv").write_text(
            "Image Index,Finding Labels,Patient ID,Patient Age\n"
            + "".join(f"{iid}.png,No Finding,{n},{ages[k]}\n" for n, (k, iid) in enumerate(ids.items())))
    else:
        root = tmp_path
        for iid in ids.values():
            _img(root / "train" / f"{iid}.jpg")
        (root / "train.csv").write_text("image_name,patient_id,age_approx,target\n"
                                        + "".join(f"{iid},P{n},{ages[k]},0\n" for n, (k, iid) in enumerate(ids.items())))
    ds = load_dataset(root)
    assert ds.layout == layout
    assert {k: ds.by_id(iid).meta["age"] for k, iid in ids.items()} == expected
    assert ds.report.bad_ages == ((ids["i1"], "forty"), (ids["i2"], "-5"), (ids["i3"], "300"))
    line = next(x for x in ds.report.lines() if "ages" in x)
    assert line.startswith("3 ages in ") and "not a number of years in 0-120" in line and "'300'" in line


def test_duplicate_ids_are_counted(tmp_path: Path) -> None:
    ids = _ids(3)
    rows = [("HAM_0", ids[0], "mel"), ("HAM_0", ids[0], "mel"), ("HAM_0", ids[0], "mel"),  # same row thrice
            ("HAM_1", ids[1], "nv"), ("HAM_1", ids[1], "bkl"),  # two rows that disagree
            ("HAM_2", ids[2], "df")]
    ds = load_dataset(_ham(tmp_path / "ham", rows, ids))
    assert [r.id for r in ds] == ids and [r.diagnosis for r in ds] == ["mel", "nv", "df"]  # first row used
    assert ds.report.duplicate_ids == ((ids[0], 3), (ids[1], 2)) and ds.report.conflicting_ids == (ids[1],)
    line = ds.report.lines()[0]
    assert line.startswith("2 image ids appear in more than one row of HAM10000_metadata.csv; the first row was used")
    assert f"{ids[0]} (3 rows)" in line and f"1 of them disagree on the label ({ids[1]})" in line
    # Plain labels.csv: the same rule (it used to refuse the whole folder).
    _img(tmp_path / "p" / "images" / "a.png")
    (tmp_path / "p" / "labels.csv").write_text("image,diagnosis\na.png,mel\na,mel\n")
    pds = load_dataset(tmp_path / "p")
    assert len(pds) == 1 and pds.report.duplicate_ids == (("a", 2),) and pds.report.conflicting_ids == ()


def test_rows_without_image_are_counted_with_the_table_size(tmp_path: Path) -> None:
    ids = _ids(4)
    ds = load_dataset(_ham(tmp_path, [(f"H{i}", iid, "nv") for i, iid in enumerate(ids)], ids[:3]))
    assert ds.report.missing_images == (ids[3],) and ds.report.rows == 4
    assert ds.report.lines()[0].startswith("1 of 4 rows of HAM10000_metadata.csv name images that are not in")


def test_report_api(tmp_path: Path) -> None:
    ids = _ids(3)
    clean = load_dataset(_ham(tmp_path / "clean", [(f"H{i}", iid, "nv") for i, iid in enumerate(ids)], ids))
    assert clean.report.ok and clean.report.lines() == [] and clean.warnings == ()
    assert clean.report.counts() == {"images": 3, "images without metadata": 0, "rows without image": 0,
                                     "ages not in 0-120": 0, "duplicate ids": 0}
    r = DataReport(images=2, label_file="t.csv", bad_ages=(("x", "300"),), notes=("a note",))
    assert not r.ok and r.lines() == ["1 age in t.csv is not a number of years in 0-120 and was set to "
                                      "unknown: '300' (x).", "a note"]
    assert json.loads(json.dumps(r.to_dict()))["bad_ages"] == [["x", "300"]]
    assert DataReport().lines() == [] and DataReport().ok
