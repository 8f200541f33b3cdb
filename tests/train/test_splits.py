"""Leak-free stratified group folds and per-epoch resampling."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lesion.data.records import Record
from lesion.errors import DataError
from lesion.train.splits import drop_duplicates, epoch_indices, prior_logit, stratified_group_folds


def test_no_group_crosses_folds_and_ratios_balanced():
    rng = np.random.default_rng(1)
    y, groups = [], []
    for g in range(120):  # 120 patients, 1-4 images, ~25 % melanoma patients
        pos = rng.random() < 0.25
        for _ in range(rng.integers(1, 5)):
            y.append(int(pos))
            groups.append(f"p{g}")
    y, groups = np.asarray(y), np.asarray(groups)
    folds = stratified_group_folds(y, groups, n_splits=5, seed=0)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    for g in np.unique(groups):
        assert len(set(folds[groups == g].tolist())) == 1, f"group {g} crosses folds"
    overall = y.mean()
    for k in range(5):
        assert abs(y[folds == k].mean() - overall) < 0.08
    with pytest.raises(DataError, match="groups"):
        stratified_group_folds([0, 1, 0], ["a", "a", "b"], n_splits=3)


def test_drop_duplicates(tmp_path: Path):
    for name, data in [("a", b"xx"), ("b", b"yy"), ("c", b"xx")]:
        (tmp_path / f"{name}.png").write_bytes(data)
    recs = [Record(id=n, image_path=tmp_path / f"{n}.png") for n in "abc"]
    kept, dropped = drop_duplicates(recs)
    assert [r.id for r in kept] == ["a", "b"] and dropped == ["c"]


def test_epoch_indices_balance_and_cap():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    groups = np.array(["a", "b", "c", "c", "c", "d", "e", "f", "g", "h"])
    idx = epoch_indices(y, groups, np.random.default_rng(0), balance=True)
    assert len(idx) == 4 and y[idx].sum() == 2  # all 2 positives + 2 of 8 negatives
    idx = epoch_indices(y, groups, np.random.default_rng(0), balance=False, max_per_group=1)
    assert len(idx) == 8 and (groups[idx] == "c").sum() == 1  # group c capped to one image
    assert len(set(idx.tolist())) == len(idx)


def test_prior_logit():
    assert prior_logit(np.array([1, 0, 0, 0, 0]))[0] == pytest.approx(math.log(0.2 / 0.8))
    np.testing.assert_allclose(prior_logit(np.array([0, 1, 1, 1]), 2), np.log([0.25, 0.75]), rtol=1e-6)
