"""The Segmentation page's folder-of-masks column and fusion columns, on a folder of generated discs.

Three images with a dark disc; a folder of masks made "elsewhere" holds each disc shifted by a known amount, so its
IoU is known by hand; the fusion of Otsu and that folder by vote (two members: both must agree) is computed here
from Otsu's own mask and compared with the page.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

DISCS = [((60, 80), 30), ((70, 70), 35), ((55, 90), 25)]
SHIFT = 6  # px to the right: the folder's masks


def _disc(cy, cx, r, shift=0):
    yy, xx = np.mgrid[:120, :160]
    return (yy - cy) ** 2 + (xx - cx - shift) ** 2 <= r ** 2


def _data(root):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    pred = root.parent / "pred"
    pred.mkdir()
    rng = np.random.default_rng(0)
    for i, ((cy, cx), r) in enumerate(DISCS):
        m = _disc(cy, cx, r)
        img = np.empty((120, 160, 3), np.float32)
        img[:] = (215, 180, 160)
        img[m] = (90, 55, 40)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"disc{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"disc{i}.png")
        Image.fromarray(_disc(cy, cx, r, SHIFT).astype(np.uint8) * 255).save(pred / f"disc{i}_segmentation.png")
    return root, pred


def _session(root, pred, **more) -> dict:
    return {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(root),
            "_keep.seg_mask_folder": str(pred), "_keep.seg_medsam": False, "_keep.seg_models.derm": [],
            "_keep.seg_fuse_rules": ["mean", "vote", "staple"], **more}


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_folder_and_fusion_columns_in_every_view(run_page, tmp_path):
    from lesion.data.io import read_image
    from lesion.segment.otsu import otsu_segment, preset

    root, pred = _data(tmp_path / "discs")
    at = run_page("views/segmentation.py", _session(root, pred))
    assert any("masks:pred: 3 of 3 images have a mask" in c.value for c in at.caption)
    assert any("Otsu preset 'derm':" in c.value and "PH2 chose nothing" in c.value for c in at.caption)
    one = next(d.value for d in at.dataframe if "method" in d.value.columns).set_index("method")
    assert {"otsu", "masks:pred", "fuse:mean", "fuse:vote", "fuse:staple"} <= set(one.index)
    rid = at.session_state["seg_image_id"]
    (cy, cx), r = DISCS[int(rid[-1])]
    assert one.loc["masks:pred", "iou"] == pytest.approx(_iou(_disc(cy, cx, r, SHIFT), _disc(cy, cx, r)), abs=1e-9)

    at.button(key="seg_run_all").click().run()
    assert not at.exception, [e.value for e in at.exception]
    summary = next(d.value for d in at.dataframe if "iou_mean" in d.value.columns).set_index("method")
    assert {"otsu", "masks:pred", "fuse:mean", "fuse:vote", "fuse:staple"} <= set(summary.index)
    assert (summary.loc[["masks:pred", "fuse:vote"], "n"] == 3).all()
    per_image = next(d.value for d in at.dataframe if "id" in d.value.columns and "iou" in d.value.columns)
    folder_rows = per_image[per_image["method"] == "masks:pred"].set_index("id")
    vote_rows = per_image[per_image["method"] == "fuse:vote"].set_index("id")
    for i, ((cy, cx), r) in enumerate(DISCS):
        truth = _disc(cy, cx, r)
        assert folder_rows.loc[f"disc{i}", "iou"] == pytest.approx(_iou(_disc(cy, cx, r, SHIFT), truth), abs=1e-9)
        # two members (Otsu, the folder): the strict majority is where both say lesion
        otsu = otsu_segment(read_image(root / "images" / f"disc{i}.png"), preset("derm")).mask
        assert vote_rows.loc[f"disc{i}", "iou"] == pytest.approx(_iou(otsu & _disc(cy, cx, r, SHIFT), truth), abs=1e-9)
    assert any(c.value.startswith("fuse:{mean, vote, staple} = fusion of otsu, masks:pred") for c in at.caption)

    # paired scatter and win rate against Otsu: the fusion and the folder are offered
    assert {"masks:pred", "fuse:vote", "fuse:staple"} <= set(at.selectbox(key="seg_pair").options)
    at.selectbox(key="seg_pair").set_value("fuse:staple").run()
    assert not at.exception
    assert any(c.value.startswith("Otsu beats fuse:staple on") for c in at.caption)
    at.selectbox(key="seg_pair").set_value("masks:pred").run()
    assert any(c.value.startswith("Otsu beats masks:pred on") for c in at.caption)


def test_bad_mask_folders_give_one_line(run_page, tmp_path):
    root, pred = _data(tmp_path / "discs")
    at = run_page("views/segmentation.py", _session(root, tmp_path / "nowhere"))
    assert any("is not a folder" in e.value and "\n" not in e.value for e in at.error), [e.value for e in at.error]
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(other / "zzz.png")
    at = run_page("views/segmentation.py", _session(root, other))
    assert any("matches an image id" in e.value for e in at.error)
    one = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert not one["method"].str.startswith("masks:").any()


def test_default_fusion_is_the_one_chosen_on_ham10000(run_page, tmp_path):
    from lesion.segment.fusion import RECOMMENDED

    root, pred = _data(tmp_path / "discs")
    at = run_page("views/segmentation.py", {"_keep.source_kind": "Folder on this machine",
                                            "_keep.folder_path": str(root), "_keep.seg_medsam": False})
    rule = RECOMMENDED["derm"]["rule"]
    assert at.multiselect(key="seg_fuse_rules").value == [rule]
    nets = at.multiselect(key="seg_models.derm").value
    members = at.multiselect(key="seg_fuse_members.derm").value
    roles = RECOMMENDED["derm"]["members_by_rule"][rule]
    if all(any(f"_{r}_" in n for n in nets) for r in roles if r != "otsu"):
        assert len(members) == len(roles) and all(any(f"_{r}_" in m or m == r for m in members) for r in roles)
        one = next(d.value for d in at.dataframe if "method" in d.value.columns)
        assert f"fuse:{rule}" in set(one["method"])
