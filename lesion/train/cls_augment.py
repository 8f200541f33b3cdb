"""Training augmentations of seed 003 (albumentations), each switchable, plus the microscope vignette.

Library first: flips, affine shift/scale/rotate, RGB shift, brightness/contrast, gamma and multi-patch
cutout are albumentations transforms. **Albumentations has no "microscope" transform** (the dark circular
dermatoscope border of the Kaggle SIIM-ISIC discussion seed 003 cites), so :class:`MicroscopeCircle` writes it
as an ``ImageOnlyTransform``: it darkens everything outside a random circle. It breaks the spurious link
between the dermatoscope's zoom (a visible black ring) and the diagnosis.

albumentations is imported only when a pipeline is built (:func:`build_train_transform`, or the first use of
:class:`MicroscopeCircle`): :class:`AugmentConfig` and :func:`microscope_circle` need none, so the classification
trainer's modules also import where it is not installed (the GPU machine, whose augmentations are torch ops on
the device: :mod:`lesion.train.gpu`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run during training (each with its own probability)."""

    flips: bool = True  # horizontal + vertical flips (and transpose): lesions have no canonical orientation
    affine: bool = True  # shift/scale/rotate (A.Affine; ShiftScaleRotate is its deprecated alias)
    rgb_shift: bool = True  # shift of RGB channels (camera / lighting colour)
    brightness_contrast: bool = True  # random brightness + contrast
    gamma: bool = True  # random gamma
    microscope: bool = True  # dark circular vignette (dermatoscope ring)
    cutout: bool = True  # several small holes, not one big one (would hide the lesion)
    p: float = 0.5  # probability of each augmentation


def _microscope_class():
    """:class:`MicroscopeCircle`, defined on first use (it subclasses an albumentations transform)."""
    import albumentations as A

    class MicroscopeCircle(A.ImageOnlyTransform):
        """Darken the image outside a random circle (the dermatoscope's field of view).

        The circle is centred near the image centre with radius ``radius_range`` x half the image side; outside
        it pixels are multiplied by ``darkness`` (0 = black, as in a real dermatoscope ring).
        """

        def __init__(self, radius_range: tuple[float, float] = (0.8, 1.1), center_jitter: float = 0.1,
                     darkness: float = 0.0, p: float = 0.5):
            super().__init__(p=p)
            self.radius_range = radius_range
            self.center_jitter = center_jitter
            self.darkness = darkness

        def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
            h, w = params["shape"][:2]
            r = self.py_random.uniform(*self.radius_range) * min(h, w) / 2
            cy = h / 2 + self.py_random.uniform(-1, 1) * self.center_jitter * h
            cx = w / 2 + self.py_random.uniform(-1, 1) * self.center_jitter * w
            return {"cy": cy, "cx": cx, "radius": r}

        def apply(self, img: np.ndarray, cy: float = 0.0, cx: float = 0.0, radius: float = 1.0,
                  **params) -> np.ndarray:
            return microscope_circle(img, cy, cx, radius, self.darkness)

        def get_transform_init_args_names(self) -> tuple[str, ...]:
            return ("radius_range", "center_jitter", "darkness")

    MicroscopeCircle.__module__ = __name__
    MicroscopeCircle.__qualname__ = "MicroscopeCircle"
    return MicroscopeCircle


def __getattr__(name: str) -> Any:
    """``MicroscopeCircle`` is made on first access (albumentations is imported then, not with this module)."""
    if name == "MicroscopeCircle":
        cls = globals()["MicroscopeCircle"] = _microscope_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def microscope_circle(img: np.ndarray, cy: float, cx: float, radius: float, darkness: float = 0.0) -> np.ndarray:
    """Multiply pixels of ``img [H, W, C]`` farther than ``radius`` from ``(cy, cx)`` by ``darkness``."""
    h, w = img.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    outside = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 > radius**2
    out = img.copy()
    out[outside] = (out[outside].astype(np.float32) * darkness).astype(img.dtype)
    return out


def build_train_transform(cfg: AugmentConfig = AugmentConfig()):
    """Albumentations pipeline (an ``A.Compose``) on uint8 RGB ``[S, S, 3]`` (+ optional ``mask``), sizes
    unchanged."""
    import albumentations as A

    p = cfg.p
    t: list[Any] = []
    if cfg.flips:
        t += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Transpose(p=0.5)]
    if cfg.affine:
        t.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-45, 45),
                          border_mode=0, p=p))
    if cfg.rgb_shift:
        t.append(A.RGBShift(r_shift_limit=15, g_shift_limit=15, b_shift_limit=15, p=p))
    if cfg.brightness_contrast:
        t.append(A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=p))
    if cfg.gamma:
        t.append(A.RandomGamma(gamma_limit=(80, 120), p=p))
    if cfg.microscope:
        t.append(__getattr__("MicroscopeCircle")(p=p))
    if cfg.cutout:
        t.append(A.CoarseDropout(num_holes_range=(2, 8), hole_height_range=(0.04, 0.1),
                                 hole_width_range=(0.04, 0.1), fill=0, p=p))
    return A.Compose(t)
