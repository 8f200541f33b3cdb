"""Device choice and description."""
from __future__ import annotations

import pytest

from lesion.device import describe_device, describe_device_quick, nvidia_driver_present, pick_device
from lesion.errors import ConfigError


def test_pick_device_auto_and_errors():
    import torch

    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu" and pick_device(torch.device("cpu")) == "cpu"
    assert pick_device(None) == pick_device("auto")
    with pytest.raises(ConfigError, match="Supported: auto, cpu, cuda"):
        pick_device("tpu")
    with pytest.raises(ConfigError):
        pick_device("cpu:1")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="none is available"):
            pick_device("cuda:0")


def test_segmentation_models_use_the_same_rule():
    import torch

    from lesion.segment.models import torch_device

    assert torch_device("auto") == torch.device(pick_device("auto"))
    assert torch_device(torch.device("cpu")) == torch.device("cpu")


def test_quick_description_agrees_with_torch():
    import torch

    quick = describe_device_quick()
    if torch.cuda.is_available():
        assert quick.startswith("CUDA GPU") and quick == describe_device()
    else:
        assert quick.startswith("CPU")
    if not nvidia_driver_present():
        assert not torch.cuda.is_available()
