"""The gradient-free heatmap: occlusion finds the region a model reads, on a model that has no gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lesion.classify.classifier import Classifier
from lesion.errors import ConfigError
from lesion.explain.cam import compute_cams, methods_for


class _Corner(torch.nn.Module):
    """Logit = mean of the top-left 8x8 corner: only that region matters. Marked without gradients, as an
    imported ONNX / TorchScript network is."""

    num_classes = 1
    differentiable = False

    def forward(self, x):
        return x[:, :, :8, :8].mean(dim=(1, 2, 3))[:, None]


def test_occlusion_finds_the_region_the_model_reads():
    model = Classifier(_Corner())
    x = torch.ones(2, 3, 32, 32)  # bright everywhere: occluding the corner lowers the logit
    heat = compute_cams(model, x, 1, methods=("occlusion",))["occlusion"]
    assert heat.shape == (2, 32, 32) and heat.max() == pytest.approx(1.0)
    inside = heat[:, :8, :8].mean()
    outside = heat[:, 16:, 16:].mean()
    assert inside > 0.5 and outside == 0.0
    # explaining the negative class: occluding the corner raises "not positive", so nothing lowers it
    assert compute_cams(model, x, 0, methods=("occlusion",))["occlusion"].max() == 0.0


def test_gradient_methods_are_refused_on_a_model_without_gradients():
    model = Classifier(_Corner())
    with pytest.raises(ConfigError, match="use occlusion"):
        compute_cams(model, torch.ones(1, 3, 32, 32), 1, methods=("gradcam",))
    assert methods_for(False) == ("occlusion",) and "gradcam" in methods_for(True)


def test_vit_target_layer_and_reshape_are_found():
    """A timm ViT gets its last block's norm1 and a token -> grid reshape; Grad-CAM then gives a map."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1, img_size=32, patch_size=8)
    model = Classifier(net.eval())
    heat = compute_cams(model, torch.randn(1, 3, 32, 32), 1, methods=("gradcam",))["gradcam"]
    assert heat.shape == (1, 32, 32) and np.isfinite(heat).all()
