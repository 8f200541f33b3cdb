"""Segmentation and classification metrics as pure numpy functions (no torch), with bootstrap CIs.

Segmentation metrics are computed per image from the confusion counts of two binary masks
(``tp, fp, fn, tn``); a data-set score is the mean of per-image scores (what ISIC 2018 and most papers
report), not the IoU of the pooled pixels.

Empty-mask rule
---------------
Lesion-free images (or a method that finds nothing) make a ratio ``0 / 0``; the rule that decides it
changes the reported mean, so it is explicit (smp's ``zero_division``, MONAI's ``ignore_empty``).
**A ratio that is 0/0 scores ``empty`` when the two masks agree on every pixel, and 0.0 otherwise**
(a disagreement is never rewarded). ``empty`` defaults to 1.0; pass ``float("nan")`` to leave such
images out of ``np.nanmean`` instead (MONAI ``ignore_empty=True``).

==========================  ==========  ===========  ==========  ==========  ===========  ========
case                        iou, dice   precision    recall      specificity accuracy     thr. J.
==========================  ==========  ===========  ==========  ==========  ===========  ========
both empty                  ``empty``   ``empty``    ``empty``   1.0         1.0          ``empty``
prediction empty, truth not 0.0         0.0 (0/0)    0.0         computed    computed     0.0
truth empty, prediction not 0.0         0.0          0.0 (0/0)   computed    computed     0.0
both full (every pixel)     1.0         1.0          1.0         ``empty``   1.0          1.0
==========================  ==========  ===========  ==========  ==========  ===========  ========

``thresholded_jaccard`` is the ISIC 2018 challenge score: ``iou`` if ``iou >= 0.65`` else 0.

One-class AUC rule
------------------
**An ROC-AUC over labels that hold one class only is undefined and is NaN** — never an exception, never None —
and so are its CI bounds (:func:`binary_auc`, the one place that decides it; every AUC here goes through it).
Callers test ``np.isfinite`` and show :data:`ONE_CLASS_AUC` (:func:`auc_text`) instead of a number. Mismatched
lengths are still a :class:`~lesion.errors.DataError` (a bug in the caller's data, not a property of it).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from lesion.errors import ConfigError, DataError, MaskShapeError, unknown_option

#: Columns produced by :func:`seg_metrics`, in display order.
SEG_METRICS: tuple[str, ...] = (
    "iou",
    "dice",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "thresholded_jaccard",
)

#: ISIC 2018 task 1: an image with IoU below this scores 0.
ISIC_JACCARD_THRESHOLD = 0.65


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype == np.bool_:
        return m
    # {0,1} or {0,255} integer/float masks: any non-zero value is foreground.
    return m != 0


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel confusion counts of two binary masks.

    Args:
        pred: predicted mask ``[H, W]`` (bool, or {0, 1}; any non-zero value is foreground).
        truth: reference mask of the same shape.

    Returns:
        ``(tp, fp, fn, tn)`` as Python ints.

    Raises:
        MaskShapeError: the two masks differ in shape.
    """
    p = _as_bool(pred, "pred")
    t = _as_bool(truth, "truth")
    if p.shape != t.shape:
        raise MaskShapeError(f"Prediction shape {p.shape} does not match the truth mask shape {t.shape}.")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def _ratio(num: int, den: int, agree: bool, empty: float) -> float:
    if den == 0:
        return float(empty) if agree else 0.0
    return num / den


def seg_metrics(pred: np.ndarray, truth: np.ndarray, empty: float = 1.0) -> dict[str, float]:
    """Per-image segmentation metrics (see the module docstring for the empty-mask rule).

    Args:
        pred: predicted mask ``[H, W]`` (bool or {0, 1}).
        truth: reference mask ``[H, W]``.
        empty: score of a ratio that is 0/0 while the masks agree everywhere (default 1.0; NaN to exclude).

    Returns:
        dict with ``iou`` (Jaccard), ``dice`` (F1), ``precision``, ``recall`` (sensitivity),
        ``specificity``, ``accuracy`` (pixel) and ``thresholded_jaccard`` (ISIC 2018), each in [0, 1]
        (or NaN when ``empty`` is NaN).

    Raises:
        MaskShapeError: the two masks differ in shape.
    """
    return metrics_from_counts(*confusion(pred, truth), empty=empty)


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int, empty: float = 1.0) -> dict[str, float]:
    """:func:`seg_metrics` from confusion counts (so scores at many thresholds need no masks kept)."""
    tp, fp, fn, tn = int(tp), int(fp), int(fn), int(tn)
    agree = fp == 0 and fn == 0
    iou = _ratio(tp, tp + fp + fn, agree, empty)
    return {
        "iou": iou,
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, agree, empty),
        "precision": _ratio(tp, tp + fp, agree, empty),
        "recall": _ratio(tp, tp + fn, agree, empty),
        "specificity": _ratio(tn, tn + fp, agree, empty),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, agree, empty),
        # NaN >= 0.65 is False, so keep NaN explicitly rather than turning it into 0.
        "thresholded_jaccard": iou if (np.isnan(iou) or iou >= ISIC_JACCARD_THRESHOLD) else 0.0,
    }


# ---------------------------------------------------------------------------------------------------------
# Bootstrap confidence intervals
# ---------------------------------------------------------------------------------------------------------


def _clean(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    return v[~np.isnan(v)]


def _stat_rows(stat: Callable, samples: np.ndarray) -> np.ndarray:
    """Apply ``stat`` to each row of ``samples`` [B, n]; vectorised when ``stat`` takes ``axis``."""
    try:
        out = np.asarray(stat(samples, axis=1), dtype=np.float64)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([stat(row) for row in samples], dtype=np.float64)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable = np.mean,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat(values)``.

    NaNs are dropped first (images excluded by the empty-mask rule). Resampling is vectorised: one
    ``[n_boot, n]`` index matrix, ``stat(samples, axis=1)`` when the statistic accepts ``axis``.

    Args:
        values: per-image scores, shape ``[n]``.
        stat: statistic (``np.mean``, ``np.median``, or any callable on a 1-D array).
        n_boot: number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of ``numpy.random.default_rng``; same seed, same interval.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` when fewer than 2 finite values remain (an interval from one value
        would pretend a certainty we do not have).
    """
    v = _clean(values)
    if v.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Chunk so that n_boot x n never exceeds ~4M entries (32 MB) on large data sets.
    chunk = max(1, int(4_000_000 // v.size))
    stats = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, v.size, size=(b, v.size))
        stats.append(_stat_rows(stat, v[idx]))
    s = np.concatenate(stats)
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def summarize(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Mean, median, standard deviation (ddof=1) and bootstrap CI of the mean, ignoring NaNs.

    Returns:
        dict(mean, median, std, ci_lo, ci_hi, n); ``n`` counts the finite values. With n == 0 every
        statistic is NaN; with n == 1, std and the CI are NaN.
    """
    v = _clean(values)
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "std": nan, "ci_lo": nan, "ci_hi": nan, "n": 0}
    lo, hi = bootstrap_ci(v, np.mean, n_boot=n_boot, alpha=alpha, seed=seed)
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "std": float(v.std(ddof=1)) if n > 1 else float("nan"),
        "ci_lo": lo,
        "ci_hi": hi,
        "n": n,
    }


def summary_table(
    df,
    metrics: Sequence[str] = ("iou", "dice", "precision", "recall", "thresholded_jaccard"),
    by: str | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
):
    """Per-method summary of a per-image results frame (one row per image and method).

    Args:
        df: pandas DataFrame with the metric columns (e.g. from
            :func:`lesion.segment.evaluate.evaluate_segmentation`, possibly several concatenated).
        metrics: metric columns to summarise (missing columns are skipped).
        by: grouping column; None groups by ``method`` when that column exists, else one overall row.

    Returns:
        DataFrame with one row per group: the group column (if any), ``n`` (rows in the group) and for
        each metric ``<m>_mean``, ``<m>_ci_lo``, ``<m>_ci_hi`` (95% bootstrap CI of the mean by default),
        ``<m>_median``, ``<m>_std``.
    """
    import pandas as pd

    if by is None and "method" in df.columns:
        by = "method"
    cols = [m for m in metrics if m in df.columns]
    groups = df.groupby(by, sort=False) if by is not None else [(None, df)]
    rows = []
    for key, g in groups:
        row: dict = {} if by is None else {by: key}
        row["n"] = int(len(g))
        for m in cols:
            s = summarize(g[m].to_numpy(dtype=np.float64), n_boot=n_boot, alpha=alpha, seed=seed)
            for k in ("mean", "ci_lo", "ci_hi", "median", "std"):
                row[f"{m}_{k}"] = s[k]
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------------------------


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of each row pair (Mann-Whitney U with mid-ranks, equal to sklearn's roc_auc_score).

    Written here because sklearn's ``roc_auc_score`` takes one resample per call; this ranks all
    ``[B, n]`` resamples at once (hundreds of times faster for 1000 resamples).
    """
    from scipy.stats import rankdata

    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # average ranks for ties
    u = ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


#: What a page shows instead of an AUC that the one-class rule made NaN.
ONE_CLASS_AUC = "needs both classes"


def _auc_inputs(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"y_true has {y.size} values but y_score has {s.size}.")
    return y, s


def binary_auc(y_true: Sequence[int] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """ROC-AUC of binary labels ``[n]`` against scores ``[n]`` (sklearn's ``roc_auc_score``).

    The one-class rule (module docstring): NaN when the labels hold one class only (or none).

    Raises:
        DataError: the lengths differ.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _auc_inputs(y_true, y_score)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def auc_text(auc: float | None, digits: int = 3) -> str:
    """An AUC as a page shows it: ``"0.912"``, or :data:`ONE_CLASS_AUC` when it is undefined (NaN or None)."""
    if auc is None or not np.isfinite(auc):
        return ONE_CLASS_AUC
    return f"{float(auc):.{digits}f}"


def roc_auc_ci(
    y_true: Sequence[int] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """ROC-AUC with a stratified percentile bootstrap CI.

    Positives and negatives are resampled separately (stratified), so every resample holds both classes
    and none has to be skipped; the class counts stay those of the data.

    Args:
        y_true: binary labels ``[n]`` (0/1 or bool).
        y_score: scores ``[n]`` (probability or logit of the positive class).
        n_boot: bootstrap resamples (0 skips the CI: lo = hi = NaN).

    Returns:
        ``(auc, lo, hi)``; all three NaN when only one class is present (the one-class rule).

    Raises:
        DataError: the lengths differ.
    """
    y, s = _auc_inputs(y_true, y_score)
    auc = binary_auc(y, s)
    if n_boot <= 0 or not np.isfinite(auc):
        return auc, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pos, neg = s[y], s[~y]
    chunk = max(1, int(2_000_000 // y.size))
    stats = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        p = pos[rng.integers(0, pos.size, size=(b, pos.size))]
        q = neg[rng.integers(0, neg.size, size=(b, neg.size))]
        stats.append(_auc_rows(p, q))
    lo, hi = np.percentile(np.concatenate(stats), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return auc, float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------------
# Classification curves (tables the pages plot; sklearn computes, these only shape the output)
# ---------------------------------------------------------------------------------------------------------


def _binary(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores.")
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep].astype(int), s[keep]
    if len(np.unique(y)) < 2:
        raise DataError("ROC and PR curves need both classes among the labelled images.")
    return y, s


def curve_table(y_true, scores: "dict[str, np.ndarray]", kind: str = "roc"):
    """Long table of ROC or precision-recall curves for several models on the same labels.

    Args:
        y_true: 0/1 labels ``[N]`` (NaN = unlabelled, dropped with its scores).
        scores: model name -> positive-class score ``[N]``.
        kind: ``"roc"`` (columns fpr, tpr) or ``"pr"`` (columns recall, precision).

    Returns:
        DataFrame ``model, x, y, threshold, label`` where ``label`` is e.g. ``"ens (AUC 0.91)"``.
    """
    import pandas as pd
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    frames = []
    for name, s in scores.items():
        y, sc = _binary(y_true, s)
        if kind == "roc":
            x, yy, thr = roc_curve(y, sc)
            label = f"{name} (AUC {auc_text(binary_auc(y, sc))})"
        elif kind == "pr":
            yy, x, thr = precision_recall_curve(y, sc)
            thr = np.append(thr, np.nan)
            label = f"{name} (AP {average_precision_score(y, sc):.3f})"
        else:
            raise unknown_option("curve", kind, ("roc", "pr"))
        frames.append(pd.DataFrame({"model": name, "x": x, "y": yy, "threshold": thr, "label": label}))
    return pd.concat(frames, ignore_index=True)


def threshold_report(y_true, y_score, threshold: float = 0.5) -> dict[str, float]:
    """Confusion matrix at a threshold with sensitivity, specificity, PPV, NPV (score >= threshold is positive)."""
    y, s = _binary(y_true, y_score)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn),
            "accuracy": ratio(tp + tn, len(y))}


def calibration_table(y_true, scores: "dict[str, np.ndarray]", n_bins: int = 10):
    """Reliability curves: DataFrame ``model, mean_predicted, fraction_positive, brier`` (sklearn's bins)."""
    import pandas as pd
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    frames = []
    for name, s in scores.items():
        y, sc = _binary(y_true, s)
        frac, mean = calibration_curve(y, np.clip(sc, 0, 1), n_bins=n_bins, strategy="quantile")
        frames.append(pd.DataFrame({"model": name, "mean_predicted": mean, "fraction_positive": frac,
                                    "brier": brier_score_loss(y, np.clip(sc, 0, 1))}))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# AUC tables (what the Classification and Chest X-ray pages show)
# ---------------------------------------------------------------------------------------------------------


def auc_table(y_true, scores: "dict[str, np.ndarray]", n_boot: int = 1000, seed: int = 0):
    """One row per model: ROC-AUC with its stratified bootstrap 95% CI (:func:`roc_auc_ci`) on the same labels.

    Args:
        y_true: 0/1 labels ``[N]`` (NaN = unlabelled: left out with its scores).
        scores: model name -> positive-class score ``[N]``.

    Returns:
        DataFrame ``model, auc, ci_lo, ci_hi, n`` (``n``: labelled images); ``auc`` and the CI are NaN when the
        labelled images hold one class only (the one-class rule).
    """
    import pandas as pd

    y = np.asarray(y_true, dtype=np.float64).ravel()
    keep = np.isfinite(y)
    rows = []
    for name, s in scores.items():
        auc, lo, hi = roc_auc_ci(y[keep], np.asarray(s, dtype=np.float64).ravel()[keep], n_boot=n_boot, seed=seed)
        rows.append({"model": name, "auc": auc, "ci_lo": lo, "ci_hi": hi, "n": int(keep.sum())})
    return pd.DataFrame(rows, columns=["model", "auc", "ci_lo", "ci_hi", "n"])


def _label_column(y: np.ndarray, scores: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of output column ``j`` on the images labelled for it (finite ``y``)."""
    ok = np.isfinite(y[:, j])
    return y[ok, j], scores[ok, j]


def label_auc_table(y_true, scores, labels: Sequence[str], n_boot: int = 500):
    """:func:`per_label_auc` (with CI) as a table, each column scored on the images labelled for it.

    Args:
        y_true: multi-hot labels ``[N, K]``; NaN = the image is not labelled for that column (left out).
        scores: probabilities ``[N, K]``.
        labels: the K column names.
        n_boot: bootstrap resamples of :func:`roc_auc_ci`.

    Returns:
        DataFrame ``label, n, positives, auc, ci_lo, ci_hi``; ``auc`` and the CI are NaN for a column whose
        labelled images hold one class only.
    """
    import pandas as pd

    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    rows = []
    for j, name in enumerate(labels):
        t, sc = _label_column(y, s, j)
        r = per_label_auc(t[:, None], sc[:, None], [name], ci=True, n_boot=n_boot)[name]
        lo, hi = r.get("auc_ci") or (float("nan"), float("nan"))
        rows.append({"label": name, "n": r["n"], "positives": r["positives"], "auc": r["auc"],
                     "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows, columns=["label", "n", "positives", "auc", "ci_lo", "ci_hi"])


def label_curve_table(y_true, scores, labels: Sequence[str]):
    """ROC curve of every output column of a multi-label model, as one long table.

    Args: as :func:`label_auc_table`; columns whose labelled images hold one class only are left out.

    Returns:
        DataFrame ``model, x (fpr), y (tpr), threshold, label, positives`` where ``model`` is the column name
        and ``label`` reads e.g. ``"Effusion (AUC 0.912, n+=14)"``; empty when no column has both classes.
    """
    import pandas as pd
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    frames = []
    for j, name in enumerate(labels):
        t, sc = _label_column(y, s, j)
        auc = binary_auc(t, sc)
        if not np.isfinite(auc):
            continue
        fpr, tpr, thr = roc_curve(t, sc)
        pos = int(t.sum())
        frames.append(pd.DataFrame({"model": name, "x": fpr, "y": tpr, "threshold": thr,
                                    "label": f"{name} (AUC {auc_text(auc)}, n+={pos})", "positives": pos}))
    if not frames:
        return pd.DataFrame(columns=["model", "x", "y", "threshold", "label", "positives"])
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------------------
# Classifier outputs: AUC from logits, per output column (the trainers and ``lesion evaluate cls`` share these)
# ----------------------------------------------------------------------------------------------------------
def logits_auc(logits: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of a head's logits ``[N, K]``: binary on the single logit; multi-class (softmax) macro
    one-vs-rest over the classes present. NaN when only one class is present (the one-class rule)."""
    from scipy.special import softmax

    y = np.asarray(y)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return binary_auc(y, logits[:, 0])
    p = softmax(logits, axis=1)
    per_class = [binary_auc(y == k, p[:, k]) for k in range(p.shape[1])]
    return _finite_mean(per_class)


def _finite_mean(values: Iterable[float | None]) -> float:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def per_label_auc(y: np.ndarray, scores: np.ndarray, classes: Sequence[str], ci: bool = False,
                  n_boot: int = 500) -> dict[str, dict]:
    """ROC-AUC per output column of a multi-label head: ``{class: {"n", "positives", "auc"}}``; with ``ci`` also
    the 95% bootstrap CI as ``auc_ci`` ``[lo, hi]``. A column without both positives and negatives gets NaN
    (the one-class rule)."""
    out: dict[str, dict] = {}
    for j, c in enumerate(classes):
        t = np.asarray(y)[:, j]
        row: dict = {"n": int(len(t)), "positives": int(t.sum())}
        if ci:
            auc, lo, hi = roc_auc_ci(t, scores[:, j], n_boot=n_boot)
            row.update(auc=auc, auc_ci=[lo, hi])
        else:
            row["auc"] = binary_auc(t, scores[:, j])
        out[c] = row
    return out


def mean_auc(per_label: dict[str, dict]) -> float:
    """Mean of the defined (finite) per-label AUCs; NaN when none is defined."""
    return _finite_mean(v.get("auc") for v in per_label.values())



# ---------------------------------------------------------------------------------------------------------
# Operating thresholds (what the Classification and Failure review pages offer besides a fixed 0.5)
# ---------------------------------------------------------------------------------------------------------


def youden_threshold(y_true, y_score) -> dict[str, float]:
    """The threshold that maximises Youden's J = sensitivity + specificity − 1 on these labels.

    A score ``>= threshold`` is positive (as in :func:`threshold_report` and sklearn's ``roc_curve``). Ties in J
    go to the highest threshold (fewest positives). Chosen on the data it is then reported on, the threshold's
    sensitivity and specificity are optimistic: fix it on validation data before judging a test set.

    Args:
        y_true: 0/1 labels ``[N]`` (NaN = unlabelled, dropped with its score).
        y_score: positive-class scores ``[N]``.

    Returns:
        ``threshold, sensitivity, specificity, j``.

    Raises:
        DataError: fewer than two classes among the labelled images.
    """
    from sklearn.metrics import roc_curve

    y, s = _binary(y_true, y_score)
    fpr, tpr, thr = roc_curve(y, s)
    j = tpr[1:] - fpr[1:]  # thr[0] is +inf (nothing positive)
    i = int(np.argmax(j)) + 1
    return {"threshold": float(thr[i]), "sensitivity": float(tpr[i]), "specificity": float(1 - fpr[i]),
            "j": float(tpr[i] - fpr[i])}


def sensitivity_threshold(y_true, y_score, sensitivity: float) -> dict[str, float]:
    """The highest threshold whose sensitivity on these labels is at least ``sensitivity``.

    With ``P`` positives it is the ``ceil(sensitivity · P)``-th highest positive score, so exactly that many
    positives (or more, on tied scores) score ``>= threshold``. Optimistic on the data it was chosen on, as
    :func:`youden_threshold`.

    Args:
        y_true: 0/1 labels ``[N]`` (NaN = unlabelled).
        y_score: positive-class scores ``[N]``.
        sensitivity: the wanted sensitivity, in (0, 1].

    Returns:
        ``threshold, sensitivity, specificity, j`` (the values reached at that threshold).

    Raises:
        ConfigError: ``sensitivity`` outside (0, 1]; DataError: fewer than two classes.
    """
    if not 0.0 < float(sensitivity) <= 1.0:
        raise ConfigError(f"The wanted sensitivity must be in (0, 1], got {sensitivity}.")
    y, s = _binary(y_true, y_score)
    pos = np.sort(s[y == 1])[::-1]
    k = max(1, int(np.ceil(float(sensitivity) * pos.size - 1e-9)))
    t = float(pos[k - 1])
    sens = float(np.mean(s[y == 1] >= t))
    spec = float(np.mean(s[y == 0] < t))
    return {"threshold": t, "sensitivity": sens, "specificity": spec, "j": sens + spec - 1.0}


#: The words :func:`ci_verdict` returns.
VERDICTS = ("supports", "contradicts", "inconclusive")


def ci_verdict(lo: float, hi: float, null: float = 0.5) -> str:
    """What a confidence interval says about a claim "the value is above ``null``" (an AUC above chance).

    Returns:
        ``supports`` when the whole CI lies above ``null``, ``contradicts`` when it lies wholly below,
        ``inconclusive`` when it contains ``null`` (or a bound is NaN).
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo > null:
        return "supports"
    if hi < null:
        return "contradicts"
    return "inconclusive"
