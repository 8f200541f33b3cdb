"""Segmentation augmentations (albumentations), one recipe per domain.

Images arrive already resized to ``size x size`` (preloaded once into RAM), so every transform keeps that
shape. Geometric transforms are applied to the mask with nearest-neighbour interpolation by
albumentations itself.

Why these transforms:
- dermoscopy has no canonical orientation: all flips and 90-degree rotations are valid;
- scale/crop jitter (Affine zoom, RandomResizedCrop, PadIfNeeded after a shrink) covers lesions that fill the
  frame (PH2) as well as small ones (HAM10000);
- perspective and colour jitter cover the camera and illumination differences between clinics;
- chest X-rays keep their anatomy (no vertical flips or large rotations); contrast/gamma jitter covers
  different exposures and scanners.
"""
from __future__ import annotations

import cv2

from lesion.errors import unknown_option

#: Domains with a recipe.
DOMAINS = ("derm", "cxr")


def seg_train_transform(size: int, domain: str, strength: float = 1.0):
    """Training augmentation for image + mask at ``size x size``.

    Args:
        size: side of the (square) training images, pixels.
        domain: ``"derm"`` or ``"cxr"``.
        strength: 0 = no augmentation (identity), 1 = the default recipe.

    Returns:
        an ``albumentations.Compose`` called as ``t(image=uint8 [S,S,3], mask=uint8 [S,S])``.
    """
    import albumentations as A

    if domain not in DOMAINS:
        raise unknown_option("domain", domain, DOMAINS)
    if strength <= 0:
        return A.Compose([])
    s = float(strength)
    reflect = cv2.BORDER_REFLECT_101
    if domain == "derm":
        ops = [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.OneOf([
                A.RandomResizedCrop(size=(size, size), scale=(1 - 0.45 * s, 1.0), ratio=(0.8, 1.25)),
                A.Compose([  # zoom out: shrink then pad back (reflect), for lesions that fill the frame
                    A.Affine(scale=(1 - 0.35 * s, 1.0), border_mode=reflect, p=1.0),
                    A.PadIfNeeded(min_height=size, min_width=size, border_mode=reflect),
                ]),
            ], p=0.6),
            A.Affine(scale=(1 - 0.15 * s, 1 + 0.15 * s), translate_percent=(-0.08 * s, 0.08 * s),
                     rotate=(-45 * s, 45 * s), border_mode=reflect, p=0.7),
            A.Perspective(scale=(0.02, 0.06 * s), p=0.2),
            A.RandomBrightnessContrast(0.2 * s, 0.2 * s, p=0.5),
            A.HueSaturationValue(int(10 * s), int(20 * s), int(10 * s), p=0.4),
        ]
    else:
        ops = [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(1 - 0.12 * s, 1 + 0.12 * s), translate_percent=(-0.06 * s, 0.06 * s),
                     rotate=(-10 * s, 10 * s), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.7),
            A.RandomResizedCrop(size=(size, size), scale=(1 - 0.25 * s, 1.0), ratio=(0.85, 1.18), p=0.3),
            A.Perspective(scale=(0.02, 0.05 * s), p=0.2),
            A.RandomBrightnessContrast(0.25 * s, 0.25 * s, p=0.6),
            A.RandomGamma(gamma_limit=(80, 120), p=0.4),
        ]
    return A.Compose(ops)
