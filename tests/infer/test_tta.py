"""TTA views from ttach: counts, order, and what each view is."""
from __future__ import annotations

import pytest
import torch

from lesion.errors import ConfigError
from lesion.infer.tta import TTA_NAMES, augment_views, n_views, view_list


def test_view_counts():
    assert [n_views(n) for n in TTA_NAMES] == [1, 2, 2, 4, 8]


def test_views_are_the_dihedral_group():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = augment_views(x, "d4")
    assert views.shape == (8, 1, 4, 4)
    assert torch.equal(views[0], x[0])  # identity first
    as_tuples = {tuple(v.flatten().tolist()) for v in views}
    assert len(as_tuples) == 8  # 8 distinct images
    expected = {x.flip(-1), x.transpose(-1, -2), x.flip(-2), torch.rot90(x, 1, (2, 3))}
    for e in expected:  # hflip, transpose, vflip and a rotation are all in d4
        assert tuple(e.flatten().tolist()) in as_tuples
    hf = augment_views(x, "hflip")
    assert torch.equal(hf[1], x.flip(-1)[0])


def test_batched_views_match_one_by_one():
    x = torch.randn(3, 2, 4, 4)
    stacked = augment_views(x, "flips")
    one = torch.cat(view_list(x, "flips"))
    assert torch.equal(stacked, one) and stacked.shape[0] == 12


def test_unknown_tta():
    with pytest.raises(ConfigError, match="d4"):
        n_views("d8")
