"""The statistics by hand: DeLong's AUC and variance, the paired tests, McNemar, BH, calibration error."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.analyse.stats import (bh, boot_aucs, delong, delong_paired, delong_unpaired, expected_calibration_error,
                                  mcnemar_test, paired_bootstrap_delta)
from lesion.metrics import binary_auc


def test_delong_auc_and_variance_by_hand():
    # 2 positives (0.9, 0.4), 2 negatives (0.5, 0.1): pairs won 3 of 4 -> AUC 0.75.
    # v01 (per positive: share of negatives below) = [1, 0.5]; v10 (per negative: share of positives above)
    # = [0.5, 1]; var = var(v01)/2 + var(v10)/2 = 0.125/2 + 0.125/2 = 0.125.
    auc, cov = delong([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert auc[0] == pytest.approx(0.75)
    assert cov[0, 0] == pytest.approx(0.125)


def test_delong_matches_the_mann_whitney_auc_and_bootstrap_variance():
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.4
    s = y * 1.0 + rng.normal(size=400)
    auc, cov = delong(y, s)
    assert auc[0] == pytest.approx(binary_auc(y, s))
    boot = boot_aucs(y, s, n_boot=2000)
    assert np.sqrt(cov[0, 0]) == pytest.approx(boot.std(), rel=0.2)


def test_paired_tests_of_identical_and_different_models():
    rng = np.random.default_rng(2)
    y = rng.random(600) < 0.5
    a = y * 0.5 + rng.normal(size=600)
    same = delong_paired(y, a, a)
    assert same["delta"] == 0 and same["p"] == 1.0
    b = y * 2.0 + rng.normal(size=600)
    r = delong_paired(y, a, b)
    assert r["delta"] > 0.2 and r["p"] < 1e-6
    lo, hi = paired_bootstrap_delta(y, a, b, n_boot=500)
    assert lo < r["delta"] < hi and lo > 0
    u = delong_unpaired(y[:300], a[:300], y[300:], b[300:])
    assert u["p"] < 1e-3 and u["delta"] > 0


def test_one_class_labels_give_nan():
    auc, cov = delong([1, 1, 1], [0.1, 0.2, 0.3])
    assert np.isnan(auc[0]) and np.isnan(cov[0, 0])
    assert np.isnan(delong_paired([0, 0], [0.1, 0.2], [0.3, 0.4])["p"])


def test_mcnemar_counts_the_discordant_pairs():
    a = np.array([1] * 10 + [0] * 2 + [1] * 5, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5, bool)
    r = mcnemar_test(a, b)
    assert (r.a_right_b_wrong, r.a_wrong_b_right, r.exact) == (10, 2, True)
    # exact binomial: P(X <= 2 | n=12, p=.5) * 2 = 2 * 79 / 4096
    assert r.p == pytest.approx(2 * 79 / 4096)
    assert mcnemar_test(a, a).p == 1.0


def test_bh_leaves_untested_groups_out():
    q, rej = bh([0.01, 0.04, np.nan, 0.03])
    assert np.isnan(q[2]) and not rej[2]
    assert q[0] == pytest.approx(0.03) and q[1] == pytest.approx(0.04) and rej.tolist() == [True, True, False, True]


def test_ece_by_hand():
    assert expected_calibration_error([1, 0, 1, 0], [0.8, 0.8, 0.8, 0.8]) == pytest.approx(0.3)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)
    assert np.isnan(expected_calibration_error([], []))
