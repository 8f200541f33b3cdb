"""Shortcut audit: the outside-the-mask share by hand, the verdict on planted attention, and (with a shipped
classifier) the per-image table over demo images, cached by content."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.analyse.shortcuts import outside_mass, outside_table, sample_records, shortcut_verdict


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
