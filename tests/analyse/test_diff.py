"""Model diff with a planted answer: two binormal models whose true AUCs are known; the paired ΔAUC's CI holds the
true difference and DeLong rejects 0; the per-image table and the slices where they differ."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from lesion.analyse.diff import OUTCOMES, diff_models, per_image, slice_differences
from lesion.analyse.slices import SliceConfig, make_groups
from lesion.errors import DataError


def binormal(n: int, d_a: float, d_b: float, seed: int = 0):
    """Scores ~ N(d·y, 1): AUC = Φ(d / √2). Shared noise makes the two correlated (a paired design)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    shared = rng.normal(size=n)
    a = d_a * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    b = d_b * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    true = norm.cdf(d_b / np.sqrt(2)) - norm.cdf(d_a / np.sqrt(2))
    return y, 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b)), true


def test_a_known_delta_auc_is_recovered_within_its_ci():
    y, a, b, true = binormal(3000, 1.0, 1.6)
    d = diff_models(y, a, b, n_boot=500)
    assert d.ci[0] < true < d.ci[1]
    assert d.delta_auc == pytest.approx(d.auc_b - d.auc_a) and d.delta_auc == pytest.approx(true, abs=0.03)
    assert d.p_delong < 1e-6 and d.n == 3000
    assert d.mcnemar.a_wrong_b_right > d.mcnemar.a_right_b_wrong and d.mcnemar.p < 0.05


def test_equal_models_give_a_ci_around_zero():
    y, a, b, true = binormal(1500, 1.2, 1.2, seed=4)
    d = diff_models(y, a, b, n_boot=500)
    assert true == 0 and d.ci[0] < 0 < d.ci[1] and d.p_delong > 0.05


def test_per_image_outcomes_and_slices():
    y, a, b, _ = binormal(800, 0.8, 1.6, seed=2)
    ids = [f"im{i}" for i in range(800)]
    t = per_image(ids, y, a, b)
    assert set(t["outcome"]) <= set(OUTCOMES) and len(t) == 800
    row = t[t["outcome"] == "A right, B wrong"].iloc[0]
    assert row["correct_a"] and not row["correct_b"]
    site = np.where(np.arange(800) < 400, "X", "Y")
    b2 = b.copy()
    b2[site == "X"] = a[site == "X"]  # the two agree on site X: they differ only on Y
    groups = make_groups(pd.DataFrame({"id": ids, "site": site}))
    sd = slice_differences(y, a, b2, groups, [("site",)], SliceConfig(min_n=30))
    assert sd.iloc[0]["value"] == "Y" and sd.iloc[0]["significant"]
    assert sd[sd["value"] == "X"].iloc[0]["delta"] == 0


def test_one_class_is_refused():
    with pytest.raises(DataError, match="both classes"):
        diff_models([1, 1, 1], [0.2, 0.3, 0.4], [0.1, 0.5, 0.6])
