"""lesion.explain.overlay on hand-made masks: exact boxes, outlines on the border, inputs untouched."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import ConfigError, MaskShapeError
from lesion.explain.overlay import (
    PRED_COLOR,
    TRUTH_COLOR,
    bbox,
    compare_panel,
    draw_outline,
    heatmap_overlay,
    overlay_mask,
)


def _rect(h=20, w=30, y0=5, y1=12, x0=8, x1=20):
    m = np.zeros((h, w), bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _grey_image(h=20, w=30):
    return np.full((h, w, 3), 100, np.uint8)


def test_bbox_of_rectangle_is_exact():
    assert bbox(_rect()) == (8, 5, 20, 12)
    assert bbox(np.zeros((4, 4), bool)) is None
    one = np.zeros((5, 5), np.uint8)
    one[3, 1] = 1
    assert bbox(one) == (1, 3, 1, 3)


def test_outline_pixels_lie_on_mask_border_and_input_untouched():
    img = _grey_image()
    before = img.copy()
    m = _rect()
    out = draw_outline(img, m, color=(0, 255, 0), thickness=1, box=False)
    np.testing.assert_array_equal(img, before)  # not modified in place
    drawn = np.all(out == (0, 255, 0), axis=2)
    # Border of the rectangle = mask minus its 4-neighbour erosion.
    inner = m.copy()
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    border = m & ~inner
    np.testing.assert_array_equal(drawn, border)


def test_box_is_drawn_on_bbox():
    m = np.zeros((20, 30), bool)
    m[6:9, 10:13] = True
    m[14, 25] = True  # second component widens the box
    out = draw_outline(_grey_image(), m, color=(255, 0, 0), thickness=1, box=True, box_color=(0, 0, 255))
    blue = np.all(out == (0, 0, 255), axis=2)
    ys, xs = np.nonzero(blue)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 6, 25, 14)


def test_empty_mask_returns_copy():
    img = _grey_image()
    out = draw_outline(img, np.zeros((20, 30), bool))
    np.testing.assert_array_equal(out, img)
    assert out is not img


def test_overlay_mask_blends_only_inside():
    img = _grey_image()
    m = _rect()
    out = overlay_mask(img, m, color=(200, 0, 0), alpha=0.5)
    assert tuple(out[6, 10]) == (150, 50, 50)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert img[6, 10, 0] == 100
    with pytest.raises(ConfigError):
        overlay_mask(img, m, alpha=2)
    with pytest.raises(MaskShapeError):
        overlay_mask(img, m[:-1])


def test_heatmap_overlay_resizes_and_blends():
    img = np.zeros((40, 60, 3), np.uint8)
    heat = np.zeros((10, 15), np.float32)
    heat[:, 8:] = 1.0
    out = heatmap_overlay(img, heat, alpha=1.0, colormap="jet")
    assert out.shape == img.shape and out.dtype == np.uint8
    # jet: 0 -> dark blue, 1 -> dark red (RGB).
    assert out[20, 2, 2] > 100 and out[20, 2, 0] == 0
    assert out[20, 58, 0] > 100 and out[20, 58, 2] == 0
    np.testing.assert_array_equal(heatmap_overlay(img, heat, alpha=0.0), img)
    with pytest.raises(ConfigError, match="Supported"):
        heatmap_overlay(img, heat, colormap="rainbowz")


def test_compare_panel_uses_both_colours():
    truth = _rect()
    pred = _rect(y0=7, y1=15, x0=12, x1=25)
    out = compare_panel(_grey_image(), pred, truth, thickness=1)
    assert np.all(out == TRUTH_COLOR, axis=2).any()
    assert np.all(out == PRED_COLOR, axis=2).any()
    assert tuple(out[7, 25]) == PRED_COLOR  # a corner of the prediction only
    assert tuple(out[5, 8]) == TRUTH_COLOR  # a corner of the truth only
    only_pred = compare_panel(_grey_image(), pred, None, thickness=1)
    assert not np.all(only_pred == TRUTH_COLOR, axis=2).any()


def test_grey_image_accepted():
    out = draw_outline(np.full((20, 30), 50, np.uint8), _rect(), thickness=1, box=False)
    assert out.shape == (20, 30, 3)
