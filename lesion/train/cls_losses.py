"""Classification losses of seed 003: BCE, focal, OHEM, flooding; plus the optional mask loss.

Every loss takes ``logits [B, K]`` and targets: float 0/1 ``[B]`` (or ``[B, 1]``) when ``K == 1`` (sigmoid
losses), int64 class indices ``[B]`` when ``K > 1`` (softmax losses). Build one by name with
:func:`make_loss` (unknown names list the options).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from lesion.errors import ConfigError, unknown_option

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _binary(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logits.reshape(-1), target.reshape(-1).to(logits.dtype)


def per_sample_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``[B]``: BCE-with-logits when ``K == 1``, softmax CE otherwise."""
    if logits.shape[-1] == 1:
        x, y = _binary(logits, target)
        return F.binary_cross_entropy_with_logits(x, y, reduction="none")
    return F.cross_entropy(logits, target.long(), reduction="none")


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean (binary) cross-entropy."""
    return per_sample_ce(logits, target).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss ``FL = -α_t (1 - p_t)^γ log p_t`` (seed 003 eq. 7, Lin et al. 2017), mean over the batch.

    Binary: :func:`torchvision.ops.sigmoid_focal_loss` (α weighs positives, 1-α negatives; α < 0 disables).
    Multi-class: the same formula on the softmax probability of the true class, with a single α
    (torchvision has no softmax focal loss).
    """
    if logits.shape[-1] == 1:
        from torchvision.ops import sigmoid_focal_loss

        x, y = _binary(logits, target)
        return sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="mean")
    logp = F.log_softmax(logits, dim=-1).gather(1, target.long().view(-1, 1)).squeeze(1)
    a = 1.0 if alpha < 0 else alpha
    return (-a * (1 - logp.exp()) ** gamma * logp).mean()


def ohem_loss(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7, min_keep: float = 0.5) -> torch.Tensor:
    """Online hard example mining (seed 003): mean CE over the samples whose loss exceeds ``threshold``,
    but never fewer than the hardest ``ceil(min_keep * B)`` samples (the paper keeps at least half a batch).

    ``threshold=0.7`` nats is the BCE of a positive predicted at p ≈ 0.5.
    """
    losses = per_sample_ce(logits, target)
    n = losses.numel()
    k = max(int((losses > threshold).sum()), math.ceil(min_keep * n), 1)
    return torch.topk(losses, min(k, n)).values.mean()


def flood(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al. 2020, seed 003 eq. 8): ``|J - b| + b``; gradient ascent once ``J < b``."""
    if level <= 0:
        return loss
    return (loss - level).abs() + level


#: name -> loss function ``(logits, target) -> scalar``.
LOSSES: dict[str, LossFn] = {"bce": bce_loss, "focal": focal_loss, "ohem": ohem_loss}


def make_loss(name: str, flood_level: float = 0.0, **kwargs) -> LossFn:
    """Loss by name (``bce``, ``focal``, ``ohem``), optionally wrapped in flooding at ``flood_level``.

    Raises:
        ConfigError: unknown name or negative flood level.
    """
    if name not in LOSSES:
        raise unknown_option("loss", name, tuple(LOSSES))
    if flood_level < 0:
        raise ConfigError(f"Flood level must be >= 0, got {flood_level}.")
    base = LOSSES[name]

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return flood(base(logits, target, **kwargs), flood_level)

    loss_fn.__name__ = f"{name}{f'+flood{flood_level}' if flood_level else ''}"
    return loss_fn


def mask_loss(mask_logits: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on the images that have a mask truth; 0 when none in the batch has one.

    Args:
        mask_logits: ``[B, 1, H, W]`` before sigmoid.
        masks: ``[B, 1, H, W]`` or ``[B, H, W]``, 0/1 (ignored where ``has_mask`` is False).
        has_mask: bool ``[B]``.
    """
    sel = has_mask.bool()
    if not bool(sel.any()):
        return mask_logits.sum() * 0.0  # keeps the graph (DDP-style) without adding a gradient
    from segmentation_models_pytorch.losses import DiceLoss

    x = mask_logits[sel]
    y = masks[sel].reshape(x.shape).to(x.dtype)
    return F.binary_cross_entropy_with_logits(x, y) + DiceLoss(mode="binary", from_logits=True)(x, y)
