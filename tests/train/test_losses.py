"""Loss registry: hand-computed values on 2x2 masks."""
from __future__ import annotations

import math

import pytest
import torch

from lesion.errors import ConfigError
from lesion.train.losses import LOSSES, make_loss

TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # [1, 1, 2, 2], two foreground pixels
HALF = torch.zeros(1, 1, 2, 2)  # logits 0 -> p = 0.5 everywhere
PERFECT = (TARGET * 2 - 1) * 30  # logits +-30 -> p = 1 on foreground, 0 on background


def test_perfect_prediction_gives_zero_overlap_loss():
    for name in ("dice", "jaccard", "bce", "bce_jaccard", "bce_jaccard_dice"):
        assert float(make_loss(name)(PERFECT, TARGET)) == pytest.approx(0.0, abs=1e-6), name


def test_half_probability_by_hand():
    # p = 0.5: intersection = 0.5 + 0.5 = 1, sum(p) = 2, sum(t) = 2.
    # Dice = 2*1 / (2 + 2) = 0.5 -> loss 0.5; Jaccard = 1 / (4 - 1) = 1/3 -> loss 2/3; BCE = ln 2.
    assert float(make_loss("dice")(HALF, TARGET)) == pytest.approx(0.5, abs=1e-5)
    assert float(make_loss("jaccard")(HALF, TARGET)) == pytest.approx(2 / 3, abs=1e-5)
    assert float(make_loss("bce")(HALF, TARGET)) == pytest.approx(math.log(2), abs=1e-6)
    assert float(make_loss("bce_jaccard")(HALF, TARGET)) == pytest.approx(math.log(2) + 2 / 3, abs=1e-5)
    assert float(make_loss("bce_jaccard_dice")(HALF, TARGET)) == pytest.approx(math.log(2) + 2 / 3 + 0.5, abs=1e-5)


def test_bce_matches_the_torch_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=g)
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target)
    assert float(make_loss("bce")(logits, target)) == pytest.approx(float(ref), rel=1e-5)


def test_completely_wrong_prediction_gives_dice_loss_one():
    assert float(make_loss("dice")(-PERFECT, TARGET)) == pytest.approx(1.0, abs=1e-5)


def test_losses_are_differentiable():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    make_loss("bce_jaccard")(logits, TARGET).backward()
    # raising the logit of a foreground pixel lowers the loss, of a background pixel raises it
    assert logits.grad[0, 0, 0, 0] < 0 < logits.grad[0, 0, 1, 0]


def test_unknown_loss_lists_the_options():
    with pytest.raises(ConfigError, match="Did you mean 'dice'.*bce_jaccard"):
        make_loss("dise")
    assert {"bce", "dice", "jaccard", "bce_jaccard", "bce_jaccard_dice"} <= set(LOSSES)
