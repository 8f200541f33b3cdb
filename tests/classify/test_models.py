"""Classifier factory, targets and preprocessing (hand-computable answers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.classify.models import (
    HAM7,
    ClsModelConfig,
    Preprocessing,
    center_crop_square,
    create_classifier,
    make_targets,
    prepare_image,
)
from lesion.data.records import Record
from lesion.errors import ConfigError, DataError


def _rec(i: int, dx: str | None, target: int | None = None) -> Record:
    return Record(id=f"r{i}", image_path=Path(f"r{i}.png"), diagnosis=dx, target=target)


def test_make_targets_by_hand():
    recs = [_rec(0, "mel"), _rec(1, "nv"), _rec(2, "bcc"), _rec(3, "melanoma"), _rec(4, "common_nevus")]
    assert make_targets(recs, "melanoma").tolist() == [1, 0, 0, 1, 0]
    assert make_targets(recs, "malignant").tolist() == [1, 0, 1, 1, 0]
    assert make_targets(recs[:3], "dx7").tolist() == [HAM7.index("mel"), HAM7.index("nv"), HAM7.index("bcc")] == [4, 5, 1]
    # Record.target wins over the diagnosis for 'malignant'
    assert make_targets([_rec(5, "nv", target=1)], "malignant").tolist() == [1]


def test_make_targets_errors():
    with pytest.raises(DataError, match="r1"):
        make_targets([_rec(0, "mel"), _rec(1, None)], "melanoma")
    with pytest.raises(DataError, match="dx7"):
        make_targets([_rec(0, "melanoma")], "dx7")  # PH2 name is not a HAM7 code
    with pytest.raises(ConfigError, match="Supported"):
        make_targets([_rec(0, "mel")], "melanom")


def test_create_classifier_heads():
    x = torch.randn(2, 3, 32, 32)
    assert create_classifier(ClsModelConfig("resnet10t", num_classes=1)).eval()(x).shape == (2, 1)
    assert create_classifier(ClsModelConfig("resnet10t", num_classes=7)).eval()(x).shape == (2, 7)


def test_unknown_arch_lists_close_timm_names():
    with pytest.raises(ConfigError, match="resnet10t"):
        create_classifier(ClsModelConfig("resnet10"))
    with pytest.raises(ConfigError, match="efficientnet_lite"):
        create_classifier(ClsModelConfig("resnet18", init="imagenet-lite-port"))


def test_lite_port_loads_backbone_not_head():
    from lesion.weights import port_efficientnet_lite

    m = create_classifier(ClsModelConfig("efficientnet_lite0", num_classes=1, init="imagenet-lite-port"))
    port = port_efficientnet_lite(0)
    assert torch.equal(m.state_dict()["conv_stem.weight"], port["conv_stem.weight"].float())
    assert m.classifier.out_features == 1  # head replaced, not the 1000-class one


def test_center_crop_and_prepare():
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, :, 0] = np.arange(6)  # column index in the red channel
    crop = center_crop_square(img)
    assert crop.shape == (4, 4, 3) and crop[0, :, 0].tolist() == [1, 2, 3, 4]
    mask = np.zeros((4, 6), bool)
    mask[:, 1] = True
    out, m = prepare_image(img, Preprocessing(size=8, center_crop=True, clahe=True), mask)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert m.shape == (8, 8) and m[:, :2].all() and not m[:, 2:].any()  # column 1 of 6 -> first quarter
