"""Slices page under AppTest on the demo dermoscopy set with two predictions files (fast, no network needed): the
slice table with greyed small groups, the forest plot, the slice finder with the planted site first, and the model
diff (ΔAUC, per-image table); and with a shipped classifier."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

PAGE = "views/slices.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from lesion.data.spec import open_data
    from lesion.infer.evaluate import label_vector

    ds = open_data("demo:derm")
    frame = ds.to_frame()
    y = label_vector(ds.records, "melanoma")
    rng = np.random.default_rng(0)
    a = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.15, len(y)), 0, 1)
    torso = (frame["site"] == "torso").to_numpy()
    a[torso] = rng.random(torso.sum())  # planted: the torso is where model A fails
    b = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.1, len(y)), 0, 1)
    root = tmp_path_factory.mktemp("preds")
    out = []
    for name, p in (("model_a", a), ("model_b", b)):
        path = root / f"{name}.csv"
        pd.DataFrame({"id": frame["id"], "prob": p}).to_csv(path, index=False)
        out.append(str(path))
    return out


def test_slices_from_predictions_files(run_page, files):
    at = run_page(PAGE)
    assert at.title[0].value == "Slices"
    at.multiselect(key="slices_members").set_value([])
    at.text_area(key="slices_files").input("\n".join(files))
    at.multiselect(key="slices_cols").set_value(["site", "sex"])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="slices_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    frames = [d.value for d in at.dataframe]
    table = next(f for f in frames if "too_small" in getattr(f, "columns", []))
    assert table["too_small"].any() and table.loc[table["too_small"], "auc"].isna().all()
    found = next(f for f in frames if "q" in getattr(f, "columns", []) and "direction" in f.columns)
    assert (found.iloc[0]["column"], found.iloc[0]["value"]) == ("site", "torso")
    assert len(at.get("plotly_chart")) == 1
    assert any("labelled for 'melanoma'" in c.value for c in at.caption)
    labels = [m.label for m in at.metric]
    assert "ΔAUC (B − A)" in labels
    per = next(f for f in frames if "outcome" in getattr(f, "columns", []))
    assert len(per) == 200


def test_slices_with_a_shipped_classifier(run_page):
    at = run_page(PAGE)
    if not at.multiselect(key="slices_members").options:
        pytest.skip("no classifier checkpoints shipped")
    at.button(key="slices_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("too_small" in getattr(d.value, "columns", []) for d in at.dataframe)


def test_slices_computes_held_out_only(run_page, shared_data, plans_held_out_only):
    """A K-fold member on HAM10000: before Run, the Slices page says it computes that member's held-out images
    only (issue 21.1), and the training images are not computed."""
    from lesion.weights import list_weights

    cards = {c.name: c for c in list_weights(domain="derm")}
    if "derm_kfold_multitask_lite0_f0" not in cards:
        pytest.skip("the K-fold members are not shipped")
    folder = shared_data / "HAM10000"
    at = run_page(PAGE, {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(folder)})
    at.multiselect(key="slices_members").set_value(["derm_kfold_multitask_lite0_f0"]).run()
    assert not at.exception, [e.value for e in at.exception]
    plans_held_out_only(at, cards["derm_kfold_multitask_lite0_f0"], folder)
