"""Failure-review table, filters, the persistent tag store and the export."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from lesion.errors import ConfigError
from lesion.review import TagStore, case_log_loss, build_review_table, export_tagged, filter_cases


@pytest.fixture()
def table():
    agreement = pd.DataFrame({"id": list("abcd"), "agreement": [0.9, 0.2, 0.7, 0.1], "n_components": [1, 3, 1, 2]})
    meta = pd.DataFrame({"id": list("abcd"), "age": [30, 60, np.nan, 45], "sex": ["male", "female", "male", "female"],
                         "site": ["back", "face", "back", "trunk"]})
    # a: TP, b: FP, c: FN, d: TN
    return build_review_table(list("abcd"), [1, 0, 1, 0], [0.8, 0.7, 0.2, 0.1], 0.5, agreement, meta,
                              low_threshold=0.25)


def test_table_flags_and_loss(table):
    t = table.set_index("id")
    assert t.loc["b", "false_positive"] and t.loc["c", "false_negative"]
    assert t["false_positive"].sum() == 1 and t["false_negative"].sum() == 1
    assert list(t["wrong"]) == [False, True, True, False]
    assert t.loc["a", "loss"] == pytest.approx(-np.log(0.8))
    assert t.loc["b", "loss"] == pytest.approx(-np.log(0.3))
    assert list(t["low_agreement"]) == [False, True, False, True]
    assert list(t["inconsistent_attention"]) == [False, True, False, True]
    assert t.loc["a", "site"] == "back"


def test_quantile_rule_and_unlabelled():
    t = build_review_table(["x", "y"], [np.nan, 1], [0.9, 0.9],
                           agreement=pd.DataFrame({"id": ["x", "y"], "agreement": [0.1, 0.5], "n_components": [1, 1]}),
                           low_quantile=0.5)
    assert list(t["low_agreement"]) == [True, False]
    assert not t["false_positive"].any() and np.isnan(t["loss"][0])
    assert case_log_loss(np.array([1.0]), np.array([0.0]))[0] == pytest.approx(-np.log(1e-7))


def test_filters(table):
    assert list(filter_cases(table, ["false_positive", "false_negative"])["id"]) == ["b", "c"]
    assert list(filter_cases(table, ["false_positive", "low_agreement"], any_kind=False)["id"]) == ["b"]
    assert list(filter_cases(table, age=(40, 70))["id"]) == ["b", "d"]  # c has no age
    assert list(filter_cases(table, sex=["male"], site=["back"])["id"]) == ["a", "c"]
    with pytest.raises(ConfigError, match="false_positive"):
        filter_cases(table, ["fp"])


def test_tags_survive_new_store_and_write_atomically(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "review_tags.json"
    s = TagStore(path)
    s.set("b", "label error", "looks benign")
    s.set("c", "model error")
    s2 = TagStore(path)  # a restart
    assert s2.get("b")["note"] == "looks benign" and len(s2) == 2 and "c" in s2
    s2.remove("c")
    assert "c" not in TagStore(path)
    assert [p.name for p in path.parent.iterdir()] == ["review_tags.json"]  # no temp files left

    # A failing write (disk full at os.replace) leaves the previous file intact.
    import lesion.review as review

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(review.os, "replace", boom)
    with pytest.raises(OSError):
        s2.set("d", "ambiguous")
    monkeypatch.undo()
    assert set(json.loads(path.read_text())) == {"b"}
    assert [p.name for p in path.parent.iterdir()] == ["review_tags.json"]


def test_corrupt_tag_file_is_set_aside(tmp_path):
    path = tmp_path / "review_tags.json"
    path.write_text("{not json")
    assert len(TagStore(path)) == 0
    assert (tmp_path / "review_tags.corrupt").is_file()


def test_store_for_dataset_is_in_the_cache_not_the_data(tmp_path):
    from lesion.data.demo import load_demo
    from lesion.paths import cache_dir

    ds = load_demo("cxr")
    store = TagStore.for_dataset(ds)
    assert cache_dir() in store.path.parents and ds.root not in store.path.parents


def test_export(table, tmp_path):
    s = TagStore(tmp_path / "t.json")
    s.set("b", "label error", "n1")
    s.set("d", "interesting")
    img = np.zeros((8, 8, 3), np.uint8)
    csv, zbytes = export_tagged(table, s.all(), {"b": {"image": img, "heatmap": img}})
    df = pd.read_csv(io.BytesIO(csv))
    assert list(df["id"]) == ["b", "d"] and list(df["tag"]) == ["label error", "interesting"]
    with zipfile.ZipFile(io.BytesIO(zbytes)) as z:
        names = set(z.namelist())
        assert names == {"tagged.csv", "b/image.png", "b/heatmap.png"}
        assert z.read("b/image.png")[:8] == b"\x89PNG\r\n\x1a\n"
