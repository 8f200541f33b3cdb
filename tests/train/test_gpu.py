"""lesion.train.gpu: the augmentations on the device keep masks on their images, repeat from a seed, and do not
shear a non-square input; the upload holds exactly what inference prepares (CPU; the same code runs on CUDA)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lesion.card import Preprocessing
from lesion.train.cls_augment import AugmentConfig
from lesion.train.gpu import (NO_AUGMENT, GpuAugment, affine_theta, augment_batch, cls_augment, plain_batch,
                              seg_augment)

PREP = Preprocessing((48, 80), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), resize="squash")
GEOMETRY_ONLY = dataclasses.replace(NO_AUGMENT, p_hflip=0.5, p_vflip=0.5, p_transpose=0.5, p_affine=1.0)


def _disc(h: int, w: int, r: float, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w] + 0.5
    cy = h / 2 if cy is None else cy
    cx = w / 2 if cx is None else cx
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _batch(b: int = 6, h: int = 48, w: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    masks = np.stack([_disc(h, w, 10, cy=rng.uniform(15, 33), cx=rng.uniform(20, 60)) for _ in range(b)])
    images = np.repeat((masks * 255)[:, None], 3, axis=1).astype(np.uint8)  # the image IS its mask
    return torch.from_numpy(images), torch.from_numpy(masks[:, None])


def _denorm(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 + 0.5


def test_no_augmentation_is_the_plain_normalised_input():
    images, masks = _batch()
    x, m = augment_batch(images, masks, NO_AUGMENT, torch.Generator().manual_seed(0), PREP)
    assert x.shape == (6, 3, 48, 80) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, plain_batch(images, PREP))
    assert torch.equal(m, masks.float())


def test_geometry_moves_the_mask_with_its_image():
    images, masks = _batch()
    x, m = augment_batch(images, masks, GEOMETRY_ONLY, torch.Generator().manual_seed(3), PREP)
    img = _denorm(x[:, 0]) > 0.5
    truth = m[:, 0] > 0.5
    inter = (img & truth).flatten(1).sum(1).float()
    union = (img | truth).flatten(1).sum(1).float()
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert bool((inter / union.clamp(min=1) > 0.9).all()), inter / union


def test_flips_alone_are_exact():
    images, masks = _batch()
    flips = dataclasses.replace(NO_AUGMENT, p_hflip=1.0, p_vflip=1.0)
    x, m = augment_batch(images, masks, flips, torch.Generator().manual_seed(0), PREP)
    assert torch.equal(m, masks.float().flip(-1).flip(-2))
    assert torch.equal(_denorm(x[:, :1]).round(), masks.float().flip(-1).flip(-2))


def test_a_seeded_generator_repeats_the_batch_and_another_seed_does_not():
    images, masks = _batch()
    aug = cls_augment(AugmentConfig(p=0.9))
    a = augment_batch(images, masks, aug, torch.Generator().manual_seed(7), PREP)
    b = augment_batch(images, masks, aug, torch.Generator().manual_seed(7), PREP)
    c = augment_batch(images, masks, aug, torch.Generator().manual_seed(8), PREP)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_rotation_of_a_wide_image_does_not_shear():
    """A centred disc is the same disc after any rotation about the centre, also when H != W (a rotation in
    normalised coordinates without the aspect correction would make it an ellipse)."""
    h, w = 48, 96
    disc = torch.from_numpy(_disc(h, w, 18)[None, None]).float()
    for angle in (30.0, 45.0, 90.0):
        theta = affine_theta(torch.tensor([angle]), torch.tensor([1.0]), torch.zeros(1, 2), (h, w))
        grid = torch.nn.functional.affine_grid(theta, [1, 1, h, w], align_corners=False)
        out = torch.nn.functional.grid_sample(disc, grid, mode="nearest", align_corners=False)
        inter, union = float((out * disc).sum()), float(((out + disc) > 0).sum())
        assert inter / union > 0.93, (angle, inter / union)


def test_zoom_above_one_enlarges():
    h, w = 48, 80
    disc = torch.from_numpy(_disc(h, w, 8)[None, None]).float()
    theta = affine_theta(torch.tensor([0.0]), torch.tensor([1.5]), torch.zeros(1, 2), (h, w))
    grid = torch.nn.functional.affine_grid(theta, [1, 1, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(disc, grid, mode="nearest", align_corners=False)
    assert float(out.sum()) / float(disc.sum()) == pytest.approx(1.5 ** 2, rel=0.15)


def test_the_recipes_map_their_switches():
    off = cls_augment(AugmentConfig(flips=False, cutout=False, microscope=False))
    assert off.p_hflip == off.p_transpose == off.p_cutout == off.p_microscope == 0.0 and off.p_affine == 0.5
    assert seg_augment("cxr").p_vflip == 0.0 and seg_augment("derm").padding == "reflection"
    assert seg_augment("derm", 0.0) == NO_AUGMENT
    with pytest.raises(Exception, match="padding"):
        GpuAugment(padding="wrap")


def test_every_augmentation_at_once_stays_in_range():
    images, masks = _batch()
    aug = dataclasses.replace(cls_augment(AugmentConfig(p=1.0)), p_saturation=1.0)
    x, m = augment_batch(images, masks, aug, torch.Generator().manual_seed(1), PREP)
    raw = _denorm(x)
    assert torch.isfinite(x).all() and float(raw.min()) >= -1e-6 and float(raw.max()) <= 1 + 1e-6
    assert m.shape == masks.shape
