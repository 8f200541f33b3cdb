"""The Otsu preset's sizes (blur, opening, closing) are pixels of an image of at least 200 px; a smaller image gets
them in proportion, so a thumbnail is segmented as the same picture (the trust sweep's 64-px blobs: a 9-px closing
had joined each lesion to the border, IoU 0.81)."""
from __future__ import annotations

import cv2
import numpy as np

from lesion.metrics import seg_metrics
from lesion.segment.otsu import otsu_segment, preset


def _lesion(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small dark disk off-centre, a few pixels from the border, on light skin-like noise (``size`` px square),
    and its exact mask: where a closing too large for the picture joins the lesion to the border."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (205, 170, 150)
    img += rng.normal(0, 4, img.shape)
    r = max(3, size // 6)
    c = r + max(2, size // 16)
    yy, xx = np.mgrid[:size, :size]
    truth = (yy - c) ** 2 + (xx - c) ** 2 <= r * r
    img[truth] = (70, 45, 35)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_a_thumbnail_is_segmented_like_the_full_image():
    cfg = preset("derm")
    for seed in range(3):
        small, truth_small = _lesion(64, seed)
        big = cv2.resize(small, (256, 256), interpolation=cv2.INTER_NEAREST)
        m_small = otsu_segment(small, cfg).mask
        m_big = otsu_segment(big, cfg).mask
        assert seg_metrics(m_small, truth_small)["iou"] >= 0.85, seed
        back = cv2.resize(m_big.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST).astype(bool)
        assert seg_metrics(m_small, back)["iou"] >= 0.85, seed


def test_sizes_apply_unchanged_from_the_reference_up():
    """At 200 px and above the config's pixel sizes are used as they are: the same image at 200 and at 256 px
    gives masks of the same shape, neither scaled down (the HAM10000 / PH2 figures do not move)."""
    from lesion.segment import otsu as otsu_mod

    img, truth = _lesion(200, seed=1)
    m = otsu_segment(img, preset("derm")).mask
    assert seg_metrics(m, truth)["iou"] >= 0.85
    assert otsu_mod.SIZE_REFERENCE == 200  # HAM10000's 200 x 150 images: the preset was tuned at exactly these sizes
