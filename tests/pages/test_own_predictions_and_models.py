"""Issue "your own models, predictions and masks": a predictions file as a member on the Classification page
(its note and coverage said), and the Models page's CIs and import form."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")


def test_predictions_file_is_a_member_with_its_note_and_coverage(run_page, tmp_path):
    from lesion.data.spec import open_data

    ds = open_data("demo:derm")
    rng = np.random.default_rng(0)
    ids = [r.id for r in ds.records]
    pd.DataFrame({"image_id": ids + ["not_in_data"], "prob": rng.random(len(ids) + 1)}).to_csv(
        tmp_path / "preds.csv", index=False)
    spec = {"path": str(tmp_path / "preds.csv"), "classes": ("melanoma",), "id_column": None, "columns": None}
    at = run_page("views/classification.py", {"_pred_files.derm": {"file: preds": spec}})
    if at.info and any("No classifier checkpoints" in i.value for i in at.info):
        pytest.skip("no classifier checkpoints shipped")
    assert "file: preds" in at.multiselect(key="cls_members").options
    at.multiselect(key="cls_members").set_value(["file: preds"]).run()
    assert not at.exception, [e.value for e in at.exception]
    cov = [c.value for c in at.caption if c.value.startswith("file: preds")]
    assert cov and "id column 'image_id'" in cov[0] and "200 of 200 images matched" in cov[0]
    assert "1 row(s) for images not in these data" in cov[0]
    assert any("a file, no compute" in c.value for c in at.caption)  # the plan says a file costs nothing
    at.button(key="cls_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    aucs = [d.value for d in at.dataframe if "auc" in d.value.columns]
    assert aucs and len(aucs[0]) == 1


def test_models_table_and_csv_carry_cis(run_page):
    at = run_page("views/models.py")
    if not at.dataframe:
        pytest.skip("no checkpoints")
    table = at.dataframe[0].value
    from lesion.train.history import comparison_table
    from lesion.weights import list_weights

    ci_cols = [c for c in table.columns if c.endswith(" 95% CI")]
    assert ci_cols and all(c[: -len(" 95% CI")] in table.columns for c in ci_cols)  # each CI beside its number
    assert any(c.endswith(" 95% CI") for c in comparison_table(list_weights()).columns)  # and in the CSV
    assert any("Import a model" in e.label for e in at.expander)
