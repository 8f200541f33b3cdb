"""Multi-view fusion page under AppTest on the demo dermoscopy set: case counts, the shipped classifier fused
per lesion (one ROC chart, an AUC table with the four methods, a per-case table), and the messages for a bad
case column, a column without multi-view cases and chest X-ray data."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

PAGE = "views/fusion.py"


def test_demo_cases_counted_by_lesion(run_page):
    at = run_page(PAGE)
    assert at.title[0].value == "Multi-view fusion"
    case = at.selectbox(key="fus_case")
    assert case.value == "lesion_id" and "patient_id" in case.options and "site" not in case.options
    metrics = {m.label: int(m.value) for m in at.metric}
    assert metrics["Cases with 1 view"] + metrics["Cases with ≥ 2 views"] == metrics["Cases"]
    assert metrics["Cases with ≥ 2 views"] >= 20


def test_fusion_with_shipped_classifier_gives_roc_and_four_methods(run_page):
    at = run_page(PAGE)
    if any("No classifier checkpoints" in i.value for i in at.info):
        pytest.skip("no classifier checkpoints shipped")
    at.selectbox(key="fus_tta").set_value("none")
    at.button(key="fus_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 1
    frames = [d.value for d in at.dataframe]
    auc = [f for f in frames if "auc" in f.columns][0]
    assert list(auc["method"]) == ["per view", "one random view", "mean", "max", "log_mean", "stacker"]
    assert auc["≥ per view"].iloc[2:].notna().all() and auc["≥ per view"].iloc[:2].isna().all()
    assert auc["auc"].between(0, 1).all() and (auc["ci_lo"] <= auc["auc"]).all()
    cases = [f for f in frames if "n_views" in f.columns][0]
    assert len(cases) == int(next(m.value for m in at.metric if m.label == "Cases"))
    assert {"mean", "max", "log_mean", "stacker", "label", "views"} <= set(cases.columns)
    assert any("max of its views' labels" in c.value for c in at.caption)


def test_bad_case_column_messages(run_page):
    at = run_page(PAGE)
    at.text_input(key="fus_case_custom").input("nope").run()
    assert not at.exception
    assert any("no column 'nope'" in e.value and "lesion_id" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="fus_case_custom").input("id").run()
    assert not at.exception
    assert any("has one image" in e.value and "lesion_id" in e.value for e in at.error), [e.value for e in at.error]


def test_chest_xray_data_message(run_page):
    at = run_page(PAGE, {"demo_choice": "demo:cxr"})
    assert any("dermoscopy" in i.value for i in at.info)
    at.button(key="fus_use_demo").click().run()
    assert not at.exception
    assert at.session_state["dataset_source"] == "demo:derm"
    assert at.selectbox(key="fus_case").value == "lesion_id"
