"""Attention agreement on hand-made heatmaps, and the wrongness AUC on synthetic scores."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import DataError
from lesion.explain.agreement import agreement_score, n_components, spread, wrongness_auc

N = 64


def _blob(cy, cx, r=6, n=N):
    y, x = np.mgrid[0:n, 0:n]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * r * r))


def test_spread_by_hand():
    point = np.zeros((N, N))
    point[5, 7] = 1.0
    assert spread(point) == 0.0
    # Uniform heat: variance (N²-1)/12 per axis vs the N²/12 normaliser -> sqrt(1 - 1/N²).
    assert spread(np.ones((N, N))) == pytest.approx(np.sqrt(1 - 1 / N**2))
    assert np.isnan(spread(np.zeros((4, 4))))


def test_components():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = m[6:9, 6:9] = True
    assert n_components(m) == 2


def test_compact_blob_on_lesion_beats_scattered_blobs_off_it():
    lesion = _blob(32, 32, r=8) > 0.3
    good = _blob(32, 32)
    bad = _blob(6, 6) + _blob(6, 57) + _blob(57, 6) + _blob(57, 57)
    g = agreement_score(good, attention=good, reference=lesion)
    b = agreement_score(bad, attention=_blob(32, 32), reference=lesion)
    assert g["n_components"] == 1 and b["n_components"] == 4
    assert g["compactness"] == 1.0 and b["compactness"] == 0.25
    assert g["overlap"] > 0.85 and b["overlap"] < 0.05
    assert g["cam_attention_iou"] == 1.0 and b["cam_attention_iou"] == 0.0
    assert g["agreement"] > 0.8 > 0.3 > b["agreement"]
    # The formula: the plain mean of the available parts.
    assert g["agreement"] == pytest.approx(np.mean([g["compactness"], g["focus"], g["overlap"],
                                                    g["cam_attention_iou"]]))
    only = agreement_score(good)
    assert np.isnan(only["overlap"]) and np.isnan(only["cam_attention_iou"])
    assert only["agreement"] == pytest.approx((only["compactness"] + only["focus"]) / 2)


def test_wrongness_auc():
    # Wrong cases have the lowest agreement -> AUC 1; reversed -> 0; one swap in 2x2 pairs -> 0.75.
    a = np.array([0.1, 0.2, 0.8, 0.9])
    assert wrongness_auc(a, [1, 1, 0, 0], n_boot=0)[0] == 1.0
    assert wrongness_auc(a, [0, 0, 1, 1], n_boot=0)[0] == 0.0
    assert wrongness_auc(np.array([0.1, 0.85, 0.8, 0.9]), [1, 1, 0, 0], n_boot=0)[0] == 0.75
    auc, lo, hi = wrongness_auc(a, [1, 1, 0, 0], n_boot=200)
    assert lo <= auc <= hi
    with pytest.raises(DataError):
        wrongness_auc(a, [0, 0, 0, 0])
