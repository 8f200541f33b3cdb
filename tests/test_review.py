"""Failure-review table, filters, the persistent tag store and the export."""
from __future__ import annotations

import io
import json
import time
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


def _names(folder) -> list[str]:
    """Files of a folder, less the store's lock file (it stays, as filelock's lock files do)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_tags_survive_new_store_and_write_atomically(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "review_tags.json"
    s = TagStore(path)
    s.set("b", "label error", "looks benign")
    s.set("c", "model error")
    s2 = TagStore(path)  # a restart
    assert s2.get("b")["note"] == "looks benign" and len(s2) == 2 and "c" in s2
    s2.remove("c")
    assert "c" not in TagStore(path)
    assert _names(path.parent) == ["review_tags.json"]  # no temp files left

    # A failing write (disk full at os.replace) leaves the previous file intact.
    import lesion.review as review

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(review.os, "replace", boom)
    with pytest.raises(OSError):
        s2.set("d", "ambiguous")
    monkeypatch.undo()
    assert set(json.loads(path.read_text())) == {"b"}
    assert _names(path.parent) == ["review_tags.json"]


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


# ---------------------------------------------------------------------------------------------------------
# Concurrent writers and killed writers (issue 12)
# ---------------------------------------------------------------------------------------------------------
_WRITER = """
import sys, time
from pathlib import Path
from lesion.review import TagStore
path, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
store = TagStore(path)  # loaded before the other writer's tags exist: a stale copy unless set() re-reads
deadline = time.time() + 60
while not go.exists() and time.time() < deadline:
    time.sleep(0.005)
for i in range(n):
    store.set(f"{prefix}{i:03d}", "label error", f"{prefix} note {i}")
"""


def test_two_writers_keep_every_tag(tmp_path):
    # Separate interpreters (not multiprocessing): a spawned child would re-run whatever script the test
    # session last ran as __main__ (an AppTest page).
    import subprocess
    import sys

    path = tmp_path / "review_tags.json"
    TagStore(path).set("before", "ambiguous")  # a tag from an earlier session survives too
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), prefix, "100", str(go)])
             for prefix in ("a", "b")]
    time.sleep(1.0)  # both have loaded their stale copy
    go.touch()
    for p in procs:
        assert p.wait(120) == 0
    data = json.loads(path.read_text())
    assert len(data) == 201
    assert set(data) == {"before"} | {f"{p}{i:03d}" for p in "ab" for i in range(100)}
    assert data["b042"]["note"] == "b note 42"
    assert len(TagStore(path)) == 201 and _names(tmp_path) == ["go", "review_tags.json"]


def test_stale_store_does_not_write_back_its_old_copy(tmp_path):
    path = tmp_path / "review_tags.json"
    first, second = TagStore(path), TagStore(path)  # two sessions of the app, both started on an empty store
    first.set("a", "label error")
    second.set("b", "model error")  # must not drop "a"
    first.remove("zzz")  # a no-op change
    assert set(json.loads(path.read_text())) == {"a", "b"}
    assert set(first.all()) == {"a", "b"} and "b" in first and first.get("b")["tag"] == "model error"
    second.remove("a")
    assert "a" not in first and len(first) == 1


_KILLED_WRITER = r"""
import sys
from lesion.review import TagStore
store = TagStore(sys.argv[1])
prefix = sys.argv[2]
print("ready", flush=True)
for i in range(100000):
    store.set(f"{prefix}-{i:05d}", "interesting", "x" * (i % 50))
    print(i, flush=True)  # printed only after set() returned: this tag is promised to be on disk
"""


def test_killed_writer_leaves_a_valid_store_with_every_written_tag(tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "review_tags.json"
    rng = random.Random(12)
    promised: set[str] = set()
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), f"r{round_}"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))  # seeded random moment, anywhere in a write (lock, fsync, replace)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        written = [int(line) for line in out.split()]
        promised |= {f"r{round_}-{i:05d}" for i in written}
        data = json.loads(path.read_text()) if path.exists() else {}  # always valid JSON
        assert isinstance(data, dict) and promised <= set(data), f"round {round_}: lost {sorted(promised - set(data))[:5]}"
        assert all(v["tag"] == "interesting" for v in data.values())
    assert len(promised) > 0
    # the lock died with its writer: a new session writes at once, and no .corrupt file was ever made
    TagStore(path).set("after", "ambiguous")
    assert "after" in TagStore(path) and not list(tmp_path.glob("*.corrupt*"))
