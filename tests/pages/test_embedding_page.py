"""Embedding map page: the selection -> rows mapping, fixed colours and the training mark (pure helpers of
ui/embedding.py); the page under AppTest on the demo dermoscopy set with the cheapest shipped classifier (PCA map,
pick by id, nearest neighbours, colour by error at the threshold); a predictions file gets the one line saying it
has no features; and (LESION_RUN_SLOW=1) the UMAP map."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from ui.embedding import (FIXED_COLOURS, NEGATIVE, POSITIVE, category_colours, map_figure,  # noqa: E402
                          map_frame, selected_rows)

PAGE = "views/embedding.py"


def _frame(training=frozenset()):
    ids = ["a", "b", "c", "d", "e", "f"]
    y = np.array([1, 0, 1, 0, np.nan, 1])
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.5, 0.7])
    xy = np.arange(12, dtype=float).reshape(6, 2)
    return map_frame(ids, xy, y, p, 0.5, "melanoma", training)


def test_selected_points_map_to_the_right_images():
    df = _frame()
    fig, trace_rows = map_figure(df, "label", "t")
    names = [t.name for t in fig.data]
    assert names == ["melanoma (n=3)", "not melanoma (n=2)", "unlabelled (n=1)"]
    assert trace_rows == [[0, 2, 5], [1, 3], [4]]
    # what Streamlit returns for a click / lasso: curve and point index (and customdata, the row, when set)
    points = [{"curve_number": 0, "point_index": 2}, {"curve_number": 1, "point_number": 0},
              {"curve_number": 0, "point_index": 2},  # the same point twice (box + click)
              {"curve_number": 7, "point_index": 0}, {"curve_number": 1, "point_index": 9}, {}]  # no such point
    rows = selected_rows(points, trace_rows)
    assert rows == [1, 5] and df.loc[rows, "id"].tolist() == ["b", "f"]
    # customdata wins: the figure puts each point's row there
    fig_rows = [int(r[0]) for r in fig.data[1].customdata]
    assert fig_rows == [1, 3]
    assert selected_rows([{"customdata": [3], "curve_number": 0, "point_index": 0}], trace_rows) == [3]
    assert selected_rows(None, trace_rows) == [] and selected_rows([], trace_rows) == []


def test_outcomes_and_training_marks_in_the_frame_and_figure():
    df = _frame(training=frozenset({"b", "e"}))
    assert df["outcome"].tolist() == ["true positive", "false positive", "false negative", "true negative",
                                      "unlabelled", "true positive"]
    assert df.loc[df["split"] == "training", "id"].tolist() == ["b", "e"]
    fig, trace_rows = map_figure(df, "outcome", "t")
    symbol = {r: s for t, rows in zip(fig.data, trace_rows) for r, s in zip(rows, t.marker.symbol)}
    assert symbol == {0: "circle", 1: "x", 2: "circle", 3: "circle", 4: "x", 5: "circle"}
    colour = {t.name.split(" (")[0]: t.marker.color for t in fig.data}
    assert colour["false positive"] == FIXED_COLOURS["false positive"]
    assert colour["false negative"] == FIXED_COLOURS["false negative"]
    # a ringed pick is one more trace whose rows are the picked ones
    fig, trace_rows = map_figure(df, "prob", "t", highlight=[4, 1])
    assert trace_rows[-1] == [1, 4] and fig.data[-1].name == "picked (n=2)"


def test_same_category_same_colour_whatever_the_order():
    a = category_colours(["site: torso", "head", "false positive", "head"])
    b = category_colours(["false positive", "head", "site: torso"])
    assert a == b and a["false positive"] == FIXED_COLOURS["false positive"]
    assert len(set(category_colours([f"c{i}" for i in range(10)]).values())) == 10
    fixed = {"melanoma": POSITIVE, "not melanoma": NEGATIVE}
    assert category_colours(["not melanoma", "melanoma"], fixed) == fixed


def _shipped_classifier_or_skip(at):
    if not at.selectbox(key="embedding_member").options:
        pytest.skip("no classifier checkpoints shipped")


def test_page_maps_the_demo_set_and_opens_picked_images(run_page):
    at = run_page(PAGE)
    assert at.title[0].value == "Embedding map"
    _shipped_classifier_or_skip(at)
    member = at.selectbox(key="embedding_member").value
    plan = " ".join(c.value for c in at.caption)
    assert "This run computes 200 images" in plan and "penultimate features" in plan and member in plan
    at.radio(key="embedding_proj").set_value("pca").run()
    at.button(key="embedding_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    title = spec["layout"]["title"]["text"].replace("<br>", " ")
    assert title.startswith("PCA") and "200 images" in title and member in title and "truth for 'melanoma'" in title
    legend = [t["name"] for t in spec["data"]]
    assert sum(int(n.split("n=")[1].rstrip(")")) for n in legend) == 200

    # colour by the error at the threshold in use: the title says which threshold and where it came from
    at.selectbox(key="embedding_colour").set_value("outcome").run()
    title = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"].replace("<br>", " ")
    assert "outcome at the" in title and "chosen on these images" in title

    # the fallback pick (what a lasso does in the browser): chosen ids -> gallery + table of exactly those images
    at.radio(key="embedding_pick_by").set_value("ids").run()
    ids = at.multiselect(key="embedding_ids").options
    pick = [ids[3], ids[17], ids[150]]
    at.multiselect(key="embedding_ids").set_value(pick).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value == "Selected: 3 of 200 images"
    table = at.dataframe[0].value
    assert table["id"].tolist() == pick and set(table["split"]) == {"held-out"}
    assert table["prob"].between(0, 1).all() and "label_issue_score" in table.columns
    captions = [str(c) for i in at.get("image") for c in (i.captions or [])]  # the thumbnails, one per image
    assert [c.split(" · ")[0] for c in captions] == pick and all(c.endswith("held-out") for c in captions)

    # nearest neighbours in feature space: the image itself first (similarity 1), then k others
    at.radio(key="embedding_pick_by").set_value("neighbours").run()
    at.selectbox(key="embedding_anchor").set_value(pick[1])
    at.number_input(key="embedding_k").set_value(5).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert len(table) == 6 and table.iloc[0]["id"] == pick[1] and table.iloc[0]["similarity"] == pytest.approx(1.0)
    assert table["similarity"].is_monotonic_decreasing


def test_a_predictions_file_gets_one_line_and_no_map(run_page, tmp_path):
    from lesion.data.spec import open_data

    ids = [r.id for r in open_data("demo:derm").records]
    path = tmp_path / "theirs.csv"
    pd.DataFrame({"id": ids, "prob": np.linspace(0, 1, len(ids))}).to_csv(path, index=False)
    at = run_page(PAGE)
    at.text_input(key="embedding.pred_path").input(str(path))
    at.button(key="embedding.pred_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="embedding_member").set_value("file: theirs").run()
    assert not at.exception, [e.value for e in at.exception]
    infos = [i.value for i in at.info]
    assert len(infos) == 1 and "has no features" in infos[0] and "predictions file" in infos[0]
    assert "\n" not in infos[0]
    assert not at.get("plotly_chart") and not [b for b in at.button if b.key == "embedding_run"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LESION_RUN_SLOW"),
                    reason="UMAP's numba compile takes 1-2 min (LESION_RUN_SLOW=1)")
def test_page_umap_map(run_page):
    at = run_page(PAGE)
    _shipped_classifier_or_skip(at)
    at.radio(key="embedding_proj").set_value("umap").run()
    at.button(key="embedding_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    title = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"].replace("<br>", " ")
    assert title.startswith("UMAP") and "15 neighbours" in title and "seed 0" in title
