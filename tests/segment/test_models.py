"""smp model factory, strict checkpoint loading and the segmenter callable (tiny random models, 64 px)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lesion.errors import CheckpointError, ConfigError, LesionError
from lesion.segment.models import (
    ARCHS,
    MAX_SIDE_FACTOR,
    SegModelConfig,
    SegModelSegmenter,
    cfg_from_card,
    cfg_to_card,
    create_seg_model,
    predict_batch,
)
from lesion.card import ModelCard
from lesion.weights import save_checkpoint
from lesion.zoo import load_model, load_segmenter


def load_seg_model(path, device=None, cfg=None):
    return load_model(path, device=device, task="segmentation", seg_config=cfg)

TINY = dict(encoder="resnet18", encoder_depth=3, init="random", size=64)


def _save(tmp_path, cfg: SegModelConfig, name: str = "tiny"):
    torch.manual_seed(0)
    model = create_seg_model(cfg).eval()
    save_checkpoint(model, tmp_path / name, ModelCard(name=name, task="segmentation", domain="derm", **cfg_to_card(cfg)))
    return model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_maps_64px_to_64px_logits(arch):
    model = create_seg_model(SegModelConfig(arch=arch, **TINY)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert torch.isfinite(out).all()
    assert model.init_report["init"] == "random"


def test_lite_encoder_gets_the_imagenet_port():
    model = create_seg_model(SegModelConfig(arch="linknet", encoder="tu-efficientnet_lite0", size=64))
    assert model.init_report["init"] == "imagenet-lite-port"
    assert model.init_report["loaded"] > 200


def test_unknown_arch_and_encoder_list_the_options():
    with pytest.raises(ConfigError, match="Did you mean 'unet'.*Supported: .*linknet"):
        create_seg_model(SegModelConfig(arch="unett", **TINY))
    with pytest.raises(ConfigError, match="Unknown encoder 'resnet19'.*resnet18"):
        create_seg_model(SegModelConfig(encoder="resnet19", encoder_depth=3, init="random"))
    with pytest.raises(ConfigError, match="tu-"):
        create_seg_model(SegModelConfig(encoder="tu-no_such_model", init="random"))


def test_card_roundtrip_rebuilds_the_config():
    cfg = SegModelConfig(arch="unet_scse", encoder="resnet18", encoder_depth=3, size=96, init="random",
                         mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    card = ModelCard(name="x", task="segmentation", **cfg_to_card(cfg))
    card = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))  # through JSON, as on disk
    assert cfg_from_card(card) == cfg
    with pytest.raises(CheckpointError, match="must give arch, encoder and preprocessing.size"):
        cfg_from_card(ModelCard(name="x", task="segmentation", arch="unet"))


def test_reload_is_strict_and_predicts_the_same(tmp_path):
    cfg = SegModelConfig(arch="unet", **TINY)
    model = _save(tmp_path, cfg)
    loaded, card = load_seg_model(tmp_path / "tiny", device="cpu")
    assert not loaded.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # fp16 storage: relative error ~1e-3 per weight, a few 1e-3 on the logits of a random net.
        assert torch.allclose(torch.sigmoid(model(x)), torch.sigmoid(loaded(x)), atol=1e-2)
    assert card.arch == "unet"


def test_checkpoint_that_does_not_match_its_card_is_a_checkpoint_error(tmp_path):
    _save(tmp_path, SegModelConfig(arch="unet", **TINY))
    card = json.loads((tmp_path / "tiny.json").read_text())
    card["model"]["arch"] = card["arch"] = "linknet"  # the card now lies about the architecture
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="missing keys.*unexpected keys"):
        load_seg_model(tmp_path / "tiny")
    card["model"]["arch"] = card["arch"] = "unet"
    card["model"]["decoder_channels"] = [32, 16, 8]  # right keys, wrong widths
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape mismatches: decoder"):
        load_seg_model(tmp_path / "tiny")


def test_user_pth_with_explicit_config(tmp_path):
    cfg = SegModelConfig(arch="linknet", **TINY)
    torch.manual_seed(1)
    model = create_seg_model(cfg)
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    loaded, card = load_seg_model(tmp_path / "mine.pth", cfg=cfg)
    assert card.name == "mine" and card.preprocessing.size == 64
    with pytest.raises(CheckpointError, match="has no card"):
        load_seg_model(tmp_path / "mine.pth")


def test_segmenter_output_shape_range_and_batching(tmp_path):
    _save(tmp_path, SegModelConfig(arch="linknet", **TINY))
    seg = load_segmenter(tmp_path / "tiny.safetensors", device="cpu")
    assert isinstance(seg, SegModelSegmenter)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (100, 80), dtype=np.uint8)  # grey: replicated to RGB
    pa, pb = seg(a), seg(b)
    assert pa.shape == (50, 70) and pb.shape == (100, 80)
    assert pa.dtype == np.float32 and 0.0 <= pa.min() and pa.max() <= 1.0
    many = seg.predict_many([a, b], batch_size=2)
    assert np.allclose(many[0], pa, atol=1e-5) and np.allclose(many[1], pb, atol=1e-5)
    assert seg.mask(a).dtype == bool
    assert len(predict_batch(seg.model, [a, a, a], seg.card, batch_size=2)) == 3


def test_segmenter_refuses_huge_images_before_any_work(tmp_path):
    _save(tmp_path, SegModelConfig(arch="linknet", **TINY))
    seg = load_segmenter(tmp_path / "tiny", device="cpu")
    too_long = np.zeros((10, MAX_SIDE_FACTOR * 64 + 1, 3), np.uint8)  # 513 px > 8 x 64
    with pytest.raises(LesionError, match="Downscale or crop it first"):
        seg(too_long)
    ok = np.zeros((10, MAX_SIDE_FACTOR * 64, 3), np.uint8)
    assert seg(ok).shape == (10, MAX_SIDE_FACTOR * 64)


def test_classification_card_is_refused(tmp_path):
    cfg = SegModelConfig(arch="unet", **TINY)
    save_checkpoint(create_seg_model(cfg), tmp_path / "cls", ModelCard(name="cls", task="classification",
                                                                       **cfg_to_card(cfg)))
    with pytest.raises(CheckpointError, match="is a classification model; this needs segmentation"):
        load_seg_model(tmp_path / "cls")
