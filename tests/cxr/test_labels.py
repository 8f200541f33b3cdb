"""Chest X-ray label sets (seed 002): merge / drop / all / tb, class tables, labels per model, lateral views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesion.card import ModelCard
from lesion.classify.cxr import (
    OTHER,
    SEED002_SMALL,
    LabelSet,
    class_table,
    labels_for_model,
    tb_label,
    view_warnings,
)
from lesion.data.records import Record
from lesion.errors import ConfigError, DataError


def rec(i, findings=(), dx=None, view="PA"):
    return Record(id=f"r{i}", image_path=Path(f"r{i}.png"), findings=tuple(findings), diagnosis=dx,
                  target=int(bool(findings)) if dx is None else None, group=f"p{i}", meta={"view": view})


RECS = [
    rec(0, ["Effusion", "Hernia"]),
    rec(1, ["Cardiomegaly"]),
    rec(2, []),
    rec(3, ["Infiltration", "Effusion"]),
    rec(4, ["Edema", "Pneumonia"]),
    rec(5, ["Atelectasis"]),
]


def test_seed002_small_classes_are_its_seven():
    # seed 002 table 3: 20694 images in 'Other' = the sum of these seven classes in its table 2
    counts = {"Cardiomegaly": 3906, "Pneumonia": 2092, "Edema": 3443, "Emphysema": 3586, "Fibrosis": 2211,
              "Pleural_Thickening": 5172, "Hernia": 284}
    assert set(SEED002_SMALL) == set(counts)
    assert sum(counts.values()) == 20694


def test_merge_maps_small_classes_to_other():
    ls = LabelSet("merge").fit(RECS)
    assert ls.classes == ("Atelectasis", "Effusion", "Infiltration", OTHER)
    y = ls.encode(RECS)
    expect = np.array([
        [0, 1, 0, 1],  # Effusion + Hernia -> Effusion, Other
        [0, 0, 0, 1],  # Cardiomegaly -> Other
        [0, 0, 0, 0],  # No Finding
        [0, 1, 1, 0],
        [0, 0, 0, 1],  # Edema + Pneumonia -> one Other
        [1, 0, 0, 0],
    ], np.float32)
    np.testing.assert_array_equal(y, expect)
    assert ls.select(RECS) == RECS


def test_drop_removes_small_classes_and_images_with_only_those():
    ls = LabelSet("drop").fit(RECS)
    assert ls.classes == ("Atelectasis", "Effusion", "Infiltration")
    kept = ls.select(RECS)
    assert [r.id for r in kept] == ["r0", "r2", "r3", "r5"]  # r1 (Cardiomegaly) and r4 (Edema+Pneumonia) removed
    np.testing.assert_array_equal(ls.encode(kept), [[0, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]])


def test_all_keeps_every_finding_and_tb_reads_diagnosis():
    assert LabelSet("all").fit(RECS).classes == ("Atelectasis", "Cardiomegaly", "Edema", "Effusion", "Hernia",
                                                "Infiltration", "Pneumonia")
    tb = [rec(0, dx="tuberculosis"), rec(1, dx="normal"), rec(2, dx=None)]
    ls = LabelSet("tb").fit(tb)
    assert ls.classes == ("tuberculosis",)
    assert [tb_label(r) for r in tb] == [1, 0, None]
    assert [r.id for r in ls.select(tb)] == ["r0", "r1"]
    np.testing.assert_array_equal(ls.encode(ls.select(tb)), [[1], [0]])


def test_unknown_labels_and_bad_modes_get_clear_messages():
    odd = RECS + [rec(9, ["Covid"])]
    with pytest.raises(DataError, match="Covid.*'all' label set"):
        LabelSet("merge").fit(odd)
    assert "Covid" in LabelSet("all").fit(odd).classes
    with pytest.raises(ConfigError, match="label mode"):
        LabelSet("merged")
    with pytest.raises(DataError, match="tuberculosis"):
        LabelSet("tb").fit(RECS)
    with pytest.raises(DataError, match="fit"):
        LabelSet("merge").encode(RECS)


def test_class_table_counts_and_roles():
    t = class_table(RECS, LabelSet("merge").fit(RECS)).set_index("finding")
    assert t.loc["Effusion", "images"] == 2 and t.loc["Effusion", "becomes"] == "own class"
    assert t.loc["Hernia", "becomes"] == "merged into 'Other'"
    assert t.loc["No Finding", "images"] == 1
    t = class_table(RECS, LabelSet("drop").fit(RECS)).set_index("finding")
    assert t.loc["Cardiomegaly", "becomes"] == "dropped"


def test_labels_for_model_follow_the_card():
    card = ModelCard(name="m", task="classification", multilabel=True, classes=("Effusion", OTHER),
                     extra={"label_set": {"mode": "merge", "classes": ["Effusion", OTHER]}})
    y, notes = labels_for_model(card, RECS)
    np.testing.assert_array_equal(y[:, 0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(y[:, 1], [1, 1, 0, 0, 1, 0])
    assert notes == []
    tb_card = ModelCard(name="tb", task="classification", multilabel=True, classes=("tuberculosis",),
                        extra={"label_set": {"mode": "tb", "classes": ["tuberculosis"]}})
    y, notes = labels_for_model(tb_card, RECS)
    assert y is None and "no tuberculosis" in notes[0]


def test_lateral_views_are_flagged():
    recs = RECS + [rec(7, ["Effusion"], view="LL")]
    notes = view_warnings(recs)
    assert len(notes) == 1 and "r7" in notes[0] and "lateral" in notes[0]
    assert view_warnings(RECS) == []


def test_real_nih_sample_under_both_seed002_variants(shared_data):
    from lesion.data import load_dataset

    folder = shared_data / "NIH_ChestXray14_mini"
    if not folder.is_dir():
        pytest.skip("NIH_ChestXray14_mini is not in the shared data")
    ds = load_dataset(folder)
    merged = LabelSet("merge").fit(ds.records)
    dropped = LabelSet("drop").fit(ds.records)
    assert set(merged.classes) - {OTHER} == set(dropped.classes)
    assert set(dropped.classes).isdisjoint(SEED002_SMALL)
    y = merged.encode(ds.records)
    small = [any(f in SEED002_SMALL for f in r.findings) for r in ds.records]
    np.testing.assert_array_equal(y[:, -1], small)  # 'Other' is set exactly where a small class is
    kept = dropped.select(ds.records)
    assert all(not r.findings or any(f not in SEED002_SMALL for f in r.findings) for r in kept)
    table = class_table(ds.records, merged)
    assert table.set_index("finding").loc["No Finding", "images"] == sum(not r.findings for r in ds.records)


def test_tb_is_a_binary_target_for_the_classification_pages():
    from lesion.classify.models import record_label
    from lesion.infer.evaluate import label_vector

    recs = [rec(0, dx="tuberculosis"), rec(1, dx="normal"), rec(2, ["Effusion"])]
    assert [record_label(r, "tb") for r in recs] == [1.0, 0.0, None]
    np.testing.assert_array_equal(label_vector(recs, "tb"), [1.0, 0.0, np.nan])
