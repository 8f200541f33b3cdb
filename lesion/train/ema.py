"""Exponential moving average of weights (seed 003: "EMA for weights of the CNN", Tarvainen & Valpola).

A thin front door over :class:`timm.utils.ModelEmaV3` (library first): after every optimiser step
``ema = decay * ema + (1 - decay) * weights`` (buffers such as BN statistics are copied the same way).
With ``warmup=True`` the decay ramps up as ``1 - (1 + step)^(-2/3)`` so the early average is not dominated
by the random initialisation.
"""
from __future__ import annotations

import torch

from lesion.errors import ConfigError


def make_ema(model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
    """Create the EMA copy of ``model`` (a deep copy held in ``.module``).

    Args:
        model: the model being trained.
        decay: the target decay in [0, 1); 0.999 averages over about the last 1000 steps.
        warmup: ramp the decay up from 0 (timm ``use_warmup``) when updates pass ``step``.

    Returns:
        ``timm.utils.ModelEmaV3``; call ``ema.update(model, step=step)`` after each optimiser step and
        evaluate / save ``ema.module``.
    """
    from timm.utils import ModelEmaV3

    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"EMA decay must be in [0, 1), got {decay}.")
    return ModelEmaV3(model, decay=decay, use_warmup=warmup)
