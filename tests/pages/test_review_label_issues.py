"""Failure review's label-issue column under AppTest (tiny untrained classifier on the demo set): the cleanlab
score and rank are columns, sortable, a filter keeps the flagged cases, and tagging one lands in the tags store."""
from __future__ import annotations

from pathlib import Path

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
    at = run_page("views/review.py")
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


def test_near_duplicates_and_a_copy_in_another_folder(run_page, tiny_weights, tmp_path, monkeypatch, demo_folder):
    """Failure review's near-duplicate section (issue 22.2): a planted re-saved copy inside the data set is found
    at distance 0, and a resized copy in another folder is listed as a pair across folders."""
    import pandas as pd
    from PIL import Image

    monkeypatch.setattr("lesion.weights.WEIGHTS_DIR", tiny_weights)
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    root, rows = demo_folder(tmp_path / "data", 24)
    first = root / "images" / rows[0]["image"]
    Image.open(first).convert("RGB").save(root / "images" / "planted_copy.png")  # same pixels, another file
    pd.DataFrame(rows + [{**rows[0], "image": "planted_copy.png"}]).to_csv(root / "labels.csv", index=False)
    other, _ = demo_folder(tmp_path / "other", 0)
    third = Image.open(root / "images" / rows[3]["image"]).convert("RGB")
    third.resize((third.width // 2, third.height // 2)).save(other / "images" / "resized.png")
    pd.DataFrame([{**rows[3], "image": "resized.png"}]).to_csv(other / "labels.csv", index=False)

    at = run_page("views/review.py", {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(root)})
    at.button(key="review_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="review_leaks_other").input(str(other)).run()
    at.button(key="review_leaks_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.checkbox(key="review_leaks_across").uncheck().run()
    pairs = [d.value for d in at.dataframe if "id_a" in d.value.columns][-1]
    first_id, third_id = Path(rows[0]["image"]).stem, Path(rows[3]["image"]).stem
    within = pairs[~pairs["across"]]
    assert any({a, b} == {first_id, "planted_copy"} and d == 0
               for a, b, d in zip(within["id_a"], within["id_b"], within["distance"]))
    across = pairs[pairs["across"]]
    assert any(third_id in (a, b) and ":resized" in a + b for a, b in zip(across["id_a"], across["id_b"]))
