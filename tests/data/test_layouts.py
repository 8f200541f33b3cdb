"""Loaders of every supported layout, on tiny generated folders; bad inputs; and the real data sets."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from lesion.data import LAYOUTS, detect_layout, load_dataset, load_sample
from lesion.errors import ConfigError, DataError, MaskShapeError

W, H = 8, 6  # every generated image is 8 wide, 6 high


def _img(path: Path, mode: str = "RGB", value=100, size=(W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def _mask(path: Path, box=(slice(0, 2), slice(0, 4)), size=(W, H)) -> Path:
    """0/255 mask whose foreground is ``box`` (default 2 x 4 = 8 pixels)."""
    arr = np.zeros(size[::-1], np.uint8)
    arr[box] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode="L").save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ builders

def make_ham(root: Path) -> Path:
    _write(root / "HAM10000_metadata.csv",
           "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
           "HAM_1,ISIC_0000001,mel,histo,45.0,male,back\n"
           "HAM_1,ISIC_0000002,mel,histo,45.0,male,back\n"
           "HAM_2,ISIC_0000003,nv,follow_up,,unknown,unknown\n"
           "HAM_3,ISIC_0000004,bkl,consensus,70,female,face\n")  # ISIC_0000004 has no image: skipped
    _img(root / "HAM10000_images_part_1" / "ISIC_0000001.jpg")
    _img(root / "HAM10000_images_part_1" / "ISIC_0000002.jpg")
    _img(root / "HAM10000_images_part_2" / "ISIC_0000003.jpg")
    masks = root / "HAM10000_segmentations_lesion_tschandl"
    _mask(masks / "ISIC_0000001_segmentation.png")
    # Inverted palette: lesion pixels hold index 0, whose colour is white (402 of the original masks do this).
    idx = np.ones((H, W), np.uint8)
    idx[2:5, 1:3] = 0  # 3 x 2 = 6 lesion pixels
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    pal.save(masks / "ISIC_0000002_segmentation.png")
    return root


def make_isic(root: Path) -> Path:
    inp = root / "ISIC2018_Task1-2_Training_Input"
    _img(inp / "ISIC_0000000.jpg")
    _img(inp / "ISIC_0000001.jpg")
    _img(inp / "ISIC_0000001_superpixels.png")  # ISIC 2017 ships these beside the images: not a record
    _write(inp / "ATTRIBUTION.txt", "x")
    _mask(root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png")
    _write(root / "ISIC2018_Task3_Training_GroundTruth.csv",
           "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
           "ISIC_0000000,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
           "ISIC_0000001,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n")
    return root


def make_siim(root: Path) -> Path:
    _write(root / "train.csv",
           "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
           "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0\n"
           "ISIC_0015719,IP_3075186,female,45.0,upper extremity,melanoma,malignant,1\n"
           "ISIC_0052212,IP_7279968,male,50.0,,nevus,benign,0\n"
           "ISIC_9999999,IP_1,female,,torso,nevus,benign,0\n")  # no image: skipped
    for name in ("ISIC_2637011", "ISIC_0015719", "ISIC_0052212"):
        _img(root / "jpeg" / "train" / f"{name}.jpg")
    return root


PH2_TXT = (
    "||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | Dots/Globules "
    "| Streaks | Regression Areas | Blue-Whitish Veil ||    Colors ||\n"
    "|| IMD001 ||              ||   0 ||  0 |  T |  A |  A |  A |  A ||     4 ||\n"
    "|| IMD002 ||              ||   1 ||  1 | AT |  A |  A |  A |  A ||  3  4 ||\n"
    "|| IMD003 ||     Melanoma ||   2 ||  2 | AT | AT |  P |  P |  P || 1 3 5 ||\n"
    "\nLegends for Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma\n"
)


def make_ph2(root: Path, labels: str = "txt") -> Path:
    tree = root / "PH2Dataset" / "PH2 Dataset images"
    for i, ext in ((1, ".bmp"), (2, ".png"), (3, ".png")):
        case = f"IMD00{i}"
        _img(tree / case / f"{case}_Dermoscopic_Image" / f"{case}{ext}")
        _mask(tree / case / f"{case}_lesion" / f"{case}_lesion{ext}")
    if labels == "txt":
        _write(root / "PH2Dataset" / "PH2_dataset.txt", PH2_TXT)
    elif labels == "csv":
        _write(root / "PH2_labels.csv",
               "image_id,clinical_diagnosis,diagnosis,histological_diagnosis,asymmetry,pigment_network,dots_globules,"
               "streaks,regression_areas,blue_whitish_veil,colors\n"
               "IMD001,0,common_nevus,,0,T,A,A,A,A,4\nIMD002,1,atypical_nevus,,1,AT,A,A,A,A,3 4\n"
               "IMD003,2,melanoma,Melanoma,2,AT,AT,P,P,P,1 3 5\n")
    elif labels == "xlsx":
        from openpyxl import Workbook

        wb = Workbook()
        ws = wb.active
        ws.append(["Legends:"])
        ws.append([None, None, "Clinical Diagnosis"])
        ws.append(["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
                   "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)", "Streaks\n(A/P)",
                   "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)", "White", "Red", "Light-Brown",
                   "Dark-Brown", "Blue-Gray", "Black"])
        ws.append(["IMD001", None, "X", None, None, 0, "T", "A", "A", "A", "A", None, None, None, "X", None, None])
        ws.append(["IMD002", None, None, "X", None, 1, "AT", "A", "A", "A", "A", None, None, "X", "X", None, None])
        ws.append(["IMD003", "Melanoma", None, None, "X", 2, "AT", "AT", "P", "P", "P", "X", None, "X", None, "X", None])
        (root / "PH2Dataset").mkdir(parents=True, exist_ok=True)
        wb.save(root / "PH2Dataset" / "PH2_dataset.xlsx")
    return root


def make_cxr_masks(root: Path) -> Path:
    seg = root / "Lung Segmentation"
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1", "CHNCXR_0001_1", "CHNCXR_0002_0"):
        _img(seg / "CXR_png" / f"{name}.png", mode="L")
    _mask(seg / "masks" / "MCUCXR_0001_0.png")
    _mask(seg / "masks" / "MCUCXR_0002_1.png")
    _mask(seg / "masks" / "CHNCXR_0001_1_mask.png")  # Shenzhen masks carry _mask; CHNCXR_0002_0 has none
    return root


def make_montgomery(root: Path) -> Path:
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1"):
        _img(root / "CXR_png" / f"{name}.png", mode="L")
        _mask(root / "ManualMask" / "leftMask" / f"{name}.png", box=(slice(1, 5), slice(0, 3)))   # 4 x 3 = 12
        _mask(root / "ManualMask" / "rightMask" / f"{name}.png", box=(slice(1, 5), slice(5, 8)))  # 4 x 3 = 12
    _write(root / "ClinicalReadings" / "MCUCXR_0002_1.txt", "Patient's Sex: F\nPatient's Age: 036Y\nright upper lobe TB\n")
    return root


def make_nih(root: Path) -> Path:
    _write(root / "Data_Entry_2017.csv",
           "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
           "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
           "00000001_000.png,Cardiomegaly|Effusion,0,1,57,M,PA,2682,2749,0.143,0.143\n"
           "00000001_001.png,No Finding,1,1,58,M,AP,2500,2048,0.168,0.168\n"
           "00000002_000.png,Hernia|Odd_Label,0,2,81,F,PA,2500,2048,0.171,0.171\n"
           "00000003_000.png,Nodule,0,3,40,F,PA,2500,2048,0.171,0.171\n")  # no image: skipped
    for name in ("00000001_000", "00000001_001", "00000002_000"):
        _img(root / "images_001" / "images" / f"{name}.png", mode="L")
    return root


def make_plain(root: Path) -> Path:
    _img(root / "images" / "a.png")
    _img(root / "images" / "b.png")
    _img(root / "images" / "c.jpg")
    _mask(root / "masks" / "a_mask.png")
    _mask(root / "masks" / "b.png")
    _write(root / "labels.csv",
           "image,diagnosis,group,age,sex,split,view\n"
           "a.png,mel,p1,30,F,train,x\n"
           "b,nv,p1,,M,val,\n"
           "c.jpg,bcc,,55.5,other,test,y\n")
    _write(root / "dataset.json", '{"name": "Tiny", "domain": "derm", "synthetic": true}')
    return root


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "ham10000": make_ham, "isic": make_isic, "siim2020": make_siim, "ph2": make_ph2,
    "cxr_masks": make_cxr_masks, "montgomery": make_montgomery, "nih14": make_nih, "plain": make_plain,
}


# ---------------------------------------------------------------------------------------- detection

def test_every_layout_has_a_builder() -> None:
    assert set(BUILDERS) == set(LAYOUTS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_detect_and_load_each_layout(tmp_path: Path, name: str) -> None:
    root = BUILDERS[name](tmp_path / name)
    assert detect_layout(root) == name
    ds = load_dataset(root)
    assert ds.layout == name and ds.root == root
    ids = [r.id for r in ds.records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for r in ds.records:  # every record's pixels load, and its mask (if any) has the image's size
        image, mask = load_sample(r)
        assert image.shape == (H, W, 3)
        assert mask is None or mask.shape == (H, W)


@pytest.mark.parametrize(
    "name, table",
    [("ham10000", "HAM10000_metadata.csv"), ("siim2020", "train.csv"), ("nih14", "Data_Entry_2017.csv"),
     ("plain", "labels.csv"), ("ph2", "PH2Dataset/PH2_dataset.txt")],
)
def test_detect_from_the_label_file(tmp_path: Path, name: str, table: str) -> None:
    root = BUILDERS[name](tmp_path / name)
    assert detect_layout(root / table) == name
    assert len(load_dataset(root / table)) == len(load_dataset(root))


# ------------------------------------------------------------------------------------------- derm

def test_ham10000_records_groups_meta_and_skipped_rows(tmp_path: Path) -> None:
    ds = load_dataset(make_ham(tmp_path))
    assert [r.id for r in ds] == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert [r.diagnosis for r in ds] == ["mel", "mel", "nv"] and [r.target for r in ds] == [1, 1, 0]
    assert [r.group for r in ds] == ["HAM_1", "HAM_1", "HAM_2"]
    assert ds.classes == ("mel", "nv") and ds.domain == "derm"
    assert dict(ds[0].meta) == {"age": 45.0, "sex": "male", "site": "back", "lesion_id": "HAM_1", "dx_type": "histo"}
    assert (ds[2].meta["age"], ds[2].meta["sex"], ds[2].meta["site"]) == (None, None, None)  # blank / "unknown"
    assert ds[2].mask_path is None
    assert len(ds.warnings) == 1 and "1 of 4 rows" in ds.warnings[0] and "ISIC_0000004" in ds.warnings[0]


def test_ham10000_inverted_palette_mask_reads_lesion(tmp_path: Path) -> None:
    ds = load_dataset(make_ham(tmp_path))
    _, mask = load_sample(ds.by_id("ISIC_0000002"))
    assert mask.sum() == 6 and mask[2:5, 1:3].all()
    _, plain_mask = load_sample(ds.by_id("ISIC_0000001"))
    assert plain_mask.sum() == 8


def test_isic_masks_labels_and_split(tmp_path: Path) -> None:
    root = make_isic(tmp_path)
    ds = load_dataset(root)
    assert [r.id for r in ds] == ["ISIC_0000000", "ISIC_0000001"]  # the _superpixels file is not a record
    assert ds[0].mask_path.name == "ISIC_0000000_segmentation.png" and ds[1].mask_path is None
    assert [r.diagnosis for r in ds] == ["mel", "nv"] and [r.target for r in ds] == [1, 0]
    assert {r.meta["split"] for r in ds} == {"train"}
    # Pointing at the input folder itself still finds masks in the sibling ground-truth folder.
    inner = load_dataset(root / "ISIC2018_Task1-2_Training_Input", layout="isic")
    assert inner[0].mask_path == ds[0].mask_path


@pytest.mark.parametrize(
    "csv_text, expected",
    [
        ("image_id,melanoma,seborrheic_keratosis\nISIC_0000000,1.0,0.0\nISIC_0000001,0.0,1.0\n",
         [("melanoma", 1), ("seborrheic_keratosis", 0)]),
        ("ISIC_0000000,malignant\nISIC_0000001,benign\n", [("malignant", 1), ("benign", 0)]),  # 2016, no header
    ],
)
def test_isic_2016_and_2017_ground_truth(tmp_path: Path, csv_text: str, expected: list) -> None:
    root = make_isic(tmp_path)
    (root / "ISIC2018_Task3_Training_GroundTruth.csv").unlink()
    _write(root / "gt.csv", csv_text)
    ds = load_dataset(root)
    assert [(r.diagnosis, r.target) for r in ds] == expected


def test_siim2020_target_group_meta(tmp_path: Path) -> None:
    ds = load_dataset(make_siim(tmp_path))
    assert [r.id for r in ds] == ["ISIC_0015719", "ISIC_0052212", "ISIC_2637011"]
    assert [r.target for r in ds] == [1, 0, 0]
    assert [r.group for r in ds] == ["IP_3075186", "IP_7279968", "IP_7279968"]
    # SIIM writes "unknown" for most benign images: diagnosis None, but the target column still says 0.
    assert [r.diagnosis for r in ds] == ["melanoma", "nevus", None] and ds.classes == ("melanoma", "nevus")
    assert ds[0].meta["site"] == "upper extremity" and ds[0].meta["sex"] == "female" and ds[0].meta["age"] == 45.0
    assert ds[1].meta["site"] is None
    assert "1 of 4 rows" in ds.warnings[0]


@pytest.mark.parametrize("labels", ["txt", "csv", "xlsx"])
def test_ph2_labels_from_each_label_file(tmp_path: Path, labels: str) -> None:
    ds = load_dataset(make_ph2(tmp_path, labels))
    assert [r.id for r in ds] == ["IMD001", "IMD002", "IMD003"]
    assert [r.diagnosis for r in ds] == ["common_nevus", "atypical_nevus", "melanoma"]
    assert [r.target for r in ds] == [0, 0, 1]
    assert ds[0].image_path.suffix == ".bmp" and ds[0].mask_path.name == "IMD001_lesion.bmp"
    assert ds[2].meta["histological_diagnosis"] == "Melanoma" and ds[0].meta["histological_diagnosis"] is None
    assert ds[2].meta["colors"] == "1 3 5" and ds[1].meta["pigment_network"] == "AT"
    assert ds[2].meta["clinical_diagnosis"] == 2 and ds.warnings == ()


def test_ph2_without_labels_warns(tmp_path: Path) -> None:
    ds = load_dataset(make_ph2(tmp_path, labels="none"))
    assert len(ds) == 3 and all(r.diagnosis is None and r.target is None for r in ds)
    assert "no labels" in ds.warnings[0]


# -------------------------------------------------------------------------------------------- CXR

def test_cxr_masks_labels_sources_and_mask_names(tmp_path: Path) -> None:
    ds = load_dataset(make_cxr_masks(tmp_path))
    by = {r.id: r for r in ds}
    assert [r.id for r in ds] == ["CHNCXR_0001_1", "CHNCXR_0002_0", "MCUCXR_0001_0", "MCUCXR_0002_1"]
    assert [r.target for r in ds] == [1, 0, 0, 1] and ds.classes == ("normal", "tuberculosis")
    assert by["CHNCXR_0001_1"].mask_path.name == "CHNCXR_0001_1_mask.png"
    assert by["MCUCXR_0001_0"].mask_path.name == "MCUCXR_0001_0.png"
    assert by["CHNCXR_0002_0"].mask_path is None and "1 of 4" in ds.warnings[0]
    assert by["MCUCXR_0002_1"].meta["source"] == "Montgomery" and by["CHNCXR_0002_0"].meta["source"] == "Shenzhen"
    assert ds.domain == "cxr"


def test_cxr_masks_labels_csv_selects_rows_and_labels(tmp_path: Path) -> None:
    root = make_cxr_masks(tmp_path)
    _write(root / "labels.csv", "image,mask,source,tuberculosis\n"
                                "MCUCXR_0001_0.png,MCUCXR_0001_0.png,Montgomery,1\n"
                                "MCUCXR_0009_0.png,MCUCXR_0009_0.png,Montgomery,0\n")
    ds = load_dataset(root)
    assert [r.id for r in ds] == ["MCUCXR_0001_0"]
    assert ds[0].target == 1 and ds[0].diagnosis == "tuberculosis"  # the table wins over the file name
    assert "1 of 2 rows" in ds.warnings[0]


def test_montgomery_merges_lungs_into_cache_not_into_data(tmp_path: Path) -> None:
    root = make_montgomery(tmp_path / "MontgomerySet")
    before = sorted(p for p in root.rglob("*"))
    ticks: list[tuple[int, int]] = []
    ds = load_dataset(root, progress=lambda d, t: ticks.append((d, t)))
    assert sorted(p for p in root.rglob("*")) == before  # nothing written beside the data
    assert ticks[-1] == (2, 2)
    cache = Path(os.environ["LESION_CACHE"]).resolve()
    assert all(cache in r.mask_path.resolve().parents for r in ds)
    _, mask = load_sample(ds[0])
    assert mask.sum() == 24 and not mask[:, 3:5].any()  # left 12 + right 12, the gap between lungs stays empty
    assert [r.target for r in ds] == [0, 1] and [r.diagnosis for r in ds] == ["normal", "tuberculosis"]
    assert ds[1].meta["sex"] == "female" and ds[1].meta["age"] == 36.0 and ds[0].meta["sex"] is None
    assert load_dataset(root)[0].mask_path == ds[0].mask_path  # second load reuses the cached file


def test_nih14_findings_groups_meta_and_unknown_labels(tmp_path: Path) -> None:
    ds = load_dataset(make_nih(tmp_path))
    assert [r.id for r in ds] == ["00000001_000", "00000001_001", "00000002_000"]
    assert [r.findings for r in ds] == [("Cardiomegaly", "Effusion"), (), ("Hernia", "Odd_Label")]
    assert [r.target for r in ds] == [1, 0, 1] and [r.group for r in ds] == ["1", "1", "2"]
    assert ds.classes == ("Cardiomegaly", "Effusion", "Hernia", "Odd_Label")
    assert dict(ds[1].meta) == {"age": 58.0, "sex": "male", "view": "AP", "patient_id": "1", "follow_up": "1"}
    assert any("1 of 4 rows" in w for w in ds.warnings)
    assert any("Odd_Label" in w and "14 NIH labels" in w for w in ds.warnings)


# ------------------------------------------------------------------------------------------ plain

def test_plain_labels_masks_meta_and_dataset_json(tmp_path: Path) -> None:
    ds = load_dataset(make_plain(tmp_path))
    assert ds.name == "Tiny" and ds.synthetic and ds.domain == "derm"
    assert [r.id for r in ds] == ["a", "b", "c"]
    assert [r.target for r in ds] == [1, 0, 1]  # mel and bcc are malignant
    assert [r.mask_path.name if r.mask_path else None for r in ds] == ["a_mask.png", "b.png", None]
    assert [r.group for r in ds] == ["p1", "p1", "c"]
    assert dict(ds[0].meta) == {"age": 30.0, "sex": "female", "site": None, "split": "train", "view": "x"}
    assert ds[2].meta["sex"] is None and ds[2].meta["age"] == 55.5 and ds[1].meta["view"] is None


def test_plain_cxr_findings_and_target_column(tmp_path: Path) -> None:
    _img(tmp_path / "images" / "x1.png", mode="L")
    _img(tmp_path / "images" / "x2.png", mode="L")
    _img(tmp_path / "images" / "x3.png", mode="L")
    _write(tmp_path / "labels.csv", "image,findings,target\nx1,Effusion|Mass,\nx2,,\nx3,No Finding,1\n")
    ds = load_dataset(tmp_path)
    assert ds.domain == "cxr" and ds.classes == ("Effusion", "Mass")
    assert [r.findings for r in ds] == [("Effusion", "Mass"), (), ()]
    assert [r.target for r in ds] == [1, 0, 1]  # an explicit target wins


def test_plain_without_labels_guesses_domain_from_pixels(tmp_path: Path) -> None:
    _img(tmp_path / "images" / "g.png", mode="L")
    ds = load_dataset(tmp_path)
    assert ds.domain == "cxr" and ds[0].target is None and not ds.has_labels and ds.name == tmp_path.name


# -------------------------------------------------------------------------------------- bad input

def test_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty"):
        detect_layout(tmp_path)


def test_unsupported_folder_lists_every_layout(tmp_path: Path) -> None:
    _write(tmp_path / "notes.txt", "hello")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    for name, layout in LAYOUTS.items():
        assert name in str(err.value) and layout.expects in str(err.value)


def test_parent_folder_error_names_the_data_set_subfolders(tmp_path: Path) -> None:
    make_nih(tmp_path / "nih")
    make_plain(tmp_path / "mine")
    with pytest.raises(DataError, match=r"sub-folders hold data sets: mine \(plain\), nih \(nih14\)"):
        load_dataset(tmp_path)


def test_non_table_file(tmp_path: Path) -> None:
    path = _img(tmp_path / "x.png")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(path)


def test_unknown_layout_name_lists_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'ham10000'") as err:
        load_dataset(make_ham(tmp_path), layout="ham1000")
    assert "plain" in str(err.value) and "nih14" in str(err.value)


def test_csv_missing_required_column_names_column_and_file(tmp_path: Path) -> None:
    root = make_ham(tmp_path)
    _write(root / "HAM10000_metadata.csv", "lesion_id,image_id,age\nHAM_1,ISIC_0000001,40\n")
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv is missing the required column 'dx'"):
        load_dataset(root)


@pytest.mark.parametrize("name, table, column", [("nih14", "Data_Entry_2017.csv", "Finding Labels"),
                                                 ("plain", "labels.csv", "image")])
def test_other_tables_missing_a_column(tmp_path: Path, name: str, table: str, column: str) -> None:
    root = BUILDERS[name](tmp_path)
    _write(root / table, "Image Index,Patient ID\n00000001_000.png,1\n" if name == "nih14" else "file,dx\na,mel\n")
    with pytest.raises(DataError, match=f"missing the required column '{column}'"):
        load_dataset(root, layout=name)


def test_rows_whose_images_are_all_missing(tmp_path: Path) -> None:
    root = make_ham(tmp_path)
    _write(root / "HAM10000_metadata.csv", "lesion_id,image_id,dx\nHAM_9,ISIC_9999999,nv\nHAM_8,ISIC_8888888,mel\n")
    with pytest.raises(DataError, match="None of the 2 rows of HAM10000_metadata.csv"):
        load_dataset(root)


def test_mask_of_another_size_raises_in_load_sample(tmp_path: Path) -> None:
    root = make_plain(tmp_path)
    _mask(root / "masks" / "c.png", size=(W + 1, H))
    ds = load_dataset(root)
    with pytest.raises(MaskShapeError, match="9x6"):
        load_sample(ds.by_id("c"))


def test_duplicate_ids_and_bad_targets(tmp_path: Path) -> None:
    root = make_plain(tmp_path / "dup")
    _img(root / "images" / "a.jpg")  # a.png and a.jpg: ambiguous id "a"
    with pytest.raises(DataError, match="same id 'a'"):
        load_dataset(root)
    root = make_plain(tmp_path / "bad")
    _write(root / "labels.csv", "image,target\na,2\n")
    with pytest.raises(DataError, match="target must be 0 or 1"):
        load_dataset(root)


# -------------------------------------------------------------------------------------- real data

@pytest.mark.realdata
def test_real_ham10000(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "HAM10000")
    assert ds.layout == "ham10000" and len(ds) == 4242 and ds.warnings == ()
    assert len({r.group for r in ds}) == 2901
    # The README's dx counts (nv 1691, mel 1113, ... summing to 5,001) are for the images taken *before* the
    # 759 held-back ones were removed; these are the counts of the 4,242 present (they sum to 4,242).
    assert Counter(r.diagnosis for r in ds) == {"nv": 1441, "bkl": 928, "mel": 927, "bcc": 440, "akiec": 284,
                                                "vasc": 124, "df": 98}
    assert sum(r.target for r in ds) == 927 + 440 + 284
    assert all(r.mask_path is not None for r in ds)
    image, mask = load_sample(ds[0])
    assert image.shape == (150, 200, 3) and mask.shape == (150, 200) and 0 < mask.mean() < 1


@pytest.mark.realdata
def test_real_ph2(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "PH2")
    assert ds.layout == "ph2" and len(ds) == 200
    assert Counter(r.diagnosis for r in ds) == {"common_nevus": 80, "atypical_nevus": 80, "melanoma": 40}
    assert sum(r.target for r in ds) == 40 and all(r.mask_path is not None for r in ds)
    from_csv = load_dataset(shared_data / "PH2" / "PH2_labels.csv")
    assert [(r.id, r.diagnosis, dict(r.meta)) for r in from_csv] == [(r.id, r.diagnosis, dict(r.meta)) for r in ds]
    image, mask = load_sample(ds[0])
    assert image.shape[:2] == mask.shape and max(image.shape[:2]) == 512


@pytest.mark.realdata
def test_real_chest_xray_masks_and_labels(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "ChestXrayMasksAndLabels")
    assert ds.layout == "cxr_masks" and len(ds) == 430 and ds.warnings == ()
    # README: Montgomery 138 (58 TB) and Shenzhen 400 were taken, then ~20% per source and label held back;
    # labels.csv lists what is present: Montgomery 64 normal + 46 TB, Shenzhen 160 + 160.
    assert Counter((r.meta["source"], r.target) for r in ds) == {
        ("Montgomery", 0): 64, ("Montgomery", 1): 46, ("Shenzhen", 0): 160, ("Shenzhen", 1): 160}
    assert all(r.target == int(r.id[-1]) for r in ds)  # labels.csv agrees with the trailing _0/_1 of every name
    assert all(r.mask_path is not None for r in ds)
    image, mask = load_sample(ds.by_id("CHNCXR_0001_0"))
    assert image.shape == (512, 512, 3) and mask.shape == (512, 512) and mask.any()


@pytest.mark.realdata
def test_real_nih_mini(shared_data: Path) -> None:
    ds = load_dataset(shared_data / "NIH_ChestXray14_mini")
    assert ds.layout == "nih14" and len(ds) == 17 and len({r.group for r in ds}) == 11
    counts = Counter(f for r in ds for f in r.findings)
    assert counts["Infiltration"] == 5 and counts["Pleural_Thickening"] == 4 and counts["Effusion"] == 3
    assert sum(not r.findings for r in ds) == 3 and ds.warnings == ()
    image, mask = load_sample(ds[0])
    assert image.ndim == 3 and mask is None


@pytest.mark.realdata
def test_real_parent_folder_is_not_a_data_set(shared_data: Path) -> None:
    with pytest.raises(DataError, match="HAM10000 \\(ham10000\\)"):
        load_dataset(shared_data)
