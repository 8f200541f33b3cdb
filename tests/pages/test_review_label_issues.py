"""Failure review's label-issue column under AppTest (tiny untrained classifier on the demo set): the cleanlab
score and rank are columns, sortable, a filter keeps the flagged cases, and tagging one lands in the tags store."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import torch

    from lesion.card import ModelCard, Preprocessing
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    prep = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=False)
    torch.manual_seed(0)
    ccfg = ClsModelConfig("resnet10t", num_classes=1, size=64)
    save_checkpoint(create_model(ccfg), folder / "tiny_cls",
                    ModelCard(name="tiny_cls", task="classification", model={**ccfg.__dict__}, domain="derm",
                              classes=("melanoma",), target="melanoma", arch="resnet10t", preprocessing=prep))
    return folder


def test_label_issue_column_filter_and_tag(run_page, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", tiny_weights)
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    at = run_page("pages/review.py")
    at.button(key="review_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = [d.value for d in at.dataframe if "false_positive" in d.value.columns][0]
    assert {"label_issue_score", "label_issue_rank", "label_issue"} <= set(table.columns)
    assert table["label_issue_score"].notna().any()
    at.selectbox(key="review_sort").set_value("label_issue_score").run()
    shown = [d.value for d in at.dataframe if "false_positive" in d.value.columns][0]
    assert shown["label_issue_score"].dropna().is_monotonic_decreasing
    at.checkbox(key="review_label_issues").check().run()
    assert not at.exception, [e.value for e in at.exception]
    flagged = [d.value for d in at.dataframe if "false_positive" in d.value.columns][0]
    assert flagged["label_issue"].all()
    if len(flagged):
        first = at.selectbox(key="review_tag_id").options[0]
        assert first == flagged["id"].iloc[0]
        at.selectbox(key="review_tag").set_value("label error").run()
        at.button(key="review_tag_save").click().run()
        from lesion.review import TAGS_FILE

        tags = list((tmp_path / "cache").rglob(TAGS_FILE))
        assert tags and first in tags[0].read_text() and "label error" in tags[0].read_text()
