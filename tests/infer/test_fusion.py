"""Multi-view fusion on hand-made arrays: fused values computed by hand, a synthetic setting where fusion
provably helps, the out-of-fold stacker never scoring a case it saw, and the messages for bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesion.data.records import Record
from lesion.errors import ConfigError, DataError
from lesion.infer.fusion import (
    FUSION_METHODS,
    ONE_VIEW,
    PER_VIEW,
    Cases,
    case_columns,
    case_features,
    case_keys,
    case_labels,
    evaluate_fusion,
    fit_stacker,
    fuse,
    oof_stacker,
    random_view_auc,
)


def _rec(i: int, **meta) -> Record:
    return Record(id=f"img{i}", image_path=f"img{i}.png", group=meta.pop("group", ""), meta=meta)


def test_cases_keep_first_appearance_order():
    c = Cases.from_keys(["b", "a", "b", "c"])
    assert list(c.keys) == ["b", "a", "c"]
    assert c.index.tolist() == [0, 1, 0, 2]
    assert c.n_views.tolist() == [2, 1, 1]
    assert c.multi.tolist() == [True, False, False]


def test_fused_values_by_hand():
    # case A: 0.2 and 0.8; case B: one view 0.3; case C: 0.1, 0.4, 0.4
    c = Cases.from_keys(["A", "A", "B", "C", "C", "C"])
    p = [0.2, 0.8, 0.3, 0.1, 0.4, 0.4]
    np.testing.assert_allclose(fuse(p, c, "mean"), [0.5, 0.3, 0.3])
    np.testing.assert_allclose(fuse(p, c, "max"), [0.8, 0.3, 0.4])
    # geometric mean: sqrt(0.2 * 0.8) = 0.4; (0.1 * 0.4 * 0.4) ** (1/3) = 0.016 ** (1/3)
    np.testing.assert_allclose(fuse(p, c, "log_mean"), [0.4, 0.3, 0.016 ** (1 / 3)])


def test_case_features_are_logit_stats_and_order_invariant():
    c = Cases.from_keys(["A", "A", "B"])
    f = case_features([0.5, 0.8, 0.2], c)
    l4 = math.log(4.0)  # logit(0.8)
    np.testing.assert_allclose(f, [[l4 / 2, l4, 0.0, 2], [-l4, -l4, -l4, 1]], atol=1e-6)
    np.testing.assert_allclose(case_features([0.8, 0.5, 0.2], c), f, atol=1e-12)


def test_case_label_is_max_and_disagreement_flagged():
    c = Cases.from_keys(["A", "A", "B", "B", "C"])
    y, disagree = case_labels([0, 1, 0, np.nan, np.nan], c)
    assert y[0] == 1 and y[1] == 0 and np.isnan(y[2])
    assert disagree.tolist() == [True, False, False]


def _noisy_views(n_cases: int = 300, views: int = 3, noise: float = 1.5, seed: int = 0):
    """Each view is the case label read through independent Gaussian noise on the logit scale: averaging the
    views reduces the noise variance by ``views``, so the fused AUC must beat the per-view AUC."""
    rng = np.random.default_rng(seed)
    y_case = (rng.random(n_cases) < 0.4).astype(float)
    keys = np.repeat([f"c{i}" for i in range(n_cases)], views)
    y = np.repeat(y_case, views)
    z = (2 * y - 1) + noise * rng.standard_normal(y.size)
    return 1 / (1 + np.exp(-z)), y, keys


def test_fusion_raises_auc_when_views_are_noisy_readings():
    p, y, keys = _noisy_views()
    rep = evaluate_fusion(p, y, keys, n_boot=200)
    base = rep.per_view_auc()
    aucs = rep.auc.set_index("method")["auc"]
    assert set(aucs.index) == {PER_VIEW, ONE_VIEW, *FUSION_METHODS}
    assert abs(aucs[ONE_VIEW] - base) < 0.03  # one random view per case ~ the per-image AUC here
    assert all(rep.passes(ONE_VIEW).values())
    assert aucs["mean"] > base + 0.05 and aucs["log_mean"] > base + 0.05 and aucs["stacker"] > base + 0.05
    assert all(rep.passes().values())
    assert rep.counts["multi_view_cases"] == 300 and rep.counts["single_view_cases"] == 0
    assert (rep.auc["ci_lo"] <= rep.auc["auc"]).all() and (rep.auc["auc"] <= rep.auc["ci_hi"]).all()
    assert rep.auc.set_index("method").loc[PER_VIEW, "n"] == 900
    roc = rep.roc_table()
    assert set(roc["model"]) == {PER_VIEW, *FUSION_METHODS}


def test_oof_stacker_never_scores_a_case_it_saw():
    """Flip one case's label: with the same folds, that case's out-of-fold score must not move (its stacker
    never saw the label), while a stacker fitted on all cases does move."""
    p, y, keys = _noisy_views(n_cases=80, seed=1)
    c = Cases.from_keys(keys)
    s1, folds = oof_stacker(p, c, y, n_splits=4)
    assert set(folds) == {0, 1, 2, 3}
    target = 5
    y2 = y.copy()
    y2[c.index == target] = 1 - y2[c.index == target]
    s2, _ = oof_stacker(p, c, y2, folds=folds)
    assert s2[target] == s1[target]
    others = folds != folds[target]
    assert not np.allclose(s2[others], s1[others])  # the flip reached the other folds' stackers
    full1 = fit_stacker(p, c, y).predict(p, c)[target]
    full2 = fit_stacker(p, c, y2).predict(p, c)[target]
    assert full1 != full2


def test_one_random_view_baseline_by_hand():
    """Case A views 0.9 / 0.1 (positive), case B 0.5 (negative), case C 0.6 / 0.4 (negative): A beats B and C
    when its 0.9 is drawn (AUC 1) and loses to both when its 0.1 is (AUC 0); C's draw does not matter."""
    c = Cases.from_keys(["A", "A", "B", "C", "C"])
    auc, _, _ = random_view_auc([0.9, 0.1, 0.5, 0.6, 0.4], c, [1, 1, 0, 0, 0], draws=400, n_boot=0)
    assert auc == pytest.approx(0.5, abs=0.08)
    only_high, _, _ = random_view_auc([0.9, 0.8, 0.5, 0.6, 0.4], c, [1, 1, 0, 0, 0], draws=20, n_boot=0)
    assert only_high == 1.0


def test_stacker_fitted_on_validation_predictions():
    p_val, y_val, k_val = _noisy_views(seed=2)
    p, y, keys = _noisy_views(seed=3)
    st = fit_stacker(p_val, Cases.from_keys(k_val), y_val)
    rep = evaluate_fusion(p, y, keys, stacker=st, n_boot=0)
    assert rep.passes()["stacker"] and (rep.cases["fold"] == -1).all()
    assert any("fitted beforehand" in n for n in rep.notes)


def test_single_view_cases_kept_and_reported():
    keys = ["A", "A", "B", "C", "C", "D"]
    p = [0.9, 0.7, 0.6, 0.2, 0.4, 0.1]
    y = [1, 1, 1, 0, 0, 0]
    rep = evaluate_fusion(p, y, keys, ids=[f"x{i}" for i in range(6)], n_boot=0, methods=("mean", "max"))
    assert rep.counts == {"images": 6, "cases": 4, "single_view_cases": 2, "multi_view_cases": 2,
                          "multi_view_images": 4, "unlabelled_cases": 0, "disagreeing_cases": 0}
    table = rep.cases.set_index("case")
    assert table.loc["B", "mean"] == 0.6 and table.loc["B", "views"] == "x2"
    assert table.loc["A", "views"] == "x0, x1"
    assert any("one view" in n for n in rep.notes)
    assert rep.auc.set_index("method").loc["mean", "n"] == 2  # AUCs only over the multi-view cases


def test_disagreeing_views_warned():
    keys = ["A", "A", "B", "B", "C", "C"]
    rep = evaluate_fusion([0.9, 0.2, 0.1, 0.2, 0.3, 0.8], [1, 0, 0, 0, 0, 1], keys, n_boot=0, methods=("max",))
    assert rep.counts["disagreeing_cases"] == 2
    assert any("disagree" in n for n in rep.notes)
    assert rep.cases["label"].tolist() == [1, 0, 1]


def test_without_labels_fused_scores_only():
    rep = evaluate_fusion([0.2, 0.4, 0.5], None, ["A", "A", "B"], methods=("mean", "stacker"))
    assert rep.auc.empty and "mean" in rep.cases.columns
    assert any("Stacker skipped" in n for n in rep.notes)


def test_all_single_view_cases_message():
    with pytest.raises(DataError, match="has one image .*two or more views"):
        evaluate_fusion([0.1, 0.9], [0, 1], ["a", "b"], column="id")


def test_one_class_among_multi_view_cases_message():
    with pytest.raises(DataError, match="all negative"):
        evaluate_fusion([0.1, 0.2, 0.9], [0, 0, 1], ["a", "a", "b"])


def test_bad_method_and_bad_scores():
    c = Cases.from_keys(["a", "a"])
    with pytest.raises(ConfigError, match="Did you mean 'log_mean'"):
        fuse([0.1, 0.2], c, "logmean")
    with pytest.raises(DataError, match="probabilities"):
        fuse([0.1, 2.0], c, "mean")
    with pytest.raises(DataError, match="3 scores but 2 images"):
        fuse([0.1, 0.2, 0.3], c, "mean")


def test_case_keys_and_missing_column_names_the_available_ones():
    recs = [_rec(0, lesion_id="L1", sex="male"), _rec(1, lesion_id="L1", sex="male"), _rec(2, lesion_id=None)]
    assert case_keys(recs, "lesion_id").tolist() == ["L1", "L1", "img2 (no lesion_id)"]
    with pytest.raises(DataError, match="no column 'patient_id'.*Available columns: group, lesion_id, sex"):
        case_keys(recs, "patient_id")


def test_case_columns_offers_id_like_columns_only():
    recs = [_rec(i, group=f"P{i // 4}", lesion_id=f"L{i // 2}", sex=["male", "female"][i % 2],
                 site=["trunk", "face", "back"][i % 3], image_no=f"{i}") for i in range(60)]
    assert case_columns(recs) == ["lesion_id", "group"]  # sex: 2 values; site: 20 images a value; image_no: no repeats


def test_demo_derm_has_multi_view_lesions():
    from lesion.data.demo import load_demo

    ds = load_demo("derm")
    cols = case_columns(ds)
    assert cols[0] == "lesion_id" and "patient_id" in cols and "site" not in cols
    c = Cases.from_keys(case_keys(ds, "lesion_id"))
    assert c.multi.sum() >= 20


def test_label_and_property_columns_are_never_case_ids():
    """PH2 (issue 13): 200 images, one row each, with a diagnosis column whose few values repeat a lot; the
    demo's age and the NIH follow-up number repeat too. None of them is a case id."""
    dx = ["Common Nevus", "Atypical Nevus", "Melanoma", "Melanoma in situ", "Compound nevus", None]
    recs = [_rec(i, histological_diagnosis=dx[i % 6], clinical_diagnosis=str(i % 3), colors=f"{i % 4} {i % 5}",
                 dx=["mel", "nv", "bkl"][i % 3], age=float(20 + i % 7), follow_up=str(i % 4), label=str(i % 2))
            for i in range(60)]
    assert case_columns(recs) == []
    recs = [_rec(i, histological_diagnosis=dx[i % 6], patient=f"P{i // 3}", case_no=f"C{i // 2}") for i in range(60)]
    assert case_columns(recs) == ["patient", "case_no"]


def test_is_label_column_and_is_id_column():
    from lesion.infer.fusion import is_id_column, is_label_column

    for c in ("diagnosis", "histological_diagnosis", "dx", "Label", "finding_labels", "sex", "site", "colors"):
        assert is_label_column(c) and not is_id_column(c), c
    for c in ("lesion_id", "patient_id", "Patient ID", "group", "case", "subject", "study_uid"):
        assert is_id_column(c) and not is_label_column(c), c
    assert not is_id_column("image_no") and not is_id_column("age")


def test_too_few_multi_view_cases_give_no_auc_but_say_why():
    keys = ["A", "A", "B", "B", "C", "C", "D", "D"]
    p = [0.9, 0.7, 0.6, 0.8, 0.2, 0.4, 0.1, 0.3]
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    rep = evaluate_fusion(p, y, keys, n_boot=0, methods=("mean",), min_cases=10)
    assert rep.auc.empty and "Only 4 labelled multi-view cases (2 positive, 2 negative)" in rep.no_auc
    assert rep.no_auc in rep.notes and len(rep.cases) == 4  # the fused scores are still there
    assert not evaluate_fusion(p, y, keys, n_boot=0, methods=("mean",)).auc.empty  # min_cases=0: AUC as before
    rep = evaluate_fusion(p, y, keys, n_boot=0, methods=("mean",), min_cases=4, min_per_class=3)
    assert rep.auc.empty and "3 of each class" in rep.no_auc
