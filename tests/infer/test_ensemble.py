"""Merge modes and member choice with hand-computed answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesion.errors import ConfigError
from lesion.infer.ensemble import correlation_matrix, merge_logits, merge_members, suggest_members


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_merge_modes_by_hand():
    z = np.array([[[0.0]], [[2.0]]])  # V = 2 views of N = 1 image, K = 1
    assert merge_logits(z, "mean_logit")[0, 0] == pytest.approx(sig(1.0))  # 0.7311
    assert merge_logits(z, "mean_prob")[0, 0] == pytest.approx((0.5 + sig(2.0)) / 2)  # 0.6904
    assert merge_logits(z, "log_mean")[0, 0] == pytest.approx(math.sqrt(0.5 * sig(2.0)))  # 0.6636
    # rank over N = 3 images: view 1 orders them a<b<c, view 2 b<a<c
    zr = np.array([[[0.0], [1.0], [2.0]], [[1.0], [0.0], [2.0]]])
    np.testing.assert_allclose(merge_logits(zr, "rank")[:, 0], [1.5 / 3, 1.5 / 3, 1.0])
    with pytest.raises(ConfigError, match="mean_prob"):
        merge_logits(z, "median")


def test_softmax_log_mean_sums_to_one_and_members_roundtrip():
    z = np.random.default_rng(0).normal(size=(3, 4, 5))
    for mode in ("mean_logit", "mean_prob", "log_mean"):
        np.testing.assert_allclose(merge_logits(z, mode).sum(-1), 1.0, rtol=1e-9)
    # members TTA-merged by mean_logit, then merged by mean_logit == mean_logit over everything
    m = [merge_logits(z[:, :, :1], "mean_logit"), merge_logits(z[:, :, 1:2] * 0 + z[:, :, :1] + 1, "mean_logit")]
    both = np.concatenate([z[:, :, :1], z[:, :, :1] + 1])
    np.testing.assert_allclose(merge_members(m, "mean_logit"), merge_logits(both, "mean_logit"), rtol=1e-6)


def test_suggest_members_prefers_uncorrelated():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50), np.zeros(50)]
    signal = y + rng.normal(0, 0.8, 100)
    a = 1 / (1 + np.exp(-signal))
    a_copy = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.01, 100))))  # same model, different seed noise
    b = 1 / (1 + np.exp(-(y + rng.normal(0, 1.0, 100))))  # independent errors, a bit worse
    picked = suggest_members({"a": a, "a_copy": a_copy, "b": b}, y, k=2)
    assert picked[0] in ("a", "a_copy") and picked[1] == "b"
    c = correlation_matrix({"a": a[:, None], "a_copy": a_copy[:, None], "b": b[:, None]})
    assert c.loc["a", "a_copy"] > 0.99 and c.loc["a", "b"] < 0.9
    assert c.loc["b", "b"] == pytest.approx(1.0)
