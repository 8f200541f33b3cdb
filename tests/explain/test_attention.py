"""Otsu + opening binarisation and the heatmap-vs-lesion scores, on hand-made maps."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import ConfigError, MaskShapeError
from lesion.explain.attention import binarize_heatmap, heatmap_scores, outline_panel


def _square(n=40, r0=10, r1=20):
    m = np.zeros((n, n), bool)
    m[r0:r1, r0:r1] = True
    return m


def test_binarize_keeps_blob_and_opening_removes_speck():
    heat = _square().astype(np.float32)
    heat[35, 35] = 1.0  # a one-pixel speck: Otsu keeps it, the opening removes it
    assert binarize_heatmap(heat, opening_radius=0)[35, 35]
    b = binarize_heatmap(heat, opening_radius=2)
    assert not b[35, 35]
    # The square survives a radius-2 opening except its corners (a disk cannot reach into a right angle).
    assert b[12:18, 12:18].all() and not (b & ~_square()).any() and b.sum() >= 80


def test_flat_map_is_empty_and_bad_inputs():
    assert not binarize_heatmap(np.full((8, 8), 0.3)).any()
    with pytest.raises(MaskShapeError):
        binarize_heatmap(np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError):
        binarize_heatmap(np.zeros((4, 4)), opening_radius=-1)


def test_scores_by_hand():
    lesion = _square()
    heat = np.zeros((40, 40))
    heat[10:20, 10:20] = 1.0  # exactly the lesion
    s = heatmap_scores(heat, lesion, opening_radius=0)
    assert s == {"iou": 1.0, "pointing_game": 1.0, "heat_inside": 1.0}
    heat2 = np.zeros((40, 40))
    heat2[10:20, 10:20] = 1.0
    heat2[25:35, 25:35] = 3.0  # a hotter blob of the same size off the lesion
    s2 = heatmap_scores(heat2, lesion, opening_radius=0)
    assert s2["pointing_game"] == 0.0
    assert s2["heat_inside"] == pytest.approx(100 / 400)
    # Otsu on {0, 1, 3} puts the cut between 1 and 3 (only the hot blob survives): IoU 0 with the lesion.
    assert s2["iou"] == 0.0
    with pytest.raises(MaskShapeError):
        heatmap_scores(heat, lesion[:10])


def test_outline_panel_draws_red_and_green():
    img = np.full((40, 40, 3), 128, np.uint8)
    heat = _square().astype(float)
    out = outline_panel(img, heat)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert (255, 0, 0) in colours and (0, 255, 0) in colours


def test_attention_maps_of_multitask_model():
    torch = pytest.importorskip("torch")
    from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet
    from lesion.explain.attention import attention_maps

    net = MultiTaskNet(MultiTaskConfig(arch="resnet10t", size=64)).eval()
    a = attention_maps(net, torch.randn(2, 3, 64, 64))
    assert a.shape == (2, 64, 64) and a.min() >= 0 and a.max() <= 1
    with pytest.raises(ConfigError):
        attention_maps(torch.nn.Conv2d(3, 1, 1), torch.randn(1, 3, 8, 8))
