"""TTA parsed once into a value: counts, order, what each view is, non-square batches."""
from __future__ import annotations

import pytest
import torch

from lesion.errors import ConfigError
from lesion.infer.tta import DEFAULT_TTA, TTA, TTA_NAMES, check_tta, n_views, parse_tta


def test_view_counts_and_the_one_default():
    assert [n_views(n) for n in TTA_NAMES] == [1, 2, 2, 4, 8]
    assert DEFAULT_TTA == "d4"


def test_parsed_once_and_reused():
    a, b = parse_tta("d4"), parse_tta("d4")
    assert a is b and isinstance(a, TTA) and a.views == 8
    assert parse_tta(a) is a  # a parsed value passes through
    assert a.transforms is b.transforms  # the ttach transforms are built once per process


def test_views_are_the_dihedral_group():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = parse_tta("d4").augment(x)
    assert len(views) == 8 and all(v.shape == (1, 1, 4, 4) for v in views)
    assert torch.equal(views[0], x)  # identity first
    as_tuples = {tuple(v.flatten().tolist()) for v in views}
    assert len(as_tuples) == 8  # 8 distinct images
    expected = {x.flip(-1), x.transpose(-1, -2), x.flip(-2), torch.rot90(x, 1, (2, 3))}
    for e in expected:  # hflip, transpose, vflip and a rotation are all in d4
        assert tuple(e.flatten().tolist()) in as_tuples
    hf = parse_tta("hflip").augment(x)
    assert torch.equal(hf[1], x.flip(-1))


def test_non_square_batches_keep_their_pixels():
    x = torch.randn(2, 3, 4, 6)
    views = parse_tta("d4").augment(x)
    shapes = sorted({tuple(v.shape) for v in views})
    assert shapes == [(2, 3, 4, 6), (2, 3, 6, 4)]  # rotations by 90° transpose the frame
    assert all(sorted(v.flatten().tolist()) == sorted(x.flatten().tolist()) for v in views)


def test_unknown_tta():
    with pytest.raises(ConfigError, match="d4"):
        n_views("d8")
    with pytest.raises(ConfigError, match="flips"):
        check_tta("flip")
