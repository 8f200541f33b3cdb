"""Issue "the agreement verdict misleads": an off-lesion map scores low, a network whose errors and maps both
follow its predicted class only (as an untrained one's do) cannot "support" the claim, and ties at 0 are not a
quantile."""
from __future__ import annotations

import numpy as np

from lesion.explain.agreement import agreement_score, agreement_verdict
from lesion.review import build_review_table


def _disc(n: int, cy: int, cx: int, r: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def test_off_lesion_heatmap_scores_low():
    lesion = _disc(64, 16, 16, 8)
    off = np.exp(-(((np.mgrid[0:64, 0:64][0] - 48) ** 2 + (np.mgrid[0:64, 0:64][1] - 48) ** 2) / 30.0))  # compact
    on = np.exp(-(((np.mgrid[0:64, 0:64][0] - 16) ** 2 + (np.mgrid[0:64, 0:64][1] - 16) ** 2) / 30.0))
    bad, good = agreement_score(off, reference=lesion), agreement_score(on, reference=lesion)
    assert bad["n_components"] == 1 and bad["compactness"] == 1.0  # compact and focused, as PH2 IMD091's map
    assert bad["overlap"] < 0.05 and bad["agreement"] < 0.1  # but wholly off the lesion: low
    assert good["agreement"] > 0.6 and good["on_lesion"] == 1.0


def test_random_network_cannot_support_the_claim():
    """Errors and agreement both depend on the predicted class only: the overall AUC is high, but the control
    (right / wrong shuffled within each predicted class) reaches it too, so the verdict is not 'supports'."""
    rng = np.random.default_rng(0)
    pred = np.r_[np.zeros(150), np.ones(50)]
    wrong = np.r_[rng.random(150) < 0.1, rng.random(50) < 0.8]
    agreement = np.r_[rng.uniform(0.6, 0.9, 150), rng.uniform(0.1, 0.4, 50)]  # by class, not by error
    res = agreement_verdict(agreement, wrong, pred, n_perm=100, n_boot=200)
    assert res["auc"] > 0.7 and res["lo"] > 0.5  # the overall statistic alone would "support"
    assert res["verdict"] != "supports" and "shuffled" in res["reason"]
    assert {c["class"] for c in res["per_class"]} == {0, 1}
    assert all(c["verdict"] == "inconclusive" for c in res["per_class"])


def test_real_link_within_classes_supports():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 2, 300).astype(float)
    wrong = rng.random(300) < 0.3
    agreement = np.where(wrong, rng.uniform(0.0, 0.5, 300), rng.uniform(0.4, 1.0, 300))
    res = agreement_verdict(agreement, wrong, pred, n_perm=100, n_boot=200)
    assert res["verdict"] == "supports" and res["auc"] > res["control"]["hi"]


def test_ties_at_zero_are_not_a_quantile():
    """77 of 200 PH2 maps were empty (agreement 0): they filled the 'lowest 20%' flag. Empty maps get their own
    flag and the quantile is taken over the maps that have a region."""
    n = 200
    agreement = np.r_[np.zeros(77), np.linspace(0.2, 0.9, n - 77)]
    comps = np.r_[np.zeros(77), np.ones(n - 77)]
    import pandas as pd

    ag = pd.DataFrame({"id": [str(i) for i in range(n)], "agreement": agreement, "n_components": comps})
    t = build_review_table([str(i) for i in range(n)], np.zeros(n), np.full(n, 0.2), 0.5, ag)
    assert int(t["empty_map"].sum()) == 77
    assert not t.loc[t["empty_map"], "low_agreement"].any()
    assert 20 <= int(t["low_agreement"].sum()) <= 30  # about 20% of the 123 maps with a region
