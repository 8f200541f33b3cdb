"""EMA of weights (timm ModelEmaV3 behind lesion.train.ema)."""
from __future__ import annotations

import pytest
import torch

from lesion.errors import ConfigError
from lesion.train.ema import make_ema


def test_ema_by_hand():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = make_ema(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(1.0)  # 0.5 * 0 + 0.5 * 2
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(1.5)  # 0.5 * 1 + 0.5 * 2
    assert model.weight.item() == 2.0  # the trained model is untouched


def test_ema_first_step_copies_and_bad_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model, step=1)  # timm: decay 0 at the first step
    assert ema.module.weight.item() == pytest.approx(3.0)
    with pytest.raises(ConfigError):
        make_ema(model, decay=1.0)
