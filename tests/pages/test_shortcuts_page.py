"""Shortcut audit page under AppTest on the demo dermoscopy set with the smallest shipped classifier: the plan said
before Run, a seeded sample, correctness at the threshold the page states, the verdict recomputed from the table it
shows, the scatter, and the image a click (or the picker) opens; the click → id mapping by hand."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("streamlit")

PAGE = "views/shortcuts.py"
N = 40


def test_clicked_id():
    from ui.shortcuts import clicked_id

    assert clicked_id(None) is None and clicked_id({"selection": {"points": []}}) is None
    assert clicked_id({"selection": {"points": [{"customdata": ["img_7"], "curve_number": 1, "point_index": 0}]}}) \
        == "img_7"
    by_curve = {0: ["a", "b"], 1: ["c", "d", "e"]}
    assert clicked_id({"selection": {"points": [{"curve_number": 1, "point_index": 2}]}}, by_curve) == "e"
    assert clicked_id({"points": [{"curve_number": 0, "point_number": 1}]}, by_curve) == "b"
    assert clicked_id({"selection": {"points": [{"curve_number": 0, "point_index": 9}]}}, by_curve) is None


def test_audit_of_a_seeded_sample(run_page):
    from lesion.analyse.shortcuts import GT_LESION, sample_records, shortcut_verdict
    from lesion.data.spec import open_data

    at = run_page(PAGE)
    assert at.title[0].value == "Shortcut audit"
    if not at.selectbox(key="shortcuts_model").options:
        pytest.skip("no classifier checkpoints shipped")
    assert at.selectbox(key="shortcuts_method").value == "gradcam"
    at.checkbox(key="shortcuts_sample_on").check().run()
    at.number_input(key="shortcuts_n").set_value(N).run()
    assert not at.exception, [e.value for e in at.exception]
    plan = next(c.value for c in at.caption if "This run computes" in c.value)
    assert f"{N} images × 1 member × 1 gradcam pass" in plan and "seed 0" in plan and "ms per heatmap" in plan
    at.button(key="shortcuts_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

    table = next(d.value for d in at.dataframe if "outside_mass" in d.value.columns)
    assert list(table.columns[:4]) == ["id", "outside_mass", "correct", "probability"]
    assert {"label", "mask_source", "split"} <= set(table.columns)
    ds = open_data("demo:derm")
    expected = [r.id for r in sample_records([r for r in ds.records if r.diagnosis], N, 0)]
    assert sorted(table["id"]) == sorted(expected)  # the seeded sample, every image with its lesion mask
    assert (table["mask_source"] == GT_LESION).all() and (table["split"] == "held-out").all()
    assert table["outside_mass"].dropna().between(0, 1).all()
    assert table["outside_mass"].dropna().is_monotonic_decreasing

    # correctness at the threshold the page states
    in_use = next(c.value for c in at.caption if c.value.startswith("In use:"))
    thr = float(re.search(r"threshold ([0-9.]+)", in_use).group(1))
    assert (table["correct"] == ((table["probability"] >= thr) == (table["label"] == 1))).all()

    # the verdict is the one of the table shown
    v = shortcut_verdict(table["outside_mass"], ~table["correct"].astype(bool), n_boot=1000)
    if v["note"]:
        assert any("no AUROC on this group" in i.value for i in at.info)
    else:
        shown = {m.label: m.value for m in at.metric}
        assert shown["AUROC of outside mass for 'wrong'"] == f"{v['auc']:.3f}"
        assert shown["95% CI"] == f"{v['ci'][0]:.3f}–{v['ci'][1]:.3f}"
        assert any(v["verdict"].capitalize() in b.value for b in [*at.success, *at.warning, *at.info])
    assert len(at.get("plotly_chart")) == 1

    # a click (the page reads the id the scatter sets) opens that image with its CAM and mask
    last = table["id"].iloc[-1]
    at.session_state["shortcuts_image_id"] = last
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    row = table.set_index("id").loc[last]
    line = next(m.value for m in at.markdown if m.value.startswith(f"**{last}**"))
    assert f"outside mass **{row['outside_mass']:.2f}**" in line
    captions = " ".join(str(c) for i in at.get("image") for c in (i.captions or []))
    assert "gradcam" in captions and GT_LESION in captions


def test_xray_demo_without_tb_labels_says_so(run_page):
    at = run_page(PAGE, {"demo_choice": "demo:cxr"})
    if any("No classifier checkpoints" in i.value for i in at.info):
        pytest.skip("no X-ray classifier shipped")
    assert any("has a 'tb' label" in i.value for i in at.info), [i.value for i in at.info]
