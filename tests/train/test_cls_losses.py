"""Classification losses with answers computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from lesion.errors import ConfigError
from lesion.train.cls_losses import bce_loss, flood, focal_loss, make_loss, mask_loss, ohem_loss

LN2 = math.log(2)


def test_bce():
    assert bce_loss(torch.zeros(3, 1), torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(LN2)
    # softmax CE with 2 equal logits is also ln 2
    assert bce_loss(torch.zeros(2, 2), torch.tensor([0, 1])).item() == pytest.approx(LN2)


def test_focal_by_hand():
    # p = 0.5: (1 - p_t)^2 = 0.25; alpha 0.25 for positives, 0.75 for negatives
    pos = focal_loss(torch.zeros(1, 1), torch.ones(1)).item()
    neg = focal_loss(torch.zeros(1, 1), torch.zeros(1)).item()
    assert pos == pytest.approx(0.25 * 0.25 * LN2)
    assert neg == pytest.approx(0.75 * 0.25 * LN2)
    assert focal_loss(torch.zeros(1, 3), torch.tensor([2])).item() == pytest.approx(0.25 * (2 / 3) ** 2 * math.log(3))


def test_ohem_keeps_at_least_half():
    logits = torch.tensor([[0.0], [10.0], [-10.0], [0.0]])
    y = torch.tensor([1.0, 1.0, 1.0, 0.0])
    per = [LN2, math.log1p(math.exp(-10)), 10 + math.log1p(math.exp(-10)), LN2]
    # only one loss exceeds 0.7, but at least half the batch (2) is kept: the two hardest
    assert ohem_loss(logits, y).item() == pytest.approx((per[2] + LN2) / 2, rel=1e-5)
    # threshold 0.5: three exceed it
    assert ohem_loss(logits, y, threshold=0.5).item() == pytest.approx((per[2] + 2 * LN2) / 3, rel=1e-5)


def test_flooding_reverses_gradient_below_level():
    j = torch.tensor(0.1, requires_grad=True)
    f = flood(j, 0.3)
    assert f.item() == pytest.approx(0.5)  # |0.1 - 0.3| + 0.3
    f.backward()
    assert j.grad.item() == -1.0  # gradient ascent
    assert flood(torch.tensor(0.5), 0.3).item() == pytest.approx(0.5)  # above the level: unchanged
    loss = make_loss("bce", flood_level=1.0)
    assert loss(torch.zeros(2, 1), torch.ones(2)).item() == pytest.approx(2 - LN2)


def test_make_loss_errors_and_mask_loss():
    with pytest.raises(ConfigError, match="focal"):
        make_loss("focl")
    ml = torch.randn(2, 1, 4, 4, requires_grad=True)
    assert mask_loss(ml, torch.ones(2, 1, 4, 4), torch.tensor([False, False])).item() == 0.0
    perfect = torch.full((1, 1, 4, 4), 20.0)
    assert mask_loss(perfect, torch.ones(1, 1, 4, 4), torch.tensor([True])).item() == pytest.approx(0.0, abs=1e-4)
