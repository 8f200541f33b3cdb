"""Multi-task network: eq. 6 attention pooling, metadata as an added logit, shapes, output wrapper."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion.classify.metadata import AGE_SCALE, METADATA_DIM, SEX_VOCAB, SITE_VOCAB, encode_metadata
from lesion.classify.classifier import Classifier
from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet, attention_pool


def test_attention_pool_by_hand():
    att = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    c = torch.tensor([2.0, 4.0, 6.0, 8.0]).view(1, 1, 2, 2)
    assert attention_pool(att, c).item() == pytest.approx(3.0)  # (2 + 4) / 2
    half = torch.full((1, 1, 2, 2), 0.5)
    assert attention_pool(half, c).item() == pytest.approx(5.0)  # uniform attention = mean
    assert attention_pool(torch.zeros(1, 1, 2, 2), c).item() == 0.0  # no NaN


def test_metadata_encoding_by_hand():
    v = encode_metadata({"sex": "male", "site": "back", "age": 70})
    assert v.shape == (METADATA_DIM,) and v.sum() == pytest.approx(3.0)  # two one-hots + age 1.0
    assert v[SEX_VOCAB.index("male")] == 1
    assert v[len(SEX_VOCAB) + SITE_VOCAB.index("back")] == 1
    assert v[-2] == pytest.approx((70 - 50) / AGE_SCALE) and v[-1] == 0
    u = encode_metadata({"sex": None, "site": "moon", "age": float("nan")})
    assert u[SEX_VOCAB.index("unknown")] == 1 and u[len(SEX_VOCAB) + SITE_VOCAB.index("unknown")] == 1
    assert u[-2] == 0 and u[-1] == 1
    assert np.array_equal(u, encode_metadata({}))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return MultiTaskNet(MultiTaskConfig(arch="resnet10t", num_classes=2, size=64)).eval()


def test_shapes_and_eq6(net):
    x = torch.randn(2, 3, 64, 64)
    meta = torch.from_numpy(np.stack([encode_metadata({"sex": "female", "age": 30}), encode_metadata({})]))
    out = net(x, meta)
    assert out["logits"].shape == (2, 2)
    assert out["mask_logits"].shape == (2, 1, 64, 64)
    assert out["attention"].shape == (2, 1, 2, 2)  # 64 / 32
    with torch.no_grad():  # recompute eqs. 1-6 step by step
        f = net.encoder(x)[-1]
        a = torch.nn.functional.adaptive_avg_pool2d(torch.sigmoid(net.decoder(f)), f.shape[-2:])
        c = net.classifier(f)
        expect = (a * c).sum((2, 3)) / a.sum((2, 3)) + net.meta_head(net.meta_encoder(meta))
    torch.testing.assert_close(out["logits"], expect)
    torch.testing.assert_close(out["attention"], a)


def test_metadata_is_an_added_logit(net):
    x = torch.randn(1, 3, 64, 64)
    m1 = torch.from_numpy(encode_metadata({"sex": "male", "age": 80}))[None]
    m2 = torch.from_numpy(encode_metadata({}))[None]
    with torch.no_grad():
        diff = net(x, m1)["logits"] - net(x, m2)["logits"]
        expect = net.meta_head(net.meta_encoder(m1)) - net.meta_head(net.meta_encoder(m2))
    torch.testing.assert_close(diff, expect)
    # None means "all unknown"
    torch.testing.assert_close(net(x)["logits"], net(x, m2)["logits"])


def test_without_metadata_and_wrapper():
    torch.manual_seed(0)
    net = MultiTaskNet(MultiTaskConfig(arch="resnet10t", num_classes=1, size=64, use_metadata=False)).eval()
    assert not hasattr(net, "meta_encoder")
    x = torch.randn(3, 3, 64, 64)
    clf = Classifier(net).eval()
    out = clf(x)
    assert out.logits.shape == (3, 1) and out.mask_logits.shape == (3, 1, 64, 64)
    torch.testing.assert_close(out.logits, net(x)["logits"])
    logits = clf.logits_module()(x)
    assert isinstance(logits, torch.Tensor)
    torch.testing.assert_close(logits, net(x)["logits"])


def test_lite_port_initialises_the_shared_encoder():
    from lesion.weights import port_efficientnet_lite

    net = MultiTaskNet(MultiTaskConfig(arch="efficientnet_lite0", init="imagenet-lite-port", size=64))
    port = port_efficientnet_lite(0)
    key = "blocks.6.0.conv_pwl.weight"  # last stage: the features the classifier and decoder read
    assert torch.equal(net.encoder.state_dict()[key], port[key].float())
