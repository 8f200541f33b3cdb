"""Issue 21.5, readable at 1,400 × 1,000: a table too wide for the page scrolls sideways with the columns that
name its rows pinned (so a scrolled row still says whose numbers they are); galleries wrap at four images per row.
The end-to-end test measures the same in Chromium (widths, overlaps, legends)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("streamlit")

#: A table with this many columns or more does not fit beside the sidebar at 1,400 px without scrolling.
WIDE = 7


def _unpinned_wide_tables(at) -> list[list[str]]:
    out = []
    for d in at.dataframe:
        cols = list(d.value.columns)
        if len(cols) < WIDE:
            continue
        config = json.loads(d.proto.columns or "{}")
        if not any(isinstance(v, dict) and v.get("pinned") for v in config.values()):
            out.append(cols[:4])
    return out


def test_wide_tables_pin_their_key_columns_on_segmentation(run_page):
    at = run_page("views/segmentation.py")
    at.button(key="seg_run_all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    wide = [d for d in at.dataframe if len(d.value.columns) >= WIDE]
    assert wide  # the per-image table (id, split, method, scores) at least
    assert not _unpinned_wide_tables(at), _unpinned_wide_tables(at)
    per_image = [d.value for d in at.dataframe if "split" in d.value.columns][-1]
    assert list(per_image.columns[:3]) == ["id", "split", "method"] and per_image.columns[3] == "iou"


def test_wide_tables_pin_their_key_columns_on_models(run_page):
    at = run_page("views/models.py")
    assert [d for d in at.dataframe if len(d.value.columns) >= WIDE]
    assert not _unpinned_wide_tables(at), _unpinned_wide_tables(at)


def test_pinned_keeps_a_key_columns_own_config():
    import streamlit as st

    from ui.tables import pinned

    cfg = pinned(["method", "auc", "other"], extra={"auc": st.column_config.NumberColumn(format="%.3f")})
    assert set(cfg) == {"method", "auc"} and cfg["method"]["pinned"] is True


def test_image_grid_wraps_at_four_per_row():
    from streamlit.testing.v1 import AppTest

    def script():
        import numpy as np

        from ui.charts import image_grid

        image_grid([(f"p{i}", np.zeros((8, 8, 3), np.uint8)) for i in range(6)])

    at = AppTest.from_function(script)
    at.run()
    assert not at.exception
    # two rows of four columns (6 images: 4 + 2), never six thumbnails side by side
    assert [len(c.children) for c in at.columns] == [1, 1, 1, 1, 1, 1, 0, 0]
