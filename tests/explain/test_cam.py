"""CAM methods on a tiny CNN trained here to find a bright square: the heat must sit on the square."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")
from torch import nn  # noqa: E402

from lesion.errors import ConfigError  # noqa: E402
from lesion.explain.cam import METHODS, BinaryLogitTarget, compute_cams, find_target_layer  # noqa: E402

SIZE, SQ = 32, 8


def _batch(rng: np.random.Generator, n: int):
    """Half the images hold a bright 8x8 square at a random place (label 1), half only noise (label 0)."""
    x = rng.normal(0, 0.3, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    y = np.zeros(n, np.float32)
    boxes = []
    for i in range(n):
        if i % 2 == 0:
            r, c = rng.integers(0, SIZE - SQ, size=2)
            x[i, :, r:r + SQ, c:c + SQ] += 2.0
            y[i] = 1
            boxes.append((r, c))
        else:
            boxes.append(None)
    return torch.from_numpy(x), torch.from_numpy(y), boxes


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1),
    )
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        x, y, _ = _batch(rng, 32)
        loss = nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y, boxes = _batch(np.random.default_rng(1), 8)
    with torch.no_grad():
        acc = float(((net(x)[:, 0] > 0).float() == y).float().mean())
    assert acc == 1.0  # the task is easy; if this fails the CAM checks below mean nothing
    return net, x, boxes


def test_generic_target_layer_is_last_spatial_conv(trained):
    net, _, _ = trained
    assert find_target_layer(net, SIZE) is net[3]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"])
def test_heat_on_the_square(trained, method):
    net, x, boxes = trained
    pos = [i for i, b in enumerate(boxes) if b is not None]
    heat = compute_cams(net, x[pos], 1, [method])[method]  # the whole batch in one call
    assert heat.shape == (len(pos), SIZE, SIZE)
    assert heat.min() >= 0 and heat.max() <= 1
    for k, i in enumerate(pos):
        r, c = boxes[i]
        inside = np.zeros((SIZE, SIZE), bool)
        inside[r:r + SQ, c:c + SQ] = True
        assert heat[k][inside].mean() > 2 * heat[k][~inside].mean(), (method, k)


def test_binary_target_signs():
    z = torch.tensor([[2.5], [-1.0]])
    assert torch.equal(BinaryLogitTarget(1)(z), torch.tensor([2.5, -1.0]))
    assert torch.equal(BinaryLogitTarget(0)(z), torch.tensor([-2.5, 1.0]))
    with pytest.raises(ConfigError):
        BinaryLogitTarget(2)


def test_unknown_method_lists_options(trained):
    net, x, _ = trained
    with pytest.raises(ConfigError, match="gradcam"):
        compute_cams(net, x[:1], 1, ["gradcamm"])
    assert set(METHODS) >= {"gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "scorecam", "hirescam"}


def test_multitask_and_timm_layers():
    from lesion.classify.models import ClsModelConfig, create_classifier
    from lesion.classify.classifier import Classifier
    from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet

    res = create_classifier(ClsModelConfig("resnet10t", num_classes=3, size=64))
    assert find_target_layer(res) is res.layer4
    mt = MultiTaskNet(MultiTaskConfig(arch="resnet10t", size=64)).eval()
    assert find_target_layer(Classifier(mt)) is mt.encoder.layer4
    assert find_target_layer(Classifier(mt).logits_module()) is mt.encoder.layer4
    heat = compute_cams(mt, torch.randn(2, 3, 64, 64), [0, 1], ["gradcam", "scorecam"])
    assert heat["gradcam"].shape == heat["scorecam"].shape == (2, 64, 64)
    with pytest.raises(ConfigError, match="out of range"):
        compute_cams(res.eval(), torch.randn(1, 3, 64, 64), 5, ["gradcam"])
