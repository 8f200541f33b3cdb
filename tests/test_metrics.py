"""lesion.metrics: against sklearn on random masks, hand-computable cases, the empty-mask rule, bootstrap CIs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lesion.errors import DataError, MaskShapeError
from lesion.metrics import (
    SEG_METRICS,
    bootstrap_ci,
    confusion,
    roc_auc_ci,
    seg_metrics,
    summarize,
    summary_table,
)


@pytest.mark.parametrize("seed", range(12))
def test_seg_metrics_match_sklearn(seed):
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score

    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 40, size=2))
    truth = rng.random(shape) < rng.uniform(0.05, 0.6)
    pred = rng.random(shape) < rng.uniform(0.05, 0.6)
    truth[0, 0], pred[0, 0] = True, True  # both non-empty: sklearn and we agree without a 0/0 rule
    t, p = truth.ravel(), pred.ravel()
    m = seg_metrics(pred, truth)
    assert m["iou"] == pytest.approx(jaccard_score(t, p))
    assert m["dice"] == pytest.approx(f1_score(t, p))
    assert m["precision"] == pytest.approx(precision_score(t, p))
    assert m["recall"] == pytest.approx(recall_score(t, p))
    assert m["specificity"] == pytest.approx(recall_score(~t, ~p))
    assert m["accuracy"] == pytest.approx(accuracy_score(t, p))


def test_two_by_two_exact_fractions():
    # MONAI-style hand case: truth has 3 pixels, prediction 2 of them + nothing else.
    truth = np.array([[1, 1], [1, 0]])
    pred = np.array([[1, 0], [1, 0]])
    assert confusion(pred, truth) == (2, 0, 1, 1)
    m = seg_metrics(pred, truth)
    assert m["iou"] == pytest.approx(2 / 3)
    assert m["dice"] == pytest.approx(4 / 5)
    assert m["precision"] == 1.0
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["thresholded_jaccard"] == pytest.approx(2 / 3)  # 0.667 >= 0.65: kept


def test_thresholded_jaccard_zeroes_below_065():
    truth = np.array([[1, 1], [0, 0]], bool)
    pred = np.array([[1, 0], [0, 0]], bool)  # iou 0.5
    m = seg_metrics(pred, truth)
    assert m["iou"] == 0.5 and m["thresholded_jaccard"] == 0.0


def test_both_empty_scores_empty_value():
    z = np.zeros((4, 4), bool)
    m = seg_metrics(z, z)
    for k in ("iou", "dice", "precision", "recall", "thresholded_jaccard"):
        assert m[k] == 1.0
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0
    m = seg_metrics(z, z, empty=float("nan"))
    assert math.isnan(m["iou"]) and math.isnan(m["dice"]) and math.isnan(m["thresholded_jaccard"])
    assert m["accuracy"] == 1.0  # defined: 16/16


def test_prediction_empty_truth_not():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True
    m = seg_metrics(np.zeros_like(truth), truth)
    assert m["iou"] == 0.0 and m["dice"] == 0.0
    assert m["precision"] == 0.0  # 0/0 but the masks disagree: never rewarded
    assert m["recall"] == 0.0
    assert m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(12 / 16)


def test_truth_empty_prediction_not():
    pred = np.zeros((4, 4), bool)
    pred[0, 0] = True
    m = seg_metrics(pred, np.zeros_like(pred))
    assert m["iou"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["specificity"] == pytest.approx(15 / 16)


def test_both_full_specificity_uses_empty_rule():
    o = np.ones((3, 3), bool)
    m = seg_metrics(o, o, empty=0.5)
    assert m["iou"] == 1.0 and m["specificity"] == 0.5


def test_accepts_uint8_and_keys():
    a = np.array([[0, 255], [255, 0]], np.uint8)
    m = seg_metrics(a, a > 0)
    assert tuple(m) == SEG_METRICS
    assert m["iou"] == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(MaskShapeError):
        seg_metrics(np.zeros((3, 4), bool), np.zeros((4, 3), bool))


def test_bootstrap_ci_contains_mean_shrinks_and_is_deterministic():
    rng = np.random.default_rng(0)
    small = rng.normal(0.7, 0.1, 30)
    large = rng.normal(0.7, 0.1, 3000)
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(n): 10x narrower
    assert bootstrap_ci(small, seed=1) == (lo_s, hi_s)
    assert bootstrap_ci(small, seed=2) != (lo_s, hi_s)


def test_bootstrap_ci_nan_safe_and_small_n():
    assert bootstrap_ci([0.5, np.nan, 0.7], seed=0) == bootstrap_ci([0.5, 0.7], seed=0)
    lo, hi = bootstrap_ci([0.3])
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = bootstrap_ci([0.4, 0.4, 0.4])
    assert lo == hi == pytest.approx(0.4)


def test_bootstrap_ci_median_and_non_axis_stat():
    v = np.arange(20, dtype=float)
    a = bootstrap_ci(v, stat=np.median, n_boot=500, seed=3)
    b = bootstrap_ci(v, stat=lambda x: float(np.median(x)), n_boot=500, seed=3)
    assert a == pytest.approx(b)


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, np.nan])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["median"] == 2.0 and s["std"] == pytest.approx(1.0)
    assert 1.0 <= s["ci_lo"] <= 2.0 <= s["ci_hi"] <= 3.0
    e = summarize([])
    assert e["n"] == 0 and math.isnan(e["mean"])


def test_summary_table_per_method():
    df = pd.DataFrame(
        {"method": ["a"] * 4 + ["b"] * 4, "iou": [0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 0.4], "dice": [1.0] * 8}
    )
    t = summary_table(df, metrics=("iou", "dice", "missing"))
    assert list(t["method"]) == ["a", "b"]
    assert t["n"].tolist() == [4, 4]
    assert t["iou_mean"].tolist() == pytest.approx([0.65, 0.25])
    assert t["iou_median"].tolist() == pytest.approx([0.65, 0.25])
    assert (t["iou_ci_lo"] <= t["iou_mean"]).all() and (t["iou_mean"] <= t["iou_ci_hi"]).all()
    assert "missing_mean" not in t.columns
    overall = summary_table(df.drop(columns="method"), metrics=("iou",))
    assert len(overall) == 1 and overall["iou_mean"].iloc[0] == pytest.approx(0.45)


def test_roc_auc_ci_hand_case_and_matches_sklearn():
    # Four-sample case (MONAI): one of four positive/negative pairs is mis-ordered -> 0.75.
    auc, lo, hi = roc_auc_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=200)
    assert auc == pytest.approx(0.75)
    assert 0.0 <= lo <= hi <= 1.0
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(y.astype(float), 1.0), 1)  # rounding makes ties
    auc, lo, hi = roc_auc_ci(y, s, n_boot=500, seed=0)
    assert auc == pytest.approx(roc_auc_score(y, s))
    assert lo < auc < hi
    assert roc_auc_ci(y, s, n_boot=500, seed=0) == (auc, lo, hi)


def test_rank_auc_equals_sklearn_per_resample():
    from sklearn.metrics import roc_auc_score

    from lesion.metrics import _auc_rows

    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(1, 1, (5, 7)), 1)
    neg = np.round(rng.normal(0, 1, (5, 9)), 1)
    ours = _auc_rows(pos, neg)
    for i in range(5):
        y = np.r_[np.ones(7), np.zeros(9)]
        assert ours[i] == pytest.approx(roc_auc_score(y, np.r_[pos[i], neg[i]]))


def test_one_class_auc_is_nan_everywhere():
    """The one-class rule: every AUC of lesion.metrics is NaN (never raises, never None) on one class."""
    from lesion.metrics import (ONE_CLASS_AUC, auc_table, auc_text, binary_auc, label_auc_table, logits_auc,
                                mean_auc, per_label_auc)

    one = ([1, 1, 1], [0.1, 0.2, 0.3])
    assert math.isnan(binary_auc(*one)) and math.isnan(binary_auc([], []))
    assert all(math.isnan(v) for v in roc_auc_ci(*one))
    assert all(math.isnan(v) for v in roc_auc_ci(*one, n_boot=0))
    assert math.isnan(logits_auc(np.array([[0.1], [0.2]]), np.array([0, 0])))
    assert math.isnan(logits_auc(np.zeros((3, 4)), np.array([2, 2, 2])))
    y = np.array([[1, 0], [0, 0], [1, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.5]])
    for ci in (False, True):
        r = per_label_auc(y, s, ["a", "b"], ci=ci, n_boot=20)
        assert r["a"]["auc"] == 1.0 and math.isnan(r["b"]["auc"]) and r["b"]["positives"] == 0
        assert mean_auc(r) == 1.0
    assert math.isnan(mean_auc({"b": {"auc": float("nan")}, "c": {"auc": None}}))
    t = auc_table([1, 1, np.nan], {"a": [0.1, 0.2, 0.3]})
    assert t["auc"].isna().all() and t["ci_lo"].isna().all() and t["n"].tolist() == [2]
    assert label_auc_table(y, s, ["a", "b"])["auc"].isna().tolist() == [False, True]
    assert auc_text(float("nan")) == auc_text(None) == ONE_CLASS_AUC == "needs both classes"
    assert auc_text(0.91234) == "0.912"
    with pytest.raises(DataError):  # a length mismatch is the caller's bug, not the one-class rule
        binary_auc([0, 1], [0.1])


def test_binary_and_logits_auc_match_sklearn():
    from scipy.special import softmax
    from sklearn.metrics import roc_auc_score

    from lesion.metrics import binary_auc, logits_auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = y + rng.normal(0, 1, 60)
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert logits_auc(s[:, None], y) == pytest.approx(roc_auc_score(y, s))
    k = rng.integers(0, 3, 60)
    z = rng.normal(0, 1, (60, 4)) + np.eye(4)[k]
    p = softmax(z, axis=1)
    want = np.mean([roc_auc_score(k == c, p[:, c]) for c in range(3)])  # class 3 absent: left out
    assert logits_auc(z, k) == pytest.approx(want)


# ------------------------------------------------------------------ classification curves
def test_curve_table_roc_matches_hand_computed_auc():
    from lesion.metrics import curve_table

    # Four samples, MONAI's hand-computed case: AUC 0.75.
    y = [0, 0, 1, 1]
    s = np.array([0.1, 0.4, 0.35, 0.8])
    t = curve_table(y, {"m": s}, "roc")
    assert t["label"].iloc[0] == "m (AUC 0.750)"
    assert t["x"].iloc[0] == 0 and t["y"].iloc[-1] == 1
    pr = curve_table(y, {"m": s}, "pr")
    assert pr["y"].between(0, 1).all() and pr["x"].between(0, 1).all()


def test_threshold_report_counts():
    from lesion.metrics import threshold_report

    r = threshold_report([0, 0, 1, 1, 1], [0.2, 0.7, 0.6, 0.9, 0.1], threshold=0.5)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["sensitivity"] == pytest.approx(2 / 3) and r["specificity"] == pytest.approx(0.5)


def test_curves_need_both_classes_and_drop_unlabelled():
    from lesion.errors import DataError
    from lesion.metrics import calibration_table, curve_table

    with pytest.raises(DataError):
        curve_table([1, 1, 1], {"m": [0.1, 0.2, 0.3]})
    t = calibration_table([0, 1, np.nan, 1, 0, 1], {"m": [0.1, 0.9, 0.5, 0.8, 0.2, 0.7]}, n_bins=2)
    assert t["brier"].iloc[0] == pytest.approx(np.mean(np.square([0.1, 0.1, 0.2, 0.2, 0.3])))


# ------------------------------------------------------------------ AUC tables
def test_auc_table_rows_are_roc_auc_ci_on_the_labelled_images():
    from lesion.metrics import auc_table

    y = np.array([0, 0, 1, 1, np.nan])
    s = {"a": np.array([0.1, 0.4, 0.35, 0.8, 0.99]), "b": np.array([0.9, 0.8, 0.2, 0.1, 0.0])}
    t = auc_table(y, s, n_boot=200)
    assert list(t.columns) == ["model", "auc", "ci_lo", "ci_hi", "n"] and list(t["model"]) == ["a", "b"]
    assert t["auc"].tolist() == pytest.approx([0.75, 0.0]) and (t["n"] == 4).all()
    auc, lo, hi = roc_auc_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=200)
    assert (t.loc[0, "auc"], t.loc[0, "ci_lo"], t.loc[0, "ci_hi"]) == (auc, lo, hi)
    assert auc_table([1, 1, np.nan], {"a": [0.1, 0.2, 0.3]})["auc"].isna().all()  # the one-class rule


def test_label_auc_table_per_column_with_unlabelled_images():
    from lesion.metrics import label_auc_table

    # column A: MONAI's four-sample case (0.75) plus an unlabelled image; column B: positives only.
    y = np.array([[0, 1], [0, 1], [1, 1], [1, np.nan], [np.nan, 1]])
    s = np.array([[0.1, 0.5], [0.4, 0.5], [0.35, 0.5], [0.8, 0.5], [0.0, 0.5]])
    t = label_auc_table(y, s, ["A", "B"], n_boot=300)
    assert list(t.columns) == ["label", "n", "positives", "auc", "ci_lo", "ci_hi"]
    a, b = t.iloc[0], t.iloc[1]
    assert (a["label"], a["n"], a["positives"]) == ("A", 4, 2)
    assert (a["auc"], a["ci_lo"], a["ci_hi"]) == roc_auc_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], n_boot=300)
    assert (b["n"], b["positives"]) == (4, 4) and pd.isna(b["auc"]) and pd.isna(b["ci_lo"])


def test_label_curve_table_matches_curve_table_per_column():
    from lesion.metrics import curve_table, label_curve_table

    y = np.array([[0, 1], [0, 1], [1, 1], [1, np.nan]])
    s = np.array([[0.1, 0.5], [0.4, 0.5], [0.35, 0.5], [0.8, 0.5]])
    t = label_curve_table(y, s, ["A", "B"])
    assert set(t["model"]) == {"A"}  # B has positives only
    assert t["label"].iloc[0] == "A (AUC 0.750, n+=2)" and (t["positives"] == 2).all()
    ref = curve_table(y[:, 0], {"A": s[:, 0]}, "roc")
    np.testing.assert_array_equal(t["x"], ref["x"])
    np.testing.assert_array_equal(t["y"], ref["y"])
    assert label_curve_table(y[:, 1:], s[:, 1:], ["B"]).empty


# ---------------------------------------------------------------------------------------------------------
# Operating thresholds and CI verdicts (hand-computed cases)
# ---------------------------------------------------------------------------------------------------------
from lesion.errors import ConfigError  # noqa: E402
from lesion.metrics import ci_verdict, sensitivity_threshold, threshold_report, youden_threshold  # noqa: E402

# negatives 0.1, 0.2, 0.6; positives 0.5, 0.9. Thresholds and (sens, spec): 0.9 -> (1/2, 1), 0.6 -> (1/2, 2/3),
# 0.5 -> (1, 2/3), 0.2 -> (1, 1/3), 0.1 -> (1, 0). J is largest (2/3) at 0.5.
_Y = [0, 0, 0, 1, 1]
_S = [0.1, 0.2, 0.6, 0.5, 0.9]


def test_youden_threshold_by_hand():
    r = youden_threshold(_Y, _S)
    assert r["threshold"] == 0.5
    assert r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(2 / 3) and r["j"] == pytest.approx(2 / 3)
    rep = threshold_report(_Y, _S, r["threshold"])  # the same convention (score >= threshold is positive)
    assert rep["sensitivity"] == r["sensitivity"] and rep["specificity"] == pytest.approx(r["specificity"])


def test_youden_drops_unlabelled_and_needs_both_classes():
    assert youden_threshold(_Y + [np.nan], _S + [0.0])["threshold"] == 0.5
    with pytest.raises(DataError):
        youden_threshold([1, 1], [0.2, 0.3])


def test_sensitivity_threshold_by_hand():
    assert sensitivity_threshold(_Y, _S, 0.5)["threshold"] == 0.9  # 1 of 2 positives: the highest
    r = sensitivity_threshold(_Y, _S, 0.6)  # ceil(1.2) = 2 positives: down to 0.5
    assert r["threshold"] == 0.5 and r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(2 / 3)
    # 0.7 of 10 positives is 7, not 8, despite 0.7 * 10 = 7.000000000000001 in floating point
    y = [1] * 10 + [0] * 5
    s = list(np.linspace(1.0, 0.1, 10)) + [0.0] * 5
    assert sensitivity_threshold(y, s, 0.7)["sensitivity"] == pytest.approx(0.7)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        sensitivity_threshold(_Y, _S, 0.0)


@pytest.mark.parametrize("lo,hi,word", [(0.55, 0.7, "supports"), (0.176, 0.348, "contradicts"),
                                        (0.45, 0.6, "inconclusive"), (float("nan"), 0.6, "inconclusive")])
def test_ci_verdict(lo, hi, word):
    assert ci_verdict(lo, hi) == word
