"""The statistics the instruments share: DeLong's test, the paired bootstrap of ΔAUC, McNemar, calibration error.

DeLong is written here with numpy / scipy (the fast mid-rank form of Sun & Xu, 2014, IEEE SPL 21:1389): no
maintained Python library offers it (scikit-learn and statsmodels have no DeLong test; the PyPI packages that do
are unmaintained single-file copies), and it is forty lines whose answer is checked against the Mann-Whitney AUC
and a hand-computed variance in the tests. McNemar and the multiple-testing correction come from statsmodels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lesion.errors import DataError
from lesion.metrics import _auc_rows


def _split(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """``(labels bool [n], scores [k, n])`` with unlabelled (NaN) images dropped."""
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise DataError(f"{y.size} labels but {s.shape[1]} scores per model.")
    keep = np.isfinite(y) & np.isfinite(s).all(axis=0)
    return y[keep].astype(bool), s[:, keep]


def delong(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of ``k`` models on the same images and DeLong's covariance of them.

    Args:
        y: 0/1 labels ``[n]`` (NaN = unlabelled, dropped).
        scores: ``[k, n]`` (or ``[n]``) scores, higher = more positive.

    Returns:
        ``(auc [k], cov [k, k])``; NaN when the labels hold one class (the one-class rule of :mod:`lesion.metrics`).
    """
    from scipy.stats import rankdata

    yb, s = _split(y, scores)
    k = s.shape[0]
    m, n = int(yb.sum()), int((~yb).sum())
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    pos, neg = s[:, yb], s[:, ~yb]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives that outrank it
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((k, k))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((k, k))
    return auc, sx / m + sy / n


def _z_p(diff: float, var: float) -> float:
    from scipy.stats import norm

    if not np.isfinite(diff) or not np.isfinite(var):
        return float("nan")
    if var <= 0:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * norm.sf(abs(diff) / np.sqrt(var)))


def delong_paired(y, s_a, s_b) -> dict[str, float]:
    """DeLong's test of two correlated AUCs (two models on the same images).

    Returns:
        ``auc_a, auc_b, delta`` (b − a), ``se`` of delta, ``p`` (two-sided).
    """
    auc, cov = delong(y, np.stack([np.asarray(s_a, float), np.asarray(s_b, float)]))
    delta = float(auc[1] - auc[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "delta": delta,
            "se": float(np.sqrt(var)) if np.isfinite(var) and var > 0 else float("nan"), "p": _z_p(delta, var)}


def delong_unpaired(y_a, s_a, y_b, s_b) -> dict[str, float]:
    """Two AUCs on disjoint images (a group against the rest): z-test with each AUC's DeLong variance.

    Returns:
        ``auc_a, auc_b, delta`` (b − a), ``p``; p NaN when either side holds one class only.
    """
    a, va = delong(y_a, s_a)
    b, vb = delong(y_b, s_b)
    delta = float(b[0] - a[0])
    return {"auc_a": float(a[0]), "auc_b": float(b[0]), "delta": delta, "p": _z_p(delta, float(va[0, 0] + vb[0, 0]))}


def boot_aucs(y, s, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot]`` stratified bootstrap AUCs (positives and negatives resampled apart, as
    :func:`lesion.metrics.roc_auc_ci`); empty when the labels hold one class."""
    yb, sc = _split(y, s)
    sc = sc[0]
    if yb.all() or not yb.any() or n_boot <= 0:
        return np.array([])
    rng = np.random.default_rng(seed)
    pos, neg = sc[yb], sc[~yb]
    return _auc_rows(pos[rng.integers(0, pos.size, (n_boot, pos.size))],
                     neg[rng.integers(0, neg.size, (n_boot, neg.size))])


def paired_bootstrap_delta(y, s_a, s_b, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile CI of ``AUC(b) − AUC(a)``, resampling the **same** images for both models (stratified by class,
    so that the pairing that makes the test sensitive is kept). ``(nan, nan)`` for one-class labels."""
    yb, s = _split(y, np.stack([np.asarray(s_a, float), np.asarray(s_b, float)]))
    if yb.all() or not yb.any() or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pi, ni = np.flatnonzero(yb), np.flatnonzero(~yb)
    chunk = max(1, int(2_000_000 // yb.size))
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        ip = pi[rng.integers(0, pi.size, (b, pi.size))]
        ineg = ni[rng.integers(0, ni.size, (b, ni.size))]
        out.append(_auc_rows(s[1][ip], s[1][ineg]) - _auc_rows(s[0][ip], s[0][ineg]))
    lo, hi = np.percentile(np.concatenate(out), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class McNemar:
    """McNemar's test of two models' correctness at their operating points (statsmodels)."""

    a_right_b_wrong: int  # discordant pairs where only model A is right
    a_wrong_b_right: int  # discordant pairs where only model B is right
    statistic: float
    p: float
    exact: bool  # binomial test (fewer than 25 discordant pairs), else chi-square with continuity correction


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """McNemar's test (:func:`statsmodels.stats.contingency_tables.mcnemar`); exact when discordant pairs < 25."""
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    off = int(table[0, 1] + table[1, 0])
    exact = off < 25
    if off == 0:
        return McNemar(0, 0, 0.0, 1.0, exact)
    r = mcnemar(table, exact=exact, correction=True)
    return McNemar(int(table[0, 1]), int(table[1, 0]), float(r.statistic), float(r.pvalue), exact)


def bh(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg (:func:`statsmodels.stats.multitest.multipletests`, ``fdr_bh``) over the finite p-values.

    Returns:
        ``(q [n], rejected [n])``; NaN p-values (untested groups) get q NaN and are never rejected.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    rej = np.zeros(p.shape, bool)
    ok = np.isfinite(p)
    if ok.any():
        r, qq, _, _ = multipletests(p[ok], alpha=alpha, method="fdr_bh")
        q[ok], rej[ok] = qq, r
    return q, rej


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE: ``sum_b |mean(p in b) − mean(y in b)| · n_b / n`` over equal-width probability bins; NaN when empty."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), 0, 1)
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    if y.size == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        sel = bins == b
        total += abs(p[sel].mean() - y[sel].mean()) * sel.sum()
    return float(total / y.size)
