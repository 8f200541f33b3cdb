"""Shortcut audit: the outside-the-mask share by hand, the verdict on planted attention, and (with a shipped
classifier) the per-image table over demo images, cached by content; X-ray audits: heat planted outside two lung
fields, the mask-source rule, predicted lung fields cached by content, and a planted lung network standing in for
missing lung masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesion.analyse.shortcuts import (GT_LESION, GT_LUNGS, NO_MASK, References, judge, mask_source, outside_mass,
                                      outside_table, sample_records, shortcut_verdict, verdict_meaning)
from lesion.data.records import Record
from lesion.segment.lungs import LungFields, default_lung_model


def test_outside_mass_by_hand():
    heat = np.ones((4, 4))
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert outside_mass(heat, mask) == pytest.approx(0.5)
    heat[2:] = 0
    assert outside_mass(heat, mask) == pytest.approx(0.0)
    assert np.isnan(outside_mass(heat, None)) and np.isnan(outside_mass(np.zeros((4, 4)), mask))


def test_attention_outside_that_predicts_errors_is_supported():
    rng = np.random.default_rng(0)
    wrong = rng.random(400) < 0.2
    outside = np.clip(0.2 + 0.4 * wrong + rng.normal(0, 0.12, 400), 0, 1)  # planted: errors look outside
    outside[:10] = np.nan  # no mask
    v = shortcut_verdict(outside, wrong, n_boot=300)
    assert v["verdict"] == "supports" and v["ci"][0] > 0.5 and v["n_no_mask"] == 10 and v["n"] == 390
    assert v["mean_outside_wrong"] > v["mean_outside_right"]
    noise = shortcut_verdict(rng.random(400), wrong, n_boot=300)
    assert noise["verdict"] == "inconclusive"
    few = shortcut_verdict([0.9, 0.8, 0.1, 0.2, 0.3, 0.2, 0.1], [1, 1, 0, 0, 0, 0, 0])
    assert np.isnan(few["auc"]) and few["verdict"] == "inconclusive" and "too few" in few["note"]


def test_sample_is_seeded_and_keeps_order():
    recs = list(range(50))
    s = sample_records(recs, 10, seed=3)
    assert s == sorted(s) and len(s) == 10 and s == sample_records(recs, 10, seed=3)
    assert sample_records(recs, None) == recs


def test_outside_table_with_a_shipped_classifier_is_cached():
    import torch

    from lesion.data.spec import open_data
    from lesion.paths import WEIGHTS_DIR
    from lesion.zoo import load_model

    name = "derm_cls_efficientnet_lite0_focal"
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip("shipped classifier absent")
    torch.set_num_threads(1)
    model, card = load_model(name)
    recs = open_data("demo:derm").records[:4]
    t = outside_table(model, card, recs, "gradcam", batch_size=4)
    assert t["id"].tolist() == [r.id for r in recs] and t["has_mask"].all()
    ok = t["outside"].notna()
    assert ok.any() and t["outside"][ok].between(0, 1).all()  # an all-zero CAM has no share (NaN)
    again = outside_table(model, card, recs, "gradcam")
    assert np.allclose(again["outside"], t["outside"], equal_nan=True)


# ------------------------------------------------------------------ X-ray: the lung fields as the reference

def _lungs(h: int = 64, w: int = 64) -> np.ndarray:
    """Two upright ellipses, like the lung fields of a PA radiograph."""
    yy, xx = np.mgrid[0:h, 0:w]
    left = ((yy - 32) / 22) ** 2 + ((xx - 18) / 10) ** 2 <= 1
    right = ((yy - 32) / 22) ** 2 + ((xx - 46) / 10) ** 2 <= 1
    return left | right


def test_planted_heat_outside_the_lungs_is_all_outside():
    lungs = _lungs()
    heat = np.zeros((64, 64))
    heat[5:60, 29:35] = 1.0  # the mediastinum, between the two fields
    heat[0:4, :] = 0.5  # a label burnt into the top edge
    assert outside_mass(heat, lungs) == pytest.approx(1.0)
    assert outside_mass(np.where(lungs, 1.0, 0.0), lungs) == pytest.approx(0.0)
    # a flat map: the share outside is the share of pixels outside the lungs
    assert outside_mass(np.ones((64, 64)), lungs) == pytest.approx(1 - lungs.mean())


class _Planted:
    """A lung segmenter that returns a fixed probability map and counts its calls."""

    threshold = 0.5

    def __init__(self, prob: np.ndarray | None = None):
        self.prob, self.calls = prob, 0

    def __call__(self, image):
        self.calls += 1
        return self.prob if self.prob is not None else np.where(_lungs(*image.shape[:2]), 0.9, 0.1)


def _planted_fields(seg: _Planted, identity: str = "planted-1") -> LungFields:
    return LungFields("planted_lungs", loader=lambda: seg, identity=identity, arch="unet")


def test_mask_source_rule():
    lungs = _planted_fields(_Planted())
    with_mask = Record("a", Path("a.png"), Path("a_mask.png"))
    without = Record("b", Path("b.png"))
    assert mask_source(with_mask, "derm") == GT_LESION and mask_source(without, "derm") == NO_MASK
    assert mask_source(without, "derm", lungs) == NO_MASK  # a lung network never stands in for a lesion mask
    assert mask_source(with_mask, "cxr", lungs) == GT_LUNGS  # the data set's own lung mask comes first
    assert mask_source(without, "cxr", lungs) == "lung U-Net" == lungs.source
    assert mask_source(without, "cxr") == NO_MASK
    refs = References("cxr", lungs)
    assert refs.counts([with_mask, without, without]) == {GT_LUNGS: 1, "lung U-Net": 2}
    assert References("derm").counts([with_mask, without]) == {GT_LESION: 1, NO_MASK: 1}
    assert default_lung_model(["lung_linknet_x", "lung_unet_x"]) == "lung_unet_x"
    assert default_lung_model(["lung_linknet_x"]) == "lung_linknet_x" and default_lung_model([]) is None
    assert "lung fields" in verdict_meaning("supports", "cxr") and "lesion" in verdict_meaning("contradicts", "derm")


def test_predicted_lungs_are_cached_by_image_content(tmp_path):
    import cv2

    seg = _Planted()
    fields = _planted_fields(seg, identity=f"planted-{tmp_path.name}")
    image = np.full((64, 64, 3), 120, np.uint8)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(a), image)
    cv2.imwrite(str(b), image)  # the same bytes under another name
    m = fields.mask(image, a)
    assert m.dtype == bool and np.array_equal(m, _lungs())
    assert np.array_equal(fields.mask(image, b), m) and seg.calls == 1  # read back from the cache
    other = image.copy()
    other[0, 0] = 0
    cv2.imwrite(str(a), other)
    fields.mask(other, a)
    assert seg.calls == 2  # new content: predicted again
    assert fields.predicted == 2


def test_judge_by_hand():
    import pandas as pd

    table = pd.DataFrame({"id": list("abcd"), "outside": [0.1, 0.9, 0.5, np.nan],
                          "mask_source": [GT_LESION] * 3 + [NO_MASK], "has_mask": [True, True, True, False],
                          "class_index": [1, 0, 1, -1], "prob": [0.8, 0.3, 0.6, np.nan], "error": [""] * 4})
    t = judge(table, [1, 1, 0, 1], threshold=0.5)
    assert list(t.columns[:3]) == ["id", "outside", "correct"]
    assert t["judged"].tolist() == [True, True, True, False]
    assert t["correct"][:3].tolist() == [True, False, False] and t["correct"].isna()[3]
    assert t["loss"][:3].tolist() == pytest.approx([-np.log(0.8), -np.log(0.3), -np.log(0.4)])


def test_the_lung_unet_finds_the_demo_lungs():
    from lesion.data.io import read_image, read_mask
    from lesion.data.spec import open_data
    from lesion.paths import WEIGHTS_DIR
    from lesion.segment.lungs import lung_model_names

    name = default_lung_model(lung_model_names())
    if name is None or not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip("no shipped lung network")
    rec = open_data("demo:cxr").records[0]
    image = read_image(rec.image_path)
    truth = read_mask(rec.mask_path, image.shape[:2])
    pred = LungFields(name).mask(image, rec.image_path)
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.8, iou


def test_unmasked_radiographs_are_measured_against_the_lung_network(tmp_path):
    """A planted lung network that calls the whole image lung (outside = 0) or none of it (outside = 1)."""
    import dataclasses

    import torch

    from lesion.data.spec import open_data
    from lesion.paths import WEIGHTS_DIR
    from lesion.zoo import load_model

    name = "cxr_tb_efficientnet_lite0"
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip("shipped X-ray classifier absent")
    torch.set_num_threads(1)
    model, card = load_model(name)
    recs = [dataclasses.replace(r, mask_path=None) for r in open_data("demo:cxr").records[:3]]
    everywhere = _planted_fields(_Planted(np.ones((256, 256), np.float32)), identity=f"all-{tmp_path.name}")
    nowhere = _planted_fields(_Planted(np.zeros((256, 256), np.float32)), identity=f"none-{tmp_path.name}")
    inside = outside_table(model, card, recs, "gradcam", references=References("cxr", everywhere))
    outside = outside_table(model, card, recs, "gradcam", references=References("cxr", nowhere))
    assert inside["mask_source"].tolist() == ["lung U-Net"] * 3 and inside["has_mask"].all()
    ok = inside["outside"].notna()
    assert ok.any() and np.allclose(inside["outside"][ok], 0.0) and np.allclose(outside["outside"][ok], 1.0)
    assert inside["prob"].between(0, 1).all() and (inside["class_index"] >= 0).all()
    left_out = outside_table(model, card, recs, "gradcam", references=References("cxr"))
    assert left_out["mask_source"].eq(NO_MASK).all() and left_out["outside"].isna().all()
    assert (left_out["class_index"] == -1).all()  # left out: no heatmap computed for them


def _xray_folder(root: Path, n: int = 8, with_masks: int = 4) -> Path:
    """A plain X-ray folder: ``n`` demo radiographs labelled tuberculosis / normal, the first ``with_masks`` with
    their lung masks, the rest without (as NIH's films)."""
    import json
    import shutil

    import pandas as pd

    from lesion.data.spec import open_data

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i, r in enumerate(open_data("demo:cxr").records[:n]):
        shutil.copy(r.image_path, root / "images" / r.image_path.name)
        if i < with_masks:
            shutil.copy(r.mask_path, root / "masks" / r.mask_path.name)
        rows.append({"image": r.image_path.name, "diagnosis": "tuberculosis" if i % 2 else "normal"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"name": "xray audit test", "domain": "cxr"}))
    return root


def test_cli_audits_an_xray_folder_against_lung_masks_and_the_lung_unet(tmp_path, capsys):
    import json

    import pandas as pd

    from lesion.cli import main
    from lesion.paths import WEIGHTS_DIR
    from lesion.segment.lungs import lung_model_names

    lung = default_lung_model(lung_model_names())
    if lung is None or not (WEIGHTS_DIR / "cxr_tb_efficientnet_lite0.safetensors").is_file():
        pytest.skip("shipped X-ray classifier or lung network absent")
    folder = _xray_folder(tmp_path / "xr")
    csv = tmp_path / "audit.csv"
    argv = ["analyse", "shortcuts", "--models", "cxr_tb_efficientnet_lite0", "--data", str(folder),
            "--threshold", "0.5", "--n-boot", "100", "--out", str(csv)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["mask_sources"] == {GT_LUNGS: 4, "lung U-Net": 4} and out["lung_model"] == lung
    assert out["n_no_mask"] == 0 and out["sampled"] == 8 and out["threshold_rule"] == "fixed threshold"
    assert out["verdict"] == "inconclusive" and "too few" in out["note"]  # 8 images cannot carry an AUC
    t = pd.read_csv(csv)
    assert t["mask_source"].tolist() == [GT_LUNGS] * 4 + ["lung U-Net"] * 4
    assert t["outside"].dropna().between(0, 1).all() and t["outside"].notna().sum() >= 6
    # without a lung network the unmasked radiographs are left out, and counted
    assert main(argv[:-2] + ["--out", str(csv), "--overwrite", "--lung-model", "none"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["mask_sources"] == {GT_LUNGS: 4, NO_MASK: 4} and out["n_no_mask"] == 4 and out["lung_model"] is None
    assert "4 of 8 images have no mask" in cap.err
    t2 = pd.read_csv(csv)
    assert t2["outside"][4:].isna().all() and np.allclose(t2["outside"][:4], t["outside"][:4], equal_nan=True)
    # a dermoscopy network is no lung network
    assert main(argv[:-2] + ["--lung-model", "derm_unet_efficientnet_lite0"]) == 2
    assert "not chest X-rays" in capsys.readouterr().err


def test_a_stopped_audit_keeps_what_it_finished(monkeypatch):
    """A Stop (an exception from the progress callback, as Streamlit raises it) after the first batch: the next run
    computes only the images the first did not reach."""
    import torch

    import lesion.analyse.shortcuts as sc
    from lesion.data.spec import open_data
    from lesion.paths import WEIGHTS_DIR
    from lesion.zoo import load_model

    name = "derm_cls_efficientnet_lite0_ohem"
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip("shipped classifier absent")
    torch.set_num_threads(1)
    model, card = load_model(name)
    recs = open_data("demo:derm").records[10:14]
    seen: list[int] = []
    real = sc.explain_batch

    def counting(model, card, images, *a, **k):
        seen.append(len(images))
        return real(model, card, images, *a, **k)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    monkeypatch.setattr(sc, "explain_batch", counting)
    with pytest.raises(Stop):
        outside_table(model, card, recs, "gradcam", batch_size=2, progress=stop)
    assert seen == [2]
    t = outside_table(model, card, recs, "gradcam", batch_size=2)
    assert seen == [2, 2] and t["id"].tolist() == [r.id for r in recs]


def test_cache_key_holds_the_metadata_a_model_reads(tmp_path):
    """A model that reads age / sex / site predicts (and maps) differently with other metadata: its cached audit
    rows are keyed by the metadata too; a model that reads none shares them whatever the metadata says."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from lesion.analyse.shortcuts import References, _image_key

    path = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(path)
    refs = References("derm")
    a = SimpleNamespace(id="a", image_path=path, mask_path=None, meta={"age": 40, "sex": "male"})
    b = SimpleNamespace(id="a", image_path=path, mask_path=None, meta={"age": 70, "sex": "male"})
    assert _image_key(a, refs, with_meta=True) != _image_key(b, refs, with_meta=True)
    assert _image_key(a, refs, with_meta=False) == _image_key(b, refs, with_meta=False)
    assert _image_key(a, refs, with_meta=True) == _image_key(SimpleNamespace(**{**a.__dict__, "meta": {
        "sex": "male", "age": 40}}), refs, with_meta=True)  # the order of the fields does not matter
