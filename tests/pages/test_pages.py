"""Every page runs under Streamlit's AppTest on the built-in demo data: no exception, expected widgets present."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # pages that load torch take seconds on a busy 2-core machine




def test_router_runs_home_page():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.title[0].value == "lesion-lab"


def test_home_shows_demo_and_device(run_page):
    at = run_page()
    assert at.title[0].value == "lesion-lab"
    captions = " ".join(c.value for c in at.caption)
    assert "synthetic" in captions.lower()
    assert "Compute device" in captions and "CPU" in captions
    assert at.radio(key="source_kind").value.startswith("Built-in")
    # The demo set's numbers are on the page.
    assert int(at.metric[0].value) == 200


def test_home_switches_to_cxr_demo(run_page):
    at = run_page()
    at.selectbox(key="demo_choice").set_value("demo:cxr").run()
    assert not at.exception
    assert int(at.metric[0].value) == 60


def test_home_bad_folder_gives_message_not_traceback(run_page, tmp_path):
    at = run_page()
    at.radio(key="source_kind").set_value("Folder on this machine").run()
    at.text_input(key="folder_path").input(str(tmp_path / "does-not-exist")).run()
    assert not at.exception
    assert any("does not exist" in e.value or "not found" in e.value.lower() for e in at.error), [e.value for e in at.error]


def test_segmentation_page_one_image_and_whole_dataset(run_page):
    at = run_page("views/segmentation.py")
    assert at.title[0].value == "Segmentation"
    # image | otsu | (networks) | truth, and the per-image metric table
    assert len(at.dataframe) >= 1
    assert at.selectbox[0].options  # the image picker lists the records
    at.button(key="seg_run_all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # comparison table + per-image table after the run
    frames = [d.value for d in at.dataframe]
    per_image = [f for f in frames if "id" in f.columns and "iou" in f.columns]
    assert per_image and (per_image[-1]["iou"].between(0, 1)).all()
    summary = [f for f in frames if "iou_mean" in f.columns]
    assert summary and set(summary[0]["method"]) >= {"otsu"}
    from lesion.data.spec import open_data
    from lesion.train.heldout import held_out
    from lesion.weights import list_weights

    nets = [c for c in list_weights(task="segmentation", domain="derm")
            if any(d.source == "demo:derm" for d in c.trained_on)]
    if nets:  # the shipped derm networks trained on part of the demo set: held-out images only, by default
        assert any("Training images in this data set" in w.value for w in at.warning)
        held = {r.id for r in held_out(nets[0], open_data("demo:derm")).records}
        assert at.radio(key="seg_subset").value == "held-out"
        assert set(per_image[-1]["id"]) <= held and per_image[-1]["id"].nunique() == len(held)
        at.radio(key="seg_subset").set_value("all").run()
        per_image = [d.value for d in at.dataframe if "id" in d.value.columns and "iou" in d.value.columns]
    assert per_image[-1]["id"].nunique() == 200


def test_segmentation_steps_shown(run_page):
    at = run_page("views/segmentation.py")
    at.checkbox(key="otsu_steps").check().run()
    assert not at.exception
    assert any("step by step" in m.value for m in at.markdown)


def test_models_page(run_page):
    at = run_page("views/models.py")
    assert at.title[0].value == "Models"


def test_models_page_columns_name_the_data_and_split_of_each_metric(run_page):
    """The comparison table shows each card's own numbers, in columns that say on which data and split."""
    from lesion.weights import list_weights

    cards = {c.name: c for c in list_weights(task="classification", domain="derm")}
    if not cards:
        pytest.skip("no derm classifier checkpoints shipped")
    at = run_page("views/models.py")
    at.radio(key="models_task").set_value("classification").run()
    at.radio(key="models_domain").set_value("derm").run()
    assert not at.exception, [e.value for e in at.exception]
    table = [d.value for d in at.dataframe if "model" in d.value.columns][0].set_index("model")
    for name, card in cards.items():
        val, ext = card.metric("auc"), card.metric("auc", split="external")
        assert table.loc[name, f"val AUC ({val.data}, held-out fold)"] == val.value
        if ext is not None:
            assert table.loc[name, f"external AUC ({ext.data}, never trained on)"] == ext.value
    assert any("Licences of the data" in w.value for w in at.warning)


def test_classification_page_without_or_with_models(run_page):
    """With no classifier for the domain it says so; with shipped ones it offers members, TTA and merge."""
    at = run_page("views/classification.py")
    assert at.title[0].value == "Classification"
    if at.info and "No classifier checkpoints" in at.info[0].value:
        return
    assert at.multiselect(key="cls_members").value
    assert at.selectbox(key="cls_tta").value == "d4"


def test_classification_runs_the_shipped_ensemble_and_suggests_members(run_page):
    """With the shipped derm classifiers: ROC table with one row per member + the ensemble, and a suggestion
    that replaces the member list."""
    at = run_page("views/classification.py")
    if at.info and "No classifier checkpoints" in at.info[0].value:
        pytest.skip("no classifier checkpoints shipped")
    at.selectbox(key="cls_tta").set_value("none")
    at.button(key="cls_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    members = at.multiselect(key="cls_members").value
    aucs = [d.value for d in at.dataframe if "auc" in d.value.columns][0]
    assert len(aucs) == len(members) + (1 if len(members) > 1 else 0)
    assert aucs["auc"].between(0, 1).all() and (aucs["ci_lo"] <= aucs["auc"]).all()
    at.number_input(key="cls_k").set_value(1)
    at.button(key="cls_suggest").click().run()
    assert not at.exception
    assert len(at.multiselect(key="cls_members").value) == 1
    assert any("Members set to the suggestion" in s.value for s in at.success)
