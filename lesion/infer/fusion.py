"""Multi-view fusion: several images of one case (two views of a lesion, a lesion over time) -> one score.

Images are grouped into **cases** by an id column (:func:`case_keys`: ``lesion_id`` by default, any metadata
column, or ``group``). Per-view positive-class probabilities ``[N]`` are fused per case ``[C]`` by:

* ``mean``: arithmetic mean of the views' probabilities;
* ``max``: the most suspicious view;
* ``log_mean``: geometric mean of the probabilities, ``exp(mean(log p))`` (a low view pulls harder);
* ``stacker``: a logistic regression over order-invariant case features of the views' logits (mean, max and
  min logit, number of views; :func:`case_features`). It is fitted on validation predictions
  (:func:`fit_stacker`, then ``evaluate_fusion(..., stacker=fitted)``) or, with a single data set,
  **out of fold over cases** (:func:`oof_stacker`): every case is scored by a stacker fitted on the other
  folds' cases only.

:func:`evaluate_fusion` compares, on the cases with >= 2 views, the per-view AUC (every image of those cases
scored alone, with its own label) to the fused AUC per method (one score and one label per case), each with a
stratified bootstrap 95% CI (:func:`lesion.metrics.roc_auc_ci`). **A case's label is the max of its views'
labels** (positive when any view is); views that disagree are counted and reported. Cases with one view are
kept in the per-case table (fused = the view) but left out of the AUCs and reported.

The per-view AUC counts a case with five images five times; ``one random view`` (:func:`random_view_auc`) is
the like-for-like baseline: the same cases and labels as the fused AUCs, each case scored by one random view.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lesion.errors import DataError, unknown_option
from lesion.infer.evaluate import label_vector, score
from lesion.metrics import curve_table, roc_auc_ci

FUSION_METHODS = ("mean", "max", "log_mean", "stacker")
#: Name of the per-image baseline row in the AUC table and on the ROC chart.
PER_VIEW = "per view"
#: Name of the case-level baseline row: each case scored by one random view (mean over draws).
ONE_VIEW = "one random view"
#: Frame columns that hold labels or file facts, never case ids.
_NOT_CASE_COLUMNS = ("diagnosis", "target", "findings", "has_mask")
_EPS = 1e-6
#: Fewest labelled multi-view cases, and fewest of each class among them, for which the page reports an AUC
#: (:func:`evaluate_predictions`); below it a bootstrap CI spans almost [0, 1] and the AUC says nothing.
MIN_AUC_CASES = 10
MIN_AUC_PER_CLASS = 3
#: Column-name words of a case id (``lesion_id``, ``patient``, ``case_no``, ``subject``, ``study_uid``...).
_ID_WORDS = re.compile(r"(^|_)(id|ids|uid|case|cases|patient|patients|lesion|lesions|subject|subjects|study|"
                       r"series|accession|group|person|participant)(_|$)")
#: Column-name words of a label, a diagnosis or a description of the image: never a case id, however the
#: values repeat (``histological_diagnosis``, ``dx``, ``label``, ``finding``, ``sex``, ``colors``...).
_LABEL_WORDS = re.compile(r"diagn|(^|_)dx(_|$)|label|class|target|finding|histo|patholog|malig|benign|"
                          r"melanom|nev|(^|_)(sex|gender|age|site|split|fold|view|colou?rs?|follow_up)(_|$)")


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _columns(records: Sequence[Any]) -> list[str]:
    """Columns a case id may come from: ``group`` and every metadata key, in first-seen order."""
    cols = ["group"]
    for r in records:
        for k in (r.meta or {}):
            if k not in cols and k not in _NOT_CASE_COLUMNS:
                cols.append(k)
    return cols


def _value(record: Any, column: str) -> Any:
    if column == "group":
        return record.group
    if column == "id":
        return record.id
    return (record.meta or {}).get(column)


def case_keys(records: Sequence[Any], column: str = "lesion_id") -> np.ndarray:
    """Case id of every image ``[N]`` (object) from ``column``.

    Args:
        records: :class:`lesion.data.records.Record` list (a Dataset's ``records``).
        column: ``group``, ``id`` or a metadata key (``lesion_id``, ``patient_id``...).

    Returns:
        the column's value as a string; an image without a value is its own case, keyed by its image id.

    Raises:
        DataError: no record has the column; the message lists the columns that exist.
    """
    records = list(getattr(records, "records", records))
    available = _columns(records)
    if column != "id" and column not in available:
        raise DataError(f"The data set has no column '{column}' to group images into cases. "
                        f"Available columns: {', '.join(available)}.")
    keys = []
    for r in records:
        v = _value(r, column)
        keys.append(f"{r.id} (no {column})" if _is_missing(v) else str(v))
    return np.asarray(keys, dtype=object)


def is_label_column(column: str) -> bool:
    """True for a column whose name says it holds a label, a diagnosis or an image property (``diagnosis``,
    ``histological_diagnosis``, ``dx``, ``label``, ``sex``, ``site``, ``colors``...): never a case id."""
    c = str(column).strip().lower().replace(" ", "_").replace("-", "_")
    return c in _NOT_CASE_COLUMNS or bool(_LABEL_WORDS.search(c))


def is_id_column(column: str) -> bool:
    """True for a column whose name says it identifies a case (``lesion_id``, ``patient``, ``case``, ``group``,
    ``subject``, ``study_uid``...) and is not a label column (:func:`is_label_column`)."""
    c = str(column).strip().lower().replace(" ", "_").replace("-", "_")
    return bool(_ID_WORDS.search(c)) and not is_label_column(c)


def case_columns(records: Sequence[Any], max_median_views: float = 10.0) -> list[str]:
    """Columns that may group images into cases: an id-like name (:func:`is_id_column`: never a label,
    diagnosis, age, sex or site column), at least one value with >= 2 images, >= 3 distinct values, and a
    median of at most ``max_median_views`` images per value.

    ``lesion_id`` comes first when it qualifies, then ``group`` and the rest in column order. An empty list
    means the data set has no id column that repeats (each image is its own case).
    """
    records = list(getattr(records, "records", records))
    out = []
    for col in _columns(records):
        if not is_id_column(col):
            continue
        values = [_value(r, col) for r in records]
        values = [str(v) for v in values if not _is_missing(v) and not isinstance(v, (bool, np.bool_))]
        if not values:
            continue
        _, counts = np.unique(np.asarray(values, dtype=object), return_counts=True)
        if counts.max() >= 2 and len(counts) >= 3 and float(np.median(counts)) <= max_median_views:
            out.append(col)
    return sorted(out, key=lambda c: (c != "lesion_id", c != "group"))


# ---------------------------------------------------------------------------------------------------------
# Grouping and simple fusion
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cases:
    """Images grouped into cases.

    Attributes:
        keys: case id of each of the C cases ``[C]``, in order of first appearance.
        index: case index of each of the N images ``[N]`` (int, 0..C-1).
        n_views: images per case ``[C]``.
    """

    keys: np.ndarray
    index: np.ndarray
    n_views: np.ndarray

    @classmethod
    def from_keys(cls, keys: Sequence[Any]) -> "Cases":
        """Group images by their case key ``[N]`` (cases keep the order in which they first appear)."""
        keys = np.asarray(list(keys), dtype=object)
        if keys.size == 0:
            raise DataError("No images to group into cases.")
        uniq, first, index = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # case order = first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        index = rank[index.ravel()]
        return cls(uniq[order], index, np.bincount(index, minlength=order.size))

    def __len__(self) -> int:
        return int(self.keys.size)

    @property
    def multi(self) -> np.ndarray:
        """Boolean ``[C]``: cases with >= 2 views."""
        return self.n_views >= 2


def _check_scores(scores: Any, cases: Cases) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape != cases.index.shape:
        raise DataError(f"{s.size} scores but {cases.index.size} images grouped into cases.")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise DataError("Per-view scores must be probabilities in [0, 1] (no NaN).")
    return s


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def fuse(scores: Any, cases: Cases, method: str) -> np.ndarray:
    """Fuse per-view probabilities ``[N]`` into one score per case ``[C]`` with ``mean``, ``max`` or ``log_mean``.

    A one-view case gets its view's score under every method. (``stacker`` needs a fitted model:
    :func:`fit_stacker` / :func:`oof_stacker`.)
    """
    s = _check_scores(scores, cases)
    c = len(cases)
    if method == "mean":
        return np.bincount(cases.index, weights=s, minlength=c) / cases.n_views
    if method == "max":
        out = np.full(c, -np.inf)
        np.maximum.at(out, cases.index, s)
        return out
    if method == "log_mean":
        logs = np.log(np.clip(s, _EPS, 1.0))
        return np.exp(np.bincount(cases.index, weights=logs, minlength=c) / cases.n_views)
    if method == "stacker":
        raise DataError("The stacker is fitted, not computed: use fit_stacker / oof_stacker (or evaluate_fusion).")

    raise unknown_option("fusion method", method, FUSION_METHODS)


def case_labels(labels: Any, cases: Cases) -> tuple[np.ndarray, np.ndarray]:
    """Case label = max of its views' labels ``[C]`` (NaN when no view is labelled), and ``[C]`` True where
    labelled views of the case disagree."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.shape != cases.index.shape:
        raise DataError(f"{y.size} labels but {cases.index.size} images grouped into cases.")
    c = len(cases)
    hi, lo = np.full(c, -np.inf), np.full(c, np.inf)
    ok = np.isfinite(y)
    np.maximum.at(hi, cases.index[ok], y[ok])
    np.minimum.at(lo, cases.index[ok], y[ok])
    labelled = np.isfinite(hi)
    return np.where(labelled, hi, np.nan), labelled & (hi != lo)


# ---------------------------------------------------------------------------------------------------------
# Stacker
# ---------------------------------------------------------------------------------------------------------

STACKER_FEATURES = ("mean_logit", "max_logit", "min_logit", "n_views")


def case_features(scores: Any, cases: Cases) -> np.ndarray:
    """Order-invariant features per case ``[C, 4]``: mean, max and min of the views' logits, number of views."""
    s = _check_scores(scores, cases)
    z = _logit(s)
    c = len(cases)
    hi, lo = np.full(c, -np.inf), np.full(c, np.inf)
    np.maximum.at(hi, cases.index, z)
    np.minimum.at(lo, cases.index, z)
    mean = np.bincount(cases.index, weights=z, minlength=c) / cases.n_views
    return np.stack([mean, hi, lo, cases.n_views.astype(np.float64)], axis=1)


@dataclass
class Stacker:
    """A fitted logistic-regression stacker (standardised :data:`STACKER_FEATURES` -> case probability)."""

    model: Any
    n_cases: int
    n_positive: int

    def predict(self, scores: Any, cases: Cases) -> np.ndarray:
        """Fused probability per case ``[C]``."""
        return self.model.predict_proba(case_features(scores, cases))[:, 1]


def _fit(features: np.ndarray, y: np.ndarray, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed)).fit(features, y)


def _need_both(y: np.ndarray, what: str) -> None:
    if not ((y == 1).any() and (y == 0).any()):
        raise DataError(f"The stacker needs both positive and negative {what}; got "
                        f"{int((y == 1).sum())} positive and {int((y == 0).sum())} negative.")


def fit_stacker(scores: Any, cases: Cases, labels: Any, C: float = 1.0, seed: int = 0) -> Stacker:
    """Fit the stacker on (validation) predictions: per-view probabilities ``[N]`` and per-image labels ``[N]``
    (case label = max of its views'; unlabelled cases are skipped)."""
    y, _ = case_labels(labels, cases)
    ok = np.isfinite(y)
    _need_both(y[ok], "cases")
    x = case_features(scores, cases)[ok]
    return Stacker(_fit(x, y[ok].astype(int), C, seed), int(ok.sum()), int(y[ok].sum()))


def stacker_folds(y_case: np.ndarray, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Fold of every labelled case ``[C]`` (stratified by case label; one case = one row, so a case's views never
    straddle folds). ``n_splits`` is lowered to the size of the smaller class when needed (>= 2)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y_case).astype(int)
    _need_both(y, "cases")
    k = min(n_splits, int((y == 1).sum()), int((y == 0).sum()))
    if k < 2:
        raise DataError(f"An out-of-fold stacker needs >= 2 positive and >= 2 negative cases; got "
                        f"{int((y == 1).sum())} positive and {int((y == 0).sum())} negative.")
    folds = np.empty(y.size, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(y.size), y)):
        folds[test] = f
    return folds


def oof_stacker(scores: Any, cases: Cases, labels: Any, n_splits: int = 5, seed: int = 0, C: float = 1.0,
                folds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold stacker scores on one data set: each case is scored by a stacker fitted on the other folds.

    Args:
        scores: per-view probabilities ``[N]``.
        cases: the grouping.
        labels: per-image labels ``[N]`` (NaN = unlabelled).
        n_splits: folds over the labelled cases.
        folds: fold of every case ``[C]`` (-1 or any value for unlabelled cases), to reuse a split.

    Returns:
        ``(score [C], fold [C])``; unlabelled cases are scored by a stacker fitted on all labelled cases and
        get fold -1.
    """
    y, _ = case_labels(labels, cases)
    x = case_features(scores, cases)
    ok = np.isfinite(y)
    if folds is None:
        folds = np.full(len(cases), -1, dtype=np.int64)
        folds[ok] = stacker_folds(y[ok], n_splits, seed)
    folds = np.where(ok, np.asarray(folds, dtype=np.int64), -1)
    out = np.full(len(cases), np.nan)
    for f in np.unique(folds[ok]):
        train = ok & (folds != f)
        _need_both(y[train], f"cases outside fold {f}")
        out[folds == f] = _fit(x[train], y[train].astype(int), C, seed).predict_proba(x[folds == f])[:, 1]
    if (~ok).any():
        out[~ok] = _fit(x[ok], y[ok].astype(int), C, seed).predict_proba(x[~ok])[:, 1]
    return out, folds


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FusionReport:
    """Per-view vs fused evaluation on the multi-view cases.

    Attributes:
        column: the case-id column.
        cases: one row per case: ``case, n_views, views`` (image ids), ``label`` (max of the views'),
            ``labels_disagree``, one column per fusion method, ``fold`` (out-of-fold stacker; -1 = none).
        views: one row per image: ``id, case, n_views, label, score``.
        auc: one row per score: ``method`` ("per view", "one random view" or a fusion method), ``level``
            (image / case), ``n``, ``positives``, ``auc``, ``ci_lo``, ``ci_hi`` on the multi-view cases (empty
            without labels).
        counts: ``images, cases, single_view_cases, multi_view_cases, multi_view_images,
            unlabelled_cases, disagreeing_cases``.
        notes: readable remarks (label rule, disagreements, skipped stacker...).
        no_auc: why there is no AUC table although labels were given (too few multi-view cases), or "".
    """

    column: str
    cases: Any
    views: Any
    auc: Any
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    no_auc: str = ""

    def _auc_of(self, method: str) -> float:
        row = self.auc[self.auc["method"] == method]
        return float(row["auc"].iloc[0]) if len(row) else float("nan")

    def per_view_auc(self) -> float:
        """AUC of the views scored alone (images of the multi-view cases, labels per image)."""
        return self._auc_of(PER_VIEW)

    def one_view_auc(self) -> float:
        """Case-level baseline: each multi-view case scored by one random view (:func:`random_view_auc`)."""
        return self._auc_of(ONE_VIEW)

    def passes(self, baseline: str = PER_VIEW) -> dict[str, bool]:
        """Fusion method -> fused AUC >= the baseline's AUC (``per view`` or ``one random view``)."""
        base = self._auc_of(baseline)
        fused = self.auc[self.auc["method"].isin(FUSION_METHODS)]
        return {m: bool(a >= base) for m, a in zip(fused["method"], fused["auc"])}

    def roc_table(self):
        """Long ROC table (``model, x, y, threshold, label``) of the per-view and fused scores on the multi-view
        cases, for one chart: per-view curves are over images, fused curves over cases."""
        import pandas as pd

        v = self.views[(self.views["n_views"] >= 2) & self.views["label"].notna()]
        c = self.cases[(self.cases["n_views"] >= 2) & self.cases["label"].notna()]
        if not len(v) or v["label"].nunique() < 2 or c["label"].nunique() < 2:
            raise DataError("No ROC: the multi-view cases need both positive and negative labels.")
        frames = [curve_table(v["label"].to_numpy(), {PER_VIEW: v["score"].to_numpy()}, "roc")]
        methods = [m for m in FUSION_METHODS if m in c.columns and c[m].notna().all()]
        frames.append(curve_table(c["label"].to_numpy(), {m: c[m].to_numpy() for m in methods}, "roc"))
        return pd.concat(frames, ignore_index=True)


def random_view_auc(scores: Any, cases: Cases, labels: Any, keep: np.ndarray | None = None, draws: int = 50,
                    n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Case-level single-view baseline: each case scored by **one** randomly drawn view, labelled by its case.

    The same cases and labels as the fused AUCs, so the comparison is like for like (the per-view AUC counts a
    lesion with 5 images 5 times). Returns the mean over ``draws`` random view choices of the AUC and of its
    stratified bootstrap CI bounds (``n_boot // draws`` resamples each, at least 50).

    Args:
        keep: boolean ``[C]`` of the cases to score (default: all labelled cases).
    """

    s = _check_scores(scores, cases)
    y, _ = case_labels(labels, cases)
    keep = np.isfinite(y) if keep is None else (np.asarray(keep, bool) & np.isfinite(y))
    rng = np.random.default_rng(seed)
    order = np.argsort(cases.index, kind="stable")  # images sorted by case
    start = np.concatenate([[0], np.cumsum(cases.n_views)[:-1]])
    out = []
    for d in range(draws):
        pick = order[start + rng.integers(0, cases.n_views)]  # one image per case
        out.append(roc_auc_ci(y[keep], s[pick][keep], n_boot=max(50, n_boot // draws) if n_boot else 0, seed=d))
    a = np.asarray(out, dtype=np.float64)
    return float(a[:, 0].mean()), float(a[:, 1].mean()), float(a[:, 2].mean())


def _auc_row(name: str, level: str, y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> dict:
    auc, lo, hi = roc_auc_ci(y, s, n_boot=n_boot, seed=seed)
    return {"method": name, "level": level, "n": int(y.size), "positives": int(y.sum()), "auc": auc,
            "ci_lo": lo, "ci_hi": hi}


def evaluate_fusion(
    scores: Any,
    labels: Any,
    keys: Sequence[Any],
    ids: Sequence[str] | None = None,
    column: str = "lesion_id",
    methods: Sequence[str] = FUSION_METHODS,
    stacker: Stacker | str = "oof",
    n_splits: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    min_cases: int = 0,
    min_per_class: int = 1,
) -> FusionReport:
    """Per-view vs fused ROC-AUC on the cases with >= 2 views.

    Args:
        scores: per-view positive-class probabilities ``[N]``.
        labels: per-image 0/1 labels ``[N]`` (NaN = unlabelled); None = no labels (no AUC, fused scores only).
        keys: case id of every image ``[N]`` (:func:`case_keys`).
        ids: image ids ``[N]`` (default ``image_<i>``).
        column: name of the case-id column (for messages and the report).
        methods: subset of :data:`FUSION_METHODS`.
        stacker: ``"oof"`` (out of fold over this data's cases, ``n_splits`` folds) or a :class:`Stacker`
            fitted on validation predictions.
        n_boot: bootstrap resamples of the AUC CIs.
        min_cases: fewest labelled multi-view cases for an AUC; with fewer, the report has no AUC rows and
            ``no_auc`` (and a note) says why. ``min_per_class``: the same for each class among them.

    Raises:
        DataError: every case has one view, lengths differ, scores are not probabilities, or the labelled
            multi-view cases hold only one class.
    """
    import pandas as pd

    for m in methods:
        if m not in FUSION_METHODS:
            raise unknown_option("fusion method", m, FUSION_METHODS)
    cases = Cases.from_keys(keys)
    s = _check_scores(scores, cases)
    n = s.size
    ids = [f"image_{i:05d}" for i in range(n)] if ids is None else [str(i) for i in ids]
    if len(ids) != n:
        raise DataError(f"{len(ids)} image ids but {n} scores.")
    if not cases.multi.any():
        raise DataError(f"Every case under column '{column}' has one image ({len(cases)} cases): fusion needs "
                        "cases with two or more views. Pick a column that groups several images of one case "
                        "(e.g. lesion_id).")
    y_img = np.full(n, np.nan) if labels is None else np.asarray(labels, dtype=np.float64).ravel()
    y_case, disagree = case_labels(y_img, cases)
    multi = cases.multi
    labelled = np.isfinite(y_case)
    notes = []
    counts = {"images": n, "cases": len(cases), "single_view_cases": int((~multi).sum()),
              "multi_view_cases": int(multi.sum()), "multi_view_images": int(cases.n_views[multi].sum()),
              "unlabelled_cases": int((~labelled).sum()), "disagreeing_cases": int(disagree.sum())}

    fused = {m: fuse(s, cases, m) for m in methods if m != "stacker"}
    folds = np.full(len(cases), -1, dtype=np.int64)
    if "stacker" in methods:
        if isinstance(stacker, Stacker):
            fused["stacker"] = stacker.predict(s, cases)
            notes.append(f"Stacker fitted beforehand on {stacker.n_cases} cases ({stacker.n_positive} positive).")
        elif stacker == "oof":
            try:
                fused["stacker"], folds = oof_stacker(s, cases, y_img, n_splits=n_splits, seed=seed)
                notes.append(f"Stacker: logistic regression on {', '.join(STACKER_FEATURES)}, fitted out of fold "
                             f"over {int(labelled.sum())} labelled cases ({int(folds.max()) + 1} folds): no case "
                             "is scored by a stacker that saw it.")
            except DataError as e:
                notes.append(f"Stacker skipped: {e}")
        else:
            raise unknown_option("stacker", str(stacker), ("oof", "a fitted Stacker"))

    views = pd.DataFrame({"id": ids, "case": cases.keys[cases.index], "n_views": cases.n_views[cases.index],
                          "label": y_img, "score": s})
    table = pd.DataFrame({"case": cases.keys, "n_views": cases.n_views,
                          "views": [", ".join(v) for v in views.groupby(cases.index, sort=True)["id"].agg(list)],
                          "label": y_case, "labels_disagree": disagree})
    for m, f in fused.items():
        table[m] = f
    table["fold"] = folds

    rows = []
    if counts["single_view_cases"]:
        notes.append(f"{counts['single_view_cases']} of {len(cases)} cases have one view: they stay in the per-case "
                     "table (fused = that view) but are left out of the AUCs.")
    if labels is not None and labelled[multi].any():
        notes.insert(0, "A case's label is the max of its views' labels (positive when any view is).")
        if disagree.any():
            notes.append(f"In {int(disagree.sum())} case(s) the views' labels disagree; the case counts as positive.")
        vm = multi[cases.index] & np.isfinite(y_img)
        cm = multi & labelled
        n_pos = int(y_case[cm].sum())
        n_neg = int(cm.sum()) - n_pos
        if len(np.unique(y_case[cm])) == 2 and (cm.sum() < min_cases or min(n_pos, n_neg) < min_per_class):
            no_auc = (f"Only {int(cm.sum())} labelled multi-view cases ({n_pos} positive, {n_neg} negative): too few "
                      f"for an AUC (at least {min_cases} cases with {min_per_class} of each class are needed). "
                      "Fused scores only.")
            notes.append(no_auc)
            auc = pd.DataFrame([], columns=["method", "level", "n", "positives", "auc", "ci_lo", "ci_hi"])
            return FusionReport(column, table, views, auc, counts, notes, no_auc)
        if len(np.unique(y_case[cm])) < 2:
            raise DataError(f"The {int(cm.sum())} labelled multi-view cases are all "
                            f"{'positive' if y_case[cm][0] else 'negative'}: AUC needs both classes.")
        rows.append(_auc_row(PER_VIEW, "image", y_img[vm], s[vm], n_boot, seed))
        auc, lo, hi = random_view_auc(s, cases, y_img, keep=cm, n_boot=n_boot, seed=seed)
        rows.append({"method": ONE_VIEW, "level": "case", "n": int(cm.sum()), "positives": int(y_case[cm].sum()),
                     "auc": auc, "ci_lo": lo, "ci_hi": hi})
        for m, f in fused.items():
            rows.append(_auc_row(m, "case", y_case[cm], f[cm], n_boot, seed))
    elif labels is not None:
        notes.append("No multi-view case has a label: fused scores only, no AUC.")
    auc = pd.DataFrame(rows, columns=["method", "level", "n", "positives", "auc", "ci_lo", "ci_hi"])
    return FusionReport(column, table, views, auc, counts, notes)


def evaluate_predictions(records: Sequence[Any], result: Any, target: str, column: str = "lesion_id",
                         **kwargs: Any) -> FusionReport:
    """:func:`evaluate_fusion` of an ensemble's :class:`lesion.infer.engine.PredictionResult` on its records.

    Args:
        records: the records predicted on, in the result's order (a Dataset's ``records``).
        result: the prediction result (its ``ids`` must be the records' ids).
        target: ``melanoma`` / ``malignant`` (the score column and the labels, as on the Classification page);
            ``dx7`` heads are fused on their ``mel`` column against melanoma labels.
        column: case-id column (:func:`case_keys`).
        kwargs: passed to :func:`evaluate_fusion` (methods, stacker, n_boot...; ``min_cases`` defaults to
            :data:`MIN_AUC_CASES` here), and ``keep``: ids of the images whose labels count (the others are
            treated as unlabelled, e.g. images a model trained on).
    """

    records = list(getattr(records, "records", records))
    if [r.id for r in records] != list(result.ids):
        raise DataError("The predictions do not belong to these images (ids differ): run the models again.")
    if target == "dx7":  # a 7-class head: fuse its 'mel' column against melanoma labels
        target = "melanoma"
    keys = case_keys(records, column)
    s = score(result.probs, result.classes, target)
    y = label_vector(records, target)
    keep = kwargs.pop("keep", None)
    if keep is not None:  # score only these images (e.g. those no model trained on): the others are unlabelled
        keep = set(keep)
        y = np.where([r.id in keep for r in records], y, np.nan)
    labels = y if np.isfinite(y).any() else None
    kwargs.setdefault("min_cases", MIN_AUC_CASES)
    kwargs.setdefault("min_per_class", MIN_AUC_PER_CLASS)
    return evaluate_fusion(s, labels, keys, ids=result.ids, column=column, **kwargs)
