"""Attention agreement on hand-made heatmaps, and the wrongness AUC on synthetic scores."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.explain.agreement import agreement_score, n_components, spread, wrongness_auc

N = 64


def _blob(cy, cx, r=6, n=N):
    y, x = np.mgrid[0:n, 0:n]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * r * r))


def test_spread_by_hand():
    point = np.zeros((N, N))
    point[5, 7] = 1.0
    assert spread(point) == 0.0
    # Uniform heat: variance (N²-1)/12 per axis vs the N²/12 normaliser -> sqrt(1 - 1/N²).
    assert spread(np.ones((N, N))) == pytest.approx(np.sqrt(1 - 1 / N**2))
    assert np.isnan(spread(np.zeros((4, 4))))


def test_components():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = m[6:9, 6:9] = True
    assert n_components(m) == 2


def test_compact_blob_on_lesion_beats_scattered_blobs_off_it():
    lesion = _blob(32, 32, r=8) > 0.3
    good = _blob(32, 32)
    bad = _blob(6, 6) + _blob(6, 57) + _blob(57, 6) + _blob(57, 57)
    g = agreement_score(good, attention=good, reference=lesion)
    b = agreement_score(bad, attention=_blob(32, 32), reference=lesion)
    assert g["n_components"] == 1 and b["n_components"] == 4
    assert g["compactness"] == 1.0 and b["compactness"] == 0.25
    assert g["overlap"] > 0.85 and b["overlap"] < 0.05
    assert g["cam_attention_iou"] == 1.0 and b["cam_attention_iou"] == 0.0
    assert g["agreement"] > 0.8 > 0.3 > b["agreement"]
    # The formula: the plain mean of the available parts.
    assert g["agreement"] == pytest.approx(np.mean([g["compactness"], g["focus"], g["overlap"],
                                                    g["cam_attention_iou"]]))
    only = agreement_score(good)
    assert np.isnan(only["overlap"]) and np.isnan(only["cam_attention_iou"])
    assert only["agreement"] == pytest.approx((only["compactness"] + only["focus"]) / 2)


def test_wrongness_auc():
    # Wrong cases have the lowest agreement -> AUC 1; reversed -> 0; one swap in 2x2 pairs -> 0.75.
    a = np.array([0.1, 0.2, 0.8, 0.9])
    assert wrongness_auc(a, [1, 1, 0, 0], n_boot=0)[0] == 1.0
    assert wrongness_auc(a, [0, 0, 1, 1], n_boot=0)[0] == 0.0
    assert wrongness_auc(np.array([0.1, 0.85, 0.8, 0.9]), [1, 1, 0, 0], n_boot=0)[0] == 0.75
    auc, lo, hi = wrongness_auc(a, [1, 1, 0, 0], n_boot=200)
    assert lo <= auc <= hi
    assert np.isnan(wrongness_auc(a, [0, 0, 0, 0])).all()  # all right: the one-class rule, NaN


# ------------------------------------------------------------------ one image in memory vs the data-set path
@pytest.fixture(scope="module")
def tiny_models():
    """A plain resnet10t and a multi-task resnet10t with metadata (64 px, random init, seeded), with cards."""
    torch = pytest.importorskip("torch")
    from lesion.card import ModelCard, Preprocessing
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.classify.multitask import MultiTaskConfig

    torch.manual_seed(0)
    torch.set_num_threads(1)
    prep = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = {}
    for name, cfg, task in (("cls", ClsModelConfig("resnet10t", num_classes=1, size=64), "classification"),
                            ("mt", MultiTaskConfig(arch="resnet10t", size=64), "multitask")):
        card = ModelCard(name=f"tiny_{name}", task=task, arch="resnet10t", classes=("melanoma",), target="melanoma",
                         model=dict(cfg.__dict__), preprocessing=prep)
        out[name] = (create_model(cfg).eval(), card)
    return out


def _case(tmp_path, i: int):
    """A generated dark blob on skin (RGB uint8, not square so the centre crop matters), its mask and a Record."""
    import cv2

    from lesion.data.records import Record

    rng = np.random.default_rng(i)
    image = np.full((80, 96, 3), (200, 160, 140), np.uint8)
    y, x = np.mgrid[0:80, 0:96]
    mask = (y - 40 - 3 * i) ** 2 + (x - 48 + 4 * i) ** 2 < (12 + i) ** 2
    image[mask] = (90, 50, 40)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    ip, mp = tmp_path / f"img{i}.png", tmp_path / f"img{i}_mask.png"
    cv2.imwrite(str(ip), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mp), mask.astype(np.uint8) * 255)
    meta = {"age": 40.0 + 10 * i, "sex": "female" if i % 2 else "male", "site": "back"}
    return image, mask, Record(id=f"img{i}", image_path=ip, mask_path=mp, meta=meta)


@pytest.mark.parametrize("kind", ["cls", "mt"])
def test_one_image_explanation_equals_the_dataset_path(tiny_models, tmp_path, kind):
    from lesion.explain.agreement import agreement_over_dataset, explain_image

    model, card = tiny_models[kind]
    cases = [_case(tmp_path, i) for i in range(3)]
    table = agreement_over_dataset(model, card, [r for _, _, r in cases], method="gradcam", batch_size=2)
    parts = ["n_components", "compactness", "spread", "focus", "overlap", "cam_attention_iou", "agreement"]
    for (image, mask, rec), (_, row) in zip(cases, table.iterrows()):
        one = explain_image(model, card, image, rec.meta, mask, ("gradcam",), class_index=None)
        assert row["id"] == rec.id and one["class_index"] == row["class_index"]
        assert float(one["logits"].max()) == pytest.approx(row["logit"], abs=1e-5)
        for p in parts:
            assert one[p] == pytest.approx(row[p], abs=1e-4, nan_ok=True), p
        # views and masks line up with the network input: the card's size, the mask cropped with the image
        assert one["view"].shape == (64, 64, 3) and one["mask"].shape == (64, 64)
        assert one["heat"].shape == (64, 64) and set(one["heats"]) == {"gradcam"}
        assert (one["attention"] is None) == (kind == "cls")
        assert np.isnan(one["cam_attention_iou"]) == (kind == "cls")


def test_one_image_attention_is_the_attention_map_and_metadata_counts(tiny_models, tmp_path):
    import torch

    from lesion.classify.metadata import encode_metadata
    from lesion.classify.models import normalize
    from lesion.explain.agreement import explain_image
    from lesion.explain.attention import attention_maps

    model, card = tiny_models["mt"]
    image, mask, rec = _case(tmp_path, 1)
    one = explain_image(model, card, image, rec.meta, mask, ("gradcam", "eigencam"), class_index=1)
    x = torch.from_numpy(normalize(one["view"][None], card.preprocessing))
    meta = torch.from_numpy(encode_metadata(rec.meta)[None])
    np.testing.assert_allclose(one["attention"], attention_maps(model, x, meta)[0], atol=1e-6)
    assert list(one["heats"]) == ["gradcam", "eigencam"] and one["class_index"] == 1
    # the patient's metadata reaches the metadata head: other metadata, other logits
    other = explain_image(model, card, image, {"age": 80.0, "sex": "male", "site": "face"}, mask, ())
    assert not np.allclose(one["logits"], other["logits"])
    assert other["heats"] == {} and other["heat"] is None and "agreement" not in other


def test_empty_map_scores_as_empty():
    """A blank or flat map has no region: agreement 0 (it used to score about 0.49 from its other parts)."""
    from lesion.explain.agreement import agreement_score

    lesion = np.zeros((32, 32), bool)
    lesion[8:20, 8:20] = True
    att = np.zeros((32, 32))
    att[8:20, 8:20] = 1.0
    for blank in (np.zeros((32, 32)), np.full((32, 32), 0.5)):
        out = agreement_score(blank, attention=att, reference=lesion)
        assert out["n_components"] == 0 and out["agreement"] == 0.0
        assert out["overlap"] == 0.0 and out["cam_attention_iou"] == 0.0
    focused = np.zeros((32, 32))
    focused[10:18, 10:18] = 1.0
    assert agreement_score(focused, attention=att, reference=lesion)["agreement"] > 0.5
