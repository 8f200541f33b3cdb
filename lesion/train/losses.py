"""Segmentation losses by name (registry whose errors list the options).

Binary segmentation on logits ``[B, 1, H, W]`` against float targets ``[B, 1, H, W]`` in {0, 1}. The
overlap losses are smp's (``DiceLoss``/``JaccardLoss`` in ``binary`` mode with ``from_logits=True``);
BCE is torch's ``BCEWithLogitsLoss``. Combinations are plain sums with weight 1 each (seed 004 used
BCE + Jaccard: BCE gives smooth gradients early, the Jaccard term optimises the reported metric).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lesion.errors import unknown_option


class SumLoss(nn.Module):
    """Sum of several losses, each called as ``loss(logits, target)``."""

    def __init__(self, *losses: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.parts)


def _bce() -> nn.Module:
    return nn.BCEWithLogitsLoss()


def _dice() -> nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="binary", from_logits=True)


def _jaccard() -> nn.Module:
    from segmentation_models_pytorch.losses import JaccardLoss

    return JaccardLoss(mode="binary", from_logits=True)


#: loss name -> factory of an ``nn.Module`` called as ``loss(logits [B,1,H,W], target [B,1,H,W])``.
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": _bce,
    "dice": _dice,
    "jaccard": _jaccard,
    "bce_dice": lambda: SumLoss(_bce(), _dice()),
    "bce_jaccard": lambda: SumLoss(_bce(), _jaccard()),
    "bce_jaccard_dice": lambda: SumLoss(_bce(), _jaccard(), _dice()),
}


def make_loss(name: str) -> nn.Module:
    """The loss module called ``name``.

    Raises:
        ConfigError: unknown name (lists :data:`LOSSES`).
    """
    if name not in LOSSES:
        raise unknown_option("loss", name, list(LOSSES))
    return LOSSES[name]()
