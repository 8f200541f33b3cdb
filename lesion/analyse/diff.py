"""Model diff: two members (or predictions files) on the same images.

:func:`diff_models` gives both AUCs with their CIs, the paired ΔAUC (b − a) with a paired bootstrap CI and DeLong's
p (:mod:`lesion.analyse.stats`), and McNemar's test of correctness at each model's operating point (statsmodels).
:func:`per_image` says for each image which model was right; :func:`slice_differences` finds the groups where the
two differ most (paired DeLong per group, Benjamini–Hochberg across groups).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from lesion.analyse.slices import PAIR, SliceConfig, _small, labels_of
from lesion.analyse.stats import McNemar, bh, delong_paired, mcnemar_test, paired_bootstrap_delta
from lesion.errors import DataError
from lesion.metrics import roc_auc_ci

OUTCOMES = ("both right", "A right, B wrong", "A wrong, B right", "both wrong")


@dataclass(frozen=True)
class Diff:
    """Two models compared on the same labelled images."""

    n: int  # labelled images compared
    positives: int
    auc_a: float
    ci_a: tuple[float, float]
    auc_b: float
    ci_b: tuple[float, float]
    delta_auc: float  # AUC(b) − AUC(a)
    ci: tuple[float, float]  # paired bootstrap 95% CI of delta_auc
    p_delong: float  # DeLong's test of delta_auc = 0 (two-sided)
    threshold_a: float
    threshold_b: float
    mcnemar: McNemar

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"], d["ci_a"], d["ci_b"] = list(self.ci), list(self.ci_a), list(self.ci_b)
        return d


def _labelled(y, s_a, s_b) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    a = np.asarray(s_a, dtype=np.float64).ravel()
    b = np.asarray(s_b, dtype=np.float64).ravel()
    if not (y.size == a.size == b.size):
        raise DataError(f"{y.size} labels, {a.size} and {b.size} scores: the two models must score the same images.")
    ok = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    return y[ok], a[ok], b[ok], ok


def diff_models(y, s_a, s_b, threshold_a: float = 0.5, threshold_b: float = 0.5, n_boot: int = 2000,
                seed: int = 0) -> Diff:
    """Compare two models' scores ``[N]`` on labels ``y`` ``[N]`` (NaN = unlabelled, left out).

    Raises:
        DataError: lengths differ, or the labelled images hold one class only.
    """
    y, a, b, _ = _labelled(y, s_a, s_b)
    if y.size == 0 or y.all() or not y.any():
        raise DataError("A model diff needs labelled images of both classes.")
    auc_a, la, ha = roc_auc_ci(y, a, n_boot=n_boot, seed=seed)
    auc_b, lb, hb = roc_auc_ci(y, b, n_boot=n_boot, seed=seed)
    d = delong_paired(y, a, b)
    lo, hi = paired_bootstrap_delta(y, a, b, n_boot=n_boot, seed=seed)
    mc = mcnemar_test((a >= threshold_a) == (y == 1), (b >= threshold_b) == (y == 1))
    return Diff(int(y.size), int(y.sum()), auc_a, (la, ha), auc_b, (lb, hb), float(auc_b - auc_a), (lo, hi),
                d["p"], float(threshold_a), float(threshold_b), mc)


def per_image(ids: Sequence[str], y, s_a, s_b, threshold_a: float = 0.5, threshold_b: float = 0.5):
    """One row per labelled image: ``id, label, p_a, p_b, correct_a, correct_b, outcome, gap`` (``gap``: how much
    closer B's probability is to the truth than A's; ``outcome`` one of :data:`OUTCOMES`), largest |gap| first."""
    import pandas as pd

    y, a, b, ok = _labelled(y, s_a, s_b)
    ca, cb = (a >= threshold_a) == (y == 1), (b >= threshold_b) == (y == 1)
    outcome = np.where(ca & cb, OUTCOMES[0], np.where(ca, OUTCOMES[1], np.where(cb, OUTCOMES[2], OUTCOMES[3])))
    df = pd.DataFrame({"id": np.asarray(ids, dtype=object)[ok], "label": y.astype(int), "p_a": a, "p_b": b,
                       "correct_a": ca, "correct_b": cb, "outcome": outcome, "gap": np.abs(a - y) - np.abs(b - y)})
    return df.reindex(df["gap"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def slice_differences(y, s_a, s_b, groups, by: Sequence[tuple[str, ...]], cfg: SliceConfig = SliceConfig()):
    """Per group large enough (:class:`SliceConfig`): both AUCs, ``delta`` (b − a), paired DeLong p and BH q, ranked
    by q then |delta|. Returns DataFrame ``column, value, n, positives, auc_a, auc_b, delta, p, q, significant``."""
    import pandas as pd

    y = np.asarray(y, dtype=np.float64).ravel()
    _, _, _, ok = _labelled(y, s_a, s_b)
    a, b = np.asarray(s_a, float)[ok], np.asarray(s_b, float)[ok]
    yy = y[ok]
    rows = []
    for key in by:
        lab = labels_of(groups, key)[ok].astype(str)
        for value in np.unique(lab):
            sel = lab == value
            if _small(yy[sel], cfg):
                continue
            d = delong_paired(yy[sel], a[sel], b[sel])
            rows.append({"column": PAIR.join(key), "value": value, "n": int(sel.sum()), "positives": int(yy[sel].sum()),
                         "auc_a": d["auc_a"], "auc_b": d["auc_b"], "delta": d["delta"], "p": d["p"]})
    df = pd.DataFrame(rows, columns=["column", "value", "n", "positives", "auc_a", "auc_b", "delta", "p"])
    q, rej = bh(df["p"].to_numpy(), cfg.alpha) if len(df) else (np.array([]), np.array([], bool))
    df["q"], df["significant"] = q, rej
    df["_abs"] = df["delta"].abs()
    return df.sort_values(["q", "_abs"], ascending=[True, False]).drop(columns="_abs").reset_index(drop=True)
