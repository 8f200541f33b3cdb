"""Slices: how a model does on each group of images, and which groups differ from the rest beyond noise.

A *grouping* is one label per image for each column: metadata columns as they are (numbers in bands: age in
15-year bands, other numbers in quartile bands), image-derived columns (:mod:`lesion.analyse.image_features`) and
pairs of columns (``sex × site``). For each group of each chosen column (or pair):

* ``n``, ``positives``, ROC-AUC with its stratified bootstrap 95% CI (:func:`lesion.metrics.roc_auc_ci`);
* sensitivity and specificity at the operating point in use (``threshold``: chosen by the caller, on which
  images it says), expected calibration error (:func:`lesion.analyse.stats.expected_calibration_error`);
* ``too_small``: fewer than ``min_n`` images, or fewer than ``min_class`` of either class. Such groups keep their
  row (greyed by the page) but get no AUC, are never ranked, never tested and never chosen as the worst group.

:func:`worst_gaps`: per column, the AUC of the rest minus the AUC of the worst group, with a bootstrap CI (group
and rest resampled apart). The worst group is chosen on the same data, so the gap is biased upwards; the CI says
whether it is more than noise only roughly.

:func:`find_slices`: every group (large enough) tested against the rest of the images — AUC by a z-test on the
two DeLong variances, or the error rate at the operating point by Fisher's exact test — and the p-values corrected
together by Benjamini–Hochberg (statsmodels ``multipletests``), ranked by q then by the size of the difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lesion.analyse.image_features import DESCRIPTIONS, PRESENT, ita_band, quantile_bands
from lesion.analyse.stats import bh, boot_aucs, delong_unpaired, expected_calibration_error
from lesion.errors import ConfigError, DataError
from lesion.metrics import roc_auc_ci

#: Metadata columns that are ids, labels or paths: never sliced by.
NOT_GROUPS = frozenset({"id", "image", "image_id", "image_path", "mask_path", "lesion_id", "patient_id", "group",
                        "diagnosis", "dx", "target", "label", "findings", "has_mask", "split", "filename", "path"})
#: Most distinct values a text column may have to be a grouping (more: an id or free text).
MAX_LEVELS = 30
AGE_EDGES = (0, 15, 30, 45, 60, 75, 200)
PAIR = " × "
FINDER_METRICS = ("auc", "error")


@dataclass(frozen=True)
class SliceConfig:
    """How slices are scored."""

    min_n: int = 30  # fewer images: the group is shown greyed, with no AUC, never ranked or tested
    min_class: int = 5  # fewer positives or negatives: as min_n
    n_boot: int = 1000  # bootstrap resamples of each CI
    n_bands: int = 4  # quantile bands of numeric columns (age: fixed 15-year bands)
    alpha: float = 0.05  # false discovery rate of the slice finder
    seed: int = 0


def age_bands(values) -> np.ndarray:
    """Ages in years as ``"30-44"`` bands (:data:`AGE_EDGES`); unknown for NaN."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, "unknown", dtype=object)
    ok = np.isfinite(v)
    idx = np.searchsorted(AGE_EDGES, v[ok], side="right") - 1
    names = [f"{AGE_EDGES[i]}-{AGE_EDGES[i + 1] - 1}" if i < len(AGE_EDGES) - 2 else f"{AGE_EDGES[i]}+"
             for i in range(len(AGE_EDGES) - 1)]
    out[ok] = [names[min(max(i, 0), len(names) - 1)] for i in idx]
    return out


def group_columns(frame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns of a per-image frame that make sensible groups: numbers (banded), and text with 2 to
    :data:`MAX_LEVELS` values; ids, labels, paths and ``art_*`` ground truth of the demo set are skipped."""
    import pandas as pd

    out = []
    for c in frame.columns:
        if c in NOT_GROUPS or c in exclude or str(c).startswith("art_"):
            continue
        v = frame[c]
        num = pd.to_numeric(v, errors="coerce")
        if num.notna().sum() >= 0.9 * v.notna().sum() and num.nunique() > MAX_LEVELS:
            out.append(c)
        elif 2 <= v.dropna().astype(str).nunique() <= MAX_LEVELS:
            out.append(c)
    return out


def make_groups(frame, columns: Sequence[str] | None = None, n_bands: int = 4):
    """One label per image and column: a DataFrame ``id`` + each column as text (numbers in bands, missing =
    ``unknown``; image-derived columns as :func:`lesion.analyse.image_features.feature_groups` bands them). ``frame`` needs an ``id`` column (e.g. :meth:`Dataset.to_frame` merged with image features).

    Raises:
        ConfigError: a named column is not in the frame (the columns are listed).
    """
    import pandas as pd

    columns = list(columns) if columns is not None else group_columns(frame)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"No column {', '.join(map(repr, missing))} in the data (it has "
                          f"{', '.join(map(str, group_columns(frame)))}).")
    out = {"id": frame["id"].astype(str).to_numpy()}
    for c in columns:
        v = frame[c]
        num = pd.to_numeric(v, errors="coerce")
        numeric = num.notna().sum() >= 0.9 * max(1, v.notna().sum()) and num.nunique() > 6
        if c == "est_skin_tone_ita":
            out[c] = np.array([ita_band(x) for x in num.to_numpy()], dtype=object)
        elif c in PRESENT and c in DESCRIPTIONS:
            out[c] = np.where(num.isna(), "unknown", np.where(num >= PRESENT[c], "present", "absent")).astype(object)
        elif numeric and c == "age":
            out[c] = age_bands(num.to_numpy())
        elif numeric:
            out[c] = quantile_bands(num.to_numpy(), n_bands)
        else:
            out[c] = v.map(lambda x: "unknown" if x is None or (isinstance(x, float) and np.isnan(x)) or x == ""
                           else str(x)).to_numpy(dtype=object)
    return pd.DataFrame(out)


def parse_by(by: str | Sequence[str] | None, available: Sequence[str]) -> list[tuple[str, ...]]:
    """``"sex,site"`` -> ``[("sex",), ("site",)]``; ``"sex*site"`` (or ``sex×site``) adds the pair; None = every
    available column alone.

    Raises:
        ConfigError: an unknown column (the available ones are listed).
    """
    if by is None or by == "" or by == []:
        return [(c,) for c in available]
    items = by.split(",") if isinstance(by, str) else list(by)
    out = []
    for item in items:
        parts = tuple(p.strip() for p in str(item).replace("×", "*").split("*") if p.strip())
        bad = [p for p in parts if p not in available]
        if bad:
            raise ConfigError(f"--by: no column {', '.join(map(repr, bad))} (available: {', '.join(available)}).")
        if parts:
            out.append(parts)
    return out


def labels_of(groups, key: tuple[str, ...]) -> np.ndarray:
    """The group label of every image for one column or pair (``"male × torso"``)."""
    if len(key) == 1:
        return groups[key[0]].to_numpy(dtype=object)
    return np.array([PAIR.join(map(str, t)) for t in zip(*(groups[k] for k in key))], dtype=object)


def _clean(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores.")
    return y, s


def _small(yg: np.ndarray, cfg: SliceConfig) -> bool:
    pos = int(yg.sum())
    return yg.size < cfg.min_n or pos < cfg.min_class or yg.size - pos < cfg.min_class


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def slice_table(y, s, groups, by: Sequence[tuple[str, ...]], threshold: float, cfg: SliceConfig = SliceConfig()):
    """Per-group metrics (module docstring) of labels ``y`` ``[N]`` (NaN = unlabelled, left out) and scores ``s``.

    Args:
        groups: :func:`make_groups` frame, rows in the order of ``y``.
        by: columns or pairs (:func:`parse_by`).
        threshold: the operating point (score >= threshold is positive).

    Returns:
        DataFrame ``column, value, n, positives, auc, ci_lo, ci_hi, sensitivity, specificity, ece, too_small``
        (``too_small`` rows have NaN AUC, CI and ECE), groups of each column by decreasing n.
    """
    import pandas as pd

    y, s = _clean(y, s)
    ok = np.isfinite(y) & np.isfinite(s)
    rows = []
    for key in by:
        lab = labels_of(groups, key)[ok]
        yy, ss = y[ok], s[ok]
        for value in pd.Series(lab).value_counts().index:
            sel = lab == value
            yg, sg = yy[sel], ss[sel]
            small = _small(yg, cfg)
            pred = sg >= threshold
            pos = int(yg.sum())
            auc = lo = hi = ece = float("nan")
            if not small:
                auc, lo, hi = roc_auc_ci(yg, sg, n_boot=cfg.n_boot, seed=cfg.seed)
                ece = expected_calibration_error(yg, sg)
            rows.append({"column": PAIR.join(key), "value": str(value), "n": int(sel.sum()), "positives": pos,
                         "auc": auc, "ci_lo": lo, "ci_hi": hi,
                         "sensitivity": _rate(int((pred & (yg == 1)).sum()), pos),
                         "specificity": _rate(int((~pred & (yg == 0)).sum()), int(yg.size - pos)),
                         "ece": ece, "too_small": small})
    return pd.DataFrame(rows, columns=["column", "value", "n", "positives", "auc", "ci_lo", "ci_hi", "sensitivity",
                                       "specificity", "ece", "too_small"])


def worst_gaps(y, s, groups, by: Sequence[tuple[str, ...]], cfg: SliceConfig = SliceConfig()):
    """Per column: the worst large-enough group, ``gap = AUC(rest) − AUC(worst)`` and its bootstrap 95% CI.

    Returns:
        DataFrame ``column, worst, n, auc_worst, auc_rest, gap, ci_lo, ci_hi, groups`` (``groups``: how many were
        large enough to compare; columns with fewer than two get no row).
    """
    import pandas as pd

    y, s = _clean(y, s)
    ok = np.isfinite(y) & np.isfinite(s)
    y, s = y[ok], s[ok]
    rows = []
    for key in by:
        lab = labels_of(groups, key)[ok]
        scored = {}
        for value in np.unique(lab.astype(str)):
            sel = lab.astype(str) == value
            if not _small(y[sel], cfg) and not _small(y[~sel], cfg):
                scored[value] = roc_auc_ci(y[sel], s[sel], n_boot=0)[0]
        if len(scored) < 2:
            continue
        worst = min(scored, key=scored.get)
        sel = lab.astype(str) == worst
        a_w, a_r = scored[worst], roc_auc_ci(y[~sel], s[~sel], n_boot=0)[0]
        bw = boot_aucs(y[sel], s[sel], cfg.n_boot, cfg.seed)
        br = boot_aucs(y[~sel], s[~sel], cfg.n_boot, cfg.seed + 1)
        lo, hi = np.percentile(br - bw, [2.5, 97.5]) if bw.size and br.size else (np.nan, np.nan)
        rows.append({"column": PAIR.join(key), "worst": worst, "n": int(sel.sum()), "auc_worst": a_w,
                     "auc_rest": a_r, "gap": a_r - a_w, "ci_lo": float(lo), "ci_hi": float(hi),
                     "groups": len(scored)})
    return pd.DataFrame(rows, columns=["column", "worst", "n", "auc_worst", "auc_rest", "gap", "ci_lo", "ci_hi",
                                       "groups"])


def find_slices(y, s, groups, by: Sequence[tuple[str, ...]], threshold: float = 0.5, metric: str = "auc",
                cfg: SliceConfig = SliceConfig()):
    """Groups whose metric differs from the rest of the images, ranked, with Benjamini–Hochberg q-values.

    Args:
        metric: ``auc`` (z-test on DeLong variances, group vs rest) or ``error`` (error rate at ``threshold``,
            Fisher's exact test).

    Returns:
        DataFrame ``column, value, n, positives, metric, in_group, rest, diff, p, q, significant, direction``
        (``diff = in_group − rest``; ``direction``: ``worse`` / ``better``), only groups large enough to test,
        ranked by q, then by |diff|. Small groups are never in it.
    """
    import pandas as pd
    from scipy.stats import fisher_exact

    if metric not in FINDER_METRICS:
        raise ConfigError(f"Unknown slice metric {metric!r}; choose one of {', '.join(FINDER_METRICS)}.")
    y, s = _clean(y, s)
    ok = np.isfinite(y) & np.isfinite(s)
    y, s = y[ok], s[ok]
    wrong = (s >= threshold) != (y == 1)
    rows = []
    for key in by:
        lab = labels_of(groups, key)[ok].astype(str)
        values = np.unique(lab)
        if len(values) < 2:
            continue
        for value in values:
            sel = lab == value
            if _small(y[sel], cfg) or (metric == "auc" and _small(y[~sel], cfg)):
                continue
            if metric == "auc":
                r = delong_unpaired(y[~sel], s[~sel], y[sel], s[sel])
                inside, rest, p = r["auc_b"], r["auc_a"], r["p"]
                worse = inside < rest
            else:
                a, b = int(wrong[sel].sum()), int(wrong[~sel].sum())
                _, p = fisher_exact([[a, int(sel.sum()) - a], [b, int((~sel).sum()) - b]])
                inside, rest = a / sel.sum(), b / max(1, (~sel).sum())
                worse = inside > rest
            rows.append({"column": PAIR.join(key), "value": value, "n": int(sel.sum()), "positives": int(y[sel].sum()),
                         "metric": metric, "in_group": float(inside), "rest": float(rest),
                         "diff": float(inside - rest), "p": float(p), "direction": "worse" if worse else "better"})
    df = pd.DataFrame(rows, columns=["column", "value", "n", "positives", "metric", "in_group", "rest", "diff", "p",
                                     "direction"])
    q, rej = bh(df["p"].to_numpy(), cfg.alpha) if len(df) else (np.array([]), np.array([], bool))
    df["q"], df["significant"] = q, rej
    df["_abs"] = df["diff"].abs()
    df = df.sort_values(["q", "_abs"], ascending=[True, False], na_position="last").drop(columns="_abs")
    return df.reset_index(drop=True)[["column", "value", "n", "positives", "metric", "in_group", "rest", "diff", "p",
                                      "q", "significant", "direction"]]


def analysis_frame(dataset, features=None):
    """The per-image frame slices are grouped from: :meth:`Dataset.to_frame` plus image features (by id)."""
    df = dataset.to_frame()
    if features is not None and len(features):
        df = df.merge(features.drop(columns=[c for c in ("skin_from",) if c in features.columns]), on="id",
                      how="left")
    return df


def groups_json(table) -> list[dict[str, Any]]:
    """:func:`slice_table` rows as the CLI prints them: ``column, value, n, positives, auc, ci`` (+ the rest)."""
    out = []
    for r in table.itertuples(index=False):
        out.append({"column": r.column, "value": r.value, "n": int(r.n), "positives": int(r.positives),
                    "auc": float(r.auc), "ci": [float(r.ci_lo), float(r.ci_hi)],
                    "sensitivity": float(r.sensitivity), "specificity": float(r.specificity), "ece": float(r.ece),
                    "too_small": bool(r.too_small)})
    return out
