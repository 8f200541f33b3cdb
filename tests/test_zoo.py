"""The one front door (lesion.zoo.load_model) and the one forward contract every classifier answers."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from lesion.card import ModelCard, Preprocessing
from lesion.classify.classifier import Classifier, ClassifierOutput, create_model
from lesion.classify.models import ClsModelConfig
from lesion.classify.multitask import MultiTaskConfig
from lesion.errors import CheckpointError
from lesion.weights import list_weights, save_checkpoint
from lesion.zoo import BUILDERS, load_model, load_segmenter, read_model_card


def _save(tmp_path, cfg, task: str, name: str = "m") -> tuple[Classifier, ModelCard]:
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    card = ModelCard(name=name, task=task, classes=("melanoma",), model=asdict(cfg),
                     preprocessing=Preprocessing(size=cfg.size))
    save_checkpoint(model, tmp_path / name, card)
    return model, card


def test_every_card_task_has_a_builder():
    from lesion.card import TASKS

    assert set(BUILDERS) == set(TASKS)


@pytest.mark.parametrize("kind", ["classification", "multitask"])
def test_saved_classifier_reloads_with_the_same_outputs(tmp_path, kind):
    cfg = (ClsModelConfig("resnet10t", num_classes=1, size=32) if kind == "classification"
           else MultiTaskConfig(arch="resnet10t", num_classes=1, size=32))
    model, _ = _save(tmp_path, cfg, kind)
    # the checkpoint holds the network's own keys (timm-loadable), not the wrapper's
    assert set(model.state_dict()) == set(model.net.state_dict())
    loaded, card = load_model(tmp_path / "m")
    assert isinstance(loaded, Classifier) and not loaded.training and card.task == kind
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert isinstance(b, ClassifierOutput) and b.logits.shape == (2, 1)
    assert torch.allclose(a.logits, b.logits, atol=5e-2)  # fp16 storage
    assert (b.mask_logits is not None) == (kind == "multitask") == loaded.has_mask
    if kind == "multitask":
        assert b.mask_logits.shape == (2, 1, 32, 32) and loaded.uses_metadata and loaded.meta_dim > 0


def test_metadata_changes_only_metadata_models(tmp_path):
    torch.manual_seed(0)
    mt = create_model(MultiTaskConfig(arch="resnet10t", size=32)).eval()
    with torch.no_grad():
        mt.net.meta_head.weight.normal_(0, 1.0)
    plain = create_model(ClsModelConfig("resnet10t", num_classes=1, size=32)).eval()
    x = torch.randn(2, 3, 32, 32)
    meta = torch.randn(mt.meta_dim)
    with torch.no_grad():
        assert not torch.allclose(mt(x).logits, mt(x, meta).logits)  # one vector is broadcast to the batch
        assert torch.equal(plain(x).logits, plain(x, meta).logits)  # a model without metadata ignores it
        assert torch.equal(mt.logits_module(meta)(x), mt(x, meta).logits)


def test_state_dict_hooks_hold_when_the_classifier_is_nested():
    torch.manual_seed(0)
    clf = create_model(ClsModelConfig("resnet10t", num_classes=1, size=32))
    outer = nn.Sequential(clf)
    keys = set(outer.state_dict())
    assert all(k.startswith("0.") and ".net." not in k for k in keys)
    fresh = nn.Sequential(create_model(ClsModelConfig("resnet10t", num_classes=1, size=32)))
    fresh.load_state_dict(outer.state_dict())  # strict: the prefixes match both ways
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x).logits, outer.eval()(x).logits)


def test_task_is_checked_on_the_card_before_the_weights_are_read(tmp_path):
    _save(tmp_path, ClsModelConfig("resnet10t", num_classes=1, size=32), "classification")
    (tmp_path / "m.safetensors").write_bytes(b"\xff" * 64)  # unreadable weights
    with pytest.raises(CheckpointError, match="is a classification model; this needs segmentation"):
        load_model(tmp_path / "m", task="segmentation")
    with pytest.raises(CheckpointError, match="do not match their card's sha256"):
        load_model(tmp_path / "m", task=("classification", "multitask"))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):  # not verified: read, and refused there
        load_model(tmp_path / "m", task=("classification", "multitask"), verify=False)
    assert read_model_card(tmp_path / "m").task == "classification"


def test_shipped_models_load_by_name_and_answer_their_contract():
    cards = list_weights()
    assert {c.task for c in cards} == {"segmentation", "classification", "multitask"}
    for card in cards:
        model, loaded_card = load_model(card.name)
        assert loaded_card == card
        p = card.preprocessing
        x = torch.zeros(1, p.channels, p.size, p.size)
        with torch.no_grad():
            out = model(x)
        if card.task == "segmentation":
            assert out.shape == (1, 1, p.size, p.size)
        else:
            assert isinstance(out, ClassifierOutput) and out.logits.shape == (1, len(card.classes))
            assert model.has_mask == (card.task == "multitask")


def test_load_segmenter_gives_an_image_callable():
    import numpy as np

    seg = load_segmenter("lung_unet_efficientnet_lite0", device="cpu")
    prob = seg(np.zeros((40, 50, 3), np.uint8))
    assert prob.shape == (40, 50) and 0.0 <= prob.min() <= prob.max() <= 1.0
