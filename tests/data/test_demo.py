"""The synthetic demo sets: deterministic, exact masks, believable metadata, leak-free splits, safe caching."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesion.data import demo
from lesion.data.demo import demo_root, generate_cxr, generate_derm, load_demo

ART_COLUMNS = [f"art_{a}" for a in demo.DERM_ARTEFACTS]


@pytest.fixture(scope="module")
def derm_set():
    """The full default derm demo in memory (200 images; generated once for the module)."""
    return list(generate_derm())


@pytest.fixture(scope="module")
def cxr_set():
    return list(generate_cxr())


def _read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------- pure


@pytest.mark.parametrize("gen", [generate_derm, generate_cxr])
def test_same_seed_same_pixels_other_seed_differs(gen):
    a = list(gen(n=3, seed=0))
    b = list(gen(n=3, seed=0))
    c = list(gen(n=3, seed=1))
    for (ia, ma, ra), (ib, mb, rb) in zip(a, b):
        assert ia.tobytes() == ib.tobytes() and ma.tobytes() == mb.tobytes() and ra == rb
    assert any(ia.tobytes() != ic.tobytes() for (ia, _, _), (ic, _, _) in zip(a, c))


def test_derm_counts_shapes_and_columns(derm_set):
    assert len(derm_set) == 200
    img, mask, row = derm_set[0]
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    assert mask.shape == (256, 256) and mask.dtype == bool
    assert list(row) == ["image", "diagnosis", "target", "group", "patient_id", "lesion_id", "age", "sex",
                         "site", "split", *ART_COLUMNS]
    assert len({r["image"] for _, _, r in derm_set}) == 200
    assert {r["diagnosis"] for _, _, r in derm_set} == {"mel", "nv", "bkl", "bcc"}
    assert all(r["target"] == int(r["diagnosis"] in ("mel", "bcc")) for _, _, r in derm_set)
    malignant = np.mean([r["target"] for _, _, r in derm_set])
    assert 0.2 <= malignant <= 0.4  # ≈ 30 %


def test_derm_masks_nonempty_inside_and_exact(derm_set):
    for img, mask, row in derm_set:
        area = mask.mean()
        assert 0.005 < area < 0.6, row["image"]
        # The lesion sits away from the borders of the picture (centre within ±12 % of the middle).
        ys, xs = np.nonzero(mask)
        assert 0.25 * 256 < ys.mean() < 0.75 * 256 and 0.25 * 256 < xs.mean() < 0.75 * 256
    # Exactness: the ring just inside the mask is darker than the ring just outside, for almost every image
    # (hairs or a pen stroke can cross a ring, so not necessarily all).
    kernel = np.ones((7, 7), np.uint8)
    darker = 0
    for img, mask, _ in derm_set:
        m = mask.astype(np.uint8)
        inner = mask & ~cv2.erode(m, kernel).astype(bool)
        outer = cv2.dilate(m, kernel).astype(bool) & ~mask
        grey = img.astype(float).mean(axis=2)
        darker += grey[inner].mean() < grey[outer].mean() - 2
    assert darker >= 0.95 * len(derm_set)


def test_derm_malignant_larger_older_and_more_male(derm_set):
    rows = [r for _, _, r in derm_set]
    area = np.array([m.mean() for _, m, _ in derm_set])
    mal = np.array([r["target"] == 1 for r in rows])
    assert area[mal].mean() > 1.5 * area[~mal].mean()
    ages = np.array([np.nan if r["age"] is None else r["age"] for r in rows], dtype=float)
    assert np.nanmean(ages[mal]) > np.nanmean(ages[~mal]) + 8
    assert np.nanmin(ages) >= 5 and np.nanmax(ages) <= 90
    male = np.array([r["sex"] == "male" for r in rows])
    assert male[mal].mean() > male[~mal].mean()


def test_derm_patients_lesions_views_and_split(derm_set):
    rows = [r for _, _, r in derm_set]
    assert all(r["group"] == r["patient_id"] for r in rows)
    patients = {r["patient_id"] for r in rows}
    assert 50 <= len(patients) <= 70
    per_lesion: dict[str, list[dict]] = {}
    for r in rows:
        per_lesion.setdefault(r["lesion_id"], []).append(r)
    assert {len(v) for v in per_lesion.values()} == {1, 2}  # single images and two-view lesions
    assert all(len({r["patient_id"] for r in v}) == 1 and len({r["diagnosis"] for r in v}) == 1 for v in per_lesion.values())
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # no patient in two splits
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
    assert 0.45 <= counts["train"] / len(rows) <= 0.75


def test_derm_second_view_is_a_small_move_of_the_first(derm_set):
    by_lesion: dict[str, list[np.ndarray]] = {}
    for _, mask, r in derm_set:
        by_lesion.setdefault(r["lesion_id"], []).append(mask)
    pairs = [v for v in by_lesion.values() if len(v) == 2]
    assert pairs
    for a, b in pairs:
        assert a.sum() == pytest.approx(b.sum(), rel=0.05)  # same lesion, same area
        ca, cb = np.argwhere(a).mean(0), np.argwhere(b).mean(0)
        assert np.hypot(*(ca - cb)) < 20  # shifted by at most ±10 px per axis (+ rotation of an off-centre shape)


def test_derm_artefacts_present_in_some_but_not_all(derm_set):
    rows = [r for _, _, r in derm_set]
    for col in ART_COLUMNS:
        frac = np.mean([r[col] for r in rows])
        assert 0.02 < frac < 0.6, col
    # The vignette darkens the corners to near black.
    corners = lambda img: np.concatenate([img[:8, :8].ravel(), img[-8:, -8:].ravel()]).mean()  # noqa: E731
    vig = [corners(i) for i, _, r in derm_set if r["art_vignette"]]
    plain = [corners(i) for i, _, r in derm_set if not r["art_vignette"]]
    assert np.mean(vig) < 40 < np.mean(plain)


def test_cxr_counts_findings_and_two_lungs(cxr_set):
    assert len(cxr_set) == 60
    img, mask, row = cxr_set[0]
    assert img.shape == (256, 256) and img.dtype == np.uint8
    assert list(row) == ["image", "findings", "target", "group", "patient_id", "age", "sex", "view", "split"]
    normal = np.mean([r["findings"] == "" for _, _, r in cxr_set])
    assert 0.25 <= normal <= 0.55  # ≈ 40 % No Finding
    seen = {f for _, _, r in cxr_set for f in r["findings"].split("|") if f}
    assert seen == set(demo.CXR_FINDINGS)
    for img, mask, r in cxr_set:
        assert r["target"] == int(bool(r["findings"])) and r["view"] == "PA"
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        assert n - 1 == 2, r["image"]
        left_x = [np.nonzero(lab == k)[1].mean() for k in (1, 2)]
        assert min(left_x) < 128 < max(left_x)  # one lung on each side of the midline
        # lungs are dark on film: the lung fields are darker than the rest of the body
        assert img[mask].mean() < img[~mask & (img > 60)].mean() - 30


def test_cxr_split_by_patient(cxr_set):
    split_of: dict[str, set[str]] = {}
    for _, _, r in cxr_set:
        split_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    assert {s for v in split_of.values() for s in v} == {"train", "val", "test"}


def test_cxr_effusion_shrinks_the_mask():
    """Mask = aerated lung: the same film with an effusion has less lung than without."""
    from lesion.data._draw import CxrFindings, render_cxr

    _, clear = render_cxr(np.random.default_rng(5), 256, CxrFindings())
    _, wet = render_cxr(np.random.default_rng(5), 256, CxrFindings(effusion=True))
    assert wet.sum() < clear.sum() and not (wet & ~clear).any()


# ------------------------------------------------------------------------------------------ cache


def test_demo_root_writes_plain_layout(tmp_path):
    root = demo_root("cxr", cache_dir=tmp_path, n=4)
    assert root == tmp_path / "demo-v1" / "cxr-seed0-n4"
    names = sorted(p.name for p in (root / "images").iterdir())
    assert names == [f"cxr_{i:04d}.png" for i in range(4)]
    assert sorted(p.name for p in (root / "masks").iterdir()) == names
    grey = cv2.imread(str(root / "images" / names[0]), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2 and grey.dtype == np.uint8  # single-channel 8-bit PNG
    mask = cv2.imread(str(root / "masks" / names[0]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask)) == {0, 255}
    info = json.loads((root / "dataset.json").read_text())
    assert info["name"] == "Demo chest X-ray (synthetic)" and info["domain"] == "cxr" and info["synthetic"] is True
    rows = _read_rows(root)
    assert [r["image"] for r in rows] == names
    # The files hold the generator's pixels exactly.
    first_img, first_mask, _ = next(generate_cxr(n=4))
    assert np.array_equal(grey, first_img) and np.array_equal(mask > 0, first_mask)


def test_demo_root_derm_files_match_generator(tmp_path):
    root = demo_root("derm", cache_dir=tmp_path, n=3, seed=2)
    assert root.name == "derm-seed2-n3"
    rows = _read_rows(root)
    assert list(rows[0]) == ["image", "diagnosis", "target", "group", "patient_id", "lesion_id", "age", "sex",
                             "site", "split", *ART_COLUMNS]
    for (img, mask, row), r in zip(generate_derm(n=3, seed=2), rows):
        on_disk = cv2.cvtColor(cv2.imread(str(root / "images" / r["image"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(on_disk, img)
        assert np.array_equal(cv2.imread(str(root / "masks" / r["image"]), cv2.IMREAD_GRAYSCALE) > 0, mask)
        assert r["diagnosis"] == row["diagnosis"] and r["art_hair"] in ("0", "1")


def test_second_call_does_not_regenerate(tmp_path):
    root = demo_root("cxr", cache_dir=tmp_path, n=3)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert demo_root("cxr", cache_dir=tmp_path, n=3) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamp
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_incomplete_cache_is_regenerated(tmp_path):
    root = demo_root("cxr", cache_dir=tmp_path, n=3)
    good = (root / "images" / "cxr_0001.png").read_bytes()
    (root / "images" / "cxr_0001.png").unlink()  # a crash or a user deleted a file
    (root / "labels.csv").write_text("image\n")
    assert demo_root("cxr", cache_dir=tmp_path, n=3) == root
    assert (root / "images" / "cxr_0001.png").read_bytes() == good
    assert len(_read_rows(root)) == 3


def test_folder_without_marker_is_regenerated(tmp_path):
    root = tmp_path / "demo-v1" / "cxr-seed0-n2"
    (root / "images").mkdir(parents=True)
    (root / "images" / "junk.png").write_bytes(b"not a png")
    demo_root("cxr", cache_dir=tmp_path, n=2)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["cxr_0000.png", "cxr_0001.png"]


def test_unknown_domain_lists_options(tmp_path):
    from lesion.errors import ConfigError

    with pytest.raises(ConfigError, match="derm, cxr"):
        demo_root("mri", cache_dir=tmp_path)


def test_default_location_uses_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_CACHE", str(tmp_path))
    assert demo_root("cxr", n=2) == tmp_path / "demo-v1" / "cxr-seed0-n2"


def test_cli_writes_and_reports(tmp_path, capsys):
    assert demo.main(["--domain", "cxr", "--out", str(tmp_path), "--n", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cxr") in out and "generated" in out
    assert len(list((tmp_path / "cxr" / "images").iterdir())) == 2
    assert demo.main(["--domain", "cxr", "--out", str(tmp_path), "--n", "2", "--seed", "3"]) == 0
    assert "already there" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- through loader


def test_load_demo_reads_back_through_the_plain_loader(tmp_path):
    ds = load_demo("derm", cache_dir=tmp_path, n=6)
    assert ds.name == "Demo dermoscopy (synthetic)" and ds.domain == "derm" and ds.synthetic
    assert ds.layout == "plain" and len(ds) == 6 and ds.has_masks
    rows = {r["image"].removesuffix(".png"): r for r in _read_rows(ds.root)}
    for rec in ds.records:
        r = rows[rec.id]
        assert rec.diagnosis == r["diagnosis"] and rec.target == int(r["target"]) and rec.group == r["patient_id"]
        assert rec.meta["split"] == r["split"] and rec.meta["lesion_id"] == r["lesion_id"]
    cx = load_demo("cxr", cache_dir=tmp_path, n=3)
    assert cx.domain == "cxr" and cx.name == "Demo chest X-ray (synthetic)"
    from lesion.data.io import read_image

    assert read_image(cx.records[0].image_path).shape == (256, 256, 3)  # grey PNG read as RGB
