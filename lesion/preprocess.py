"""The one preprocessing: an image -> its network input, and a segmenter's output -> the image's pixels.

Every model (classifiers, segmenters, MedSAM) is fed by this module from its card's
:class:`~lesion.card.Preprocessing`, so that a model sees at inference exactly what it saw in training, whichever
trainer, page, exporter or server prepares the image (STYLE habit 4).

The steps, each a function:

1. :func:`geometry` - which region of an ``h x w`` image is used and where it lands in the ``H x W`` input:

   * ``squash``: the whole image resized to ``H x W`` (aspect not kept; the segmenters);
   * ``crop``: the central region with the target's aspect (the central ``min(h, w)`` square for a square
     target; an odd margin puts the extra pixel at the bottom / right), resized to ``H x W`` (the classifiers);
   * ``letterbox``: the whole image scaled by ``s = min(H / h, W / w)`` to ``(round(h s), round(w s))``, at the
     top-left of the input, the rest padding (SAM / MedSAM's layout).

2. :func:`prepare` - RGB ``uint8 [H, W, C]``: the image as RGB (:func:`lesion.data.io.to_uint8_rgb`), fitted by
   cv2 (``interpolation`` ``auto``: INTER_AREA when no side is enlarged, else INTER_LINEAR; an unchanged size is
   copied, not resampled), converted to grey when ``channels`` is 1, then CLAHE (clip 2, 8 x 8 tiles) on the
   lightness (grey) channel when ``clahe``. Letterbox padding is 0.

3. :func:`to_input` - float32 ``[B, C, H, W]``: the scale (``0-1``: ``x / 255``; ``0-255``: as is; ``minmax``:
   each image's own min..max to 0..1, over the image and not its padding), then ``(x - mean) / std`` per channel.
   Letterbox padding is set to 0 afterwards (the mean colour, as SAM pads its normalised input).
   :func:`prepare_batch` is ``to_input(stack(prepare(...)))``.

4. :func:`restore` - a segmenter's output ``[H, W]`` (or a torch ``[..., H, W]``) back onto the ``h x w``
   image, undoing the geometry: the letterbox's padding is cut off, the rest resized bilinearly (cv2
   INTER_LINEAR for arrays, ``F.interpolate(bilinear, align_corners=False)`` for tensors: the same half-pixel
   rule), and a crop's result is put back in place (0 outside the region the network saw).

cv2 and torch are imported inside the functions (importing this module stays cheap).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from lesion.card import Preprocessing
from lesion.data.io import to_uint8_rgb
from lesion.errors import ConfigError

__all__ = ["Geometry", "apply_clahe", "center_crop_box", "geometry", "prepare", "prepare_batch", "prepare_mask",
           "restore", "to_input"]

#: CLAHE settings (fixed: inference needs no random draw, unlike ``albumentations.CLAHE``).
CLAHE_CLIP, CLAHE_GRID = 2.0, 8


class Geometry(NamedTuple):
    """Where an image goes in the network input (all in pixels)."""

    crop: tuple[int, int, int, int]  # (top, left, height, width) of the image region used
    content: tuple[int, int]  # (height, width) that region is resized to, at the input's top-left
    scale: tuple[float, float]  # (sy, sx): input pixels per image pixel (a box x0 becomes (x0 - left) * sx)


def _round(x: float) -> int:
    return int(x + 0.5)


def center_crop_box(hw: Sequence[int], target_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the largest central region of an ``hw`` image with the aspect of
    ``target_hw`` (a square target: the central ``min(h, w)`` square; the odd pixel of a margin goes below / right)."""
    h, w = int(hw[0]), int(hw[1])
    th, tw = int(target_hw[0]), int(target_hw[1])
    if w * th > h * tw:  # wider than the target: full height
        ch, cw = h, min(w, max(1, _round(h * tw / th)))
    else:
        ch, cw = min(h, max(1, _round(w * th / tw))), w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def geometry(hw: Sequence[int], prep: Preprocessing) -> Geometry:
    """The :class:`Geometry` of an ``hw = (h, w)`` image under ``prep`` (see the module docstring)."""
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ConfigError(f"An image must have pixels, got size {w}x{h}.")
    H, W = prep.hw
    if prep.resize == "letterbox":
        s = min(H / h, W / w)
        nh, nw = min(H, max(1, _round(h * s))), min(W, max(1, _round(w * s)))
        return Geometry((0, 0, h, w), (nh, nw), (s, s))
    if prep.resize == "crop":
        top, left, ch, cw = center_crop_box((h, w), (H, W))
        return Geometry((top, left, ch, cw), (H, W), (H / ch, W / cw))
    return Geometry((0, 0, h, w), (H, W), (H / h, W / w))


def _interpolation(src_hw: Sequence[int], dst_hw: Sequence[int], mode: str) -> int:
    import cv2

    if mode == "area":
        return cv2.INTER_AREA
    if mode == "linear":
        return cv2.INTER_LINEAR
    shrink = dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR


def _fit(img: np.ndarray, g: Geometry, prep: Preprocessing, interpolation: int | None = None) -> np.ndarray:
    """Crop / resize / pad ``img [h, w(, C)]`` into the ``H x W`` input by ``g``."""
    import cv2

    top, left, ch, cw = g.crop
    nh, nw = g.content
    region = np.ascontiguousarray(img[top:top + ch, left:left + cw])
    if (ch, cw) != (nh, nw):
        interp = _interpolation((ch, cw), (nh, nw), prep.interpolation) if interpolation is None else interpolation
        region = cv2.resize(region, (nw, nh), interpolation=interp)
    H, W = prep.hw
    if (nh, nw) == (H, W):
        return region
    canvas = np.zeros((H, W) + region.shape[2:], region.dtype)
    canvas[:nh, :nw] = region
    return canvas


def apply_clahe(image: np.ndarray, clip_limit: float = CLAHE_CLIP, grid: int = CLAHE_GRID) -> np.ndarray:
    """CLAHE on the lightness channel of an RGB uint8 image ``[H, W, 3]`` (colours keep their hue), or on a grey
    uint8 image ``[H, W]``.

    cv2 directly rather than ``albumentations.CLAHE``: inference needs a fixed clip limit and no random draw.
    """
    import cv2

    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))
    if image.ndim == 2:
        return clahe.apply(image)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def prepare(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """An image as the network's uint8 input before scaling: ``[H, W, C]`` (C = ``prep.channels``).

    Args:
        image: RGB uint8 ``[h, w, 3]`` (grey ``[h, w]``, RGBA, 16-bit and float are converted by
            :func:`lesion.data.io.to_uint8_rgb`), any size.
        prep: the model's preprocessing.

    Raises:
        ConfigError: ``prep.channels`` is neither 1 nor 3.
    """
    import cv2

    if prep.channels not in (1, 3):
        raise ConfigError(f"Preprocessing gives 1 (grey) or 3 (RGB) channels, not {prep.channels}.")
    img = to_uint8_rgb(np.asarray(image))
    img = _fit(img, geometry(img.shape[:2], prep), prep)
    if prep.channels == 1:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return (apply_clahe(grey) if prep.clahe else grey)[..., None]
    return apply_clahe(img) if prep.clahe else img


def prepare_mask(mask: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """A mask ``[h, w]`` through the same geometry as its image (nearest neighbour): bool ``[H, W]``
    (letterbox padding False)."""
    import cv2

    m = np.asarray(mask)
    m = m[..., 0] if m.ndim == 3 else m
    return _fit(m.astype(np.uint8), geometry(m.shape[:2], prep), prep, cv2.INTER_NEAREST).astype(bool)


def to_input(batch: np.ndarray, prep: Preprocessing, content: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Prepared uint8 images ``[B, H, W, C]`` (or ``[..., H, W, C]``) -> float32 ``[B, C, H, W]`` network input.

    Args:
        batch: the output of :func:`prepare`, stacked.
        prep: the model's preprocessing (scale, mean, std).
        content: for letterboxed inputs, the ``(h, w)`` of the image inside each input
            (:attr:`Geometry.content`); the rest is padding, left out of ``minmax`` and set to 0 at the end.
            None: the whole input is image. :func:`prepare_batch` passes it.

    Raises:
        ConfigError: mean / std with another length than 1 or the channel count.
    """
    u = np.asarray(batch)
    c = u.shape[-1]
    for name, v in (("mean", prep.mean), ("std", prep.std)):
        if len(v) not in (1, c):
            raise ConfigError(f"Preprocessing {name} has {len(v)} values for {c}-channel images.")
    x = u.astype(np.float32)
    if prep.scale == "0-1":
        x = x / 255.0
    elif prep.scale == "minmax":
        lead = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for i in range(len(x)):
            nh, nw = content[i] if content is not None else x.shape[1:3]
            region = x[i, :nh, :nw]
            lo, hi = region.min(), region.max()
            x[i] = (x[i] - lo) / max(float(hi - lo), 1e-8)
        x = x.reshape(lead + x.shape[-3:])
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    if content is not None and prep.resize == "letterbox":
        flat = x.reshape((-1,) + x.shape[-3:])
        for i, (nh, nw) in enumerate(content):
            flat[i, nh:] = 0.0
            flat[i, :, nw:] = 0.0
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def prepare_batch(images: Sequence[np.ndarray], prep: Preprocessing) -> np.ndarray:
    """Images (any sizes) -> float32 network input ``[B, C, H, W]``: ``to_input(stack(prepare(image)))``."""
    images = [np.asarray(im) for im in images]
    H, W = prep.hw
    if not images:
        return np.zeros((0, prep.channels, H, W), np.float32)
    content = [geometry(im.shape[:2], prep).content for im in images] if prep.resize == "letterbox" else None
    return to_input(np.stack([prepare(im, prep) for im in images]), prep, content)


def restore(output: Any, prep: Preprocessing, original_hw: Sequence[int]) -> Any:
    """A segmenter's output at the network's resolution back onto the original ``(h, w)`` image.

    Args:
        output: probabilities or logits, a numpy array ``[H, W]`` (``[H, W, K]`` too) or a torch tensor
            ``[..., H, W]`` (kept on its device). An output at another resolution than the input is read as
            covering the input (the region boxes are scaled).
        prep: the preprocessing the input was made with.
        original_hw: ``(h, w)`` of the image.

    Returns:
        the same kind of array / tensor at ``[h, w]`` (numpy) or ``[..., h, w]`` (torch): the letterbox's padding
        cut off, the rest resized bilinearly; for ``crop``, 0 outside the region the network saw.
    """
    h, w = int(original_hw[0]), int(original_hw[1])
    g = geometry((h, w), prep)
    H, W = prep.hw
    is_tensor = not isinstance(output, np.ndarray) and hasattr(output, "dim")
    oh, ow = (tuple(output.shape[-2:]) if is_tensor else np.asarray(output).shape[:2])
    nh, nw = g.content
    if (oh, ow) != (H, W):
        nh, nw = max(1, _round(nh * oh / H)), max(1, _round(nw * ow / W))
    top, left, ch, cw = g.crop
    if is_tensor:
        import torch
        import torch.nn.functional as F

        t = output[..., :nh, :nw]
        if (nh, nw) != (ch, cw):
            t4 = t if t.dim() == 4 else t.reshape((-1, 1, nh, nw))
            t4 = F.interpolate(t4, size=(ch, cw), mode="bilinear", align_corners=False)
            t = t4 if t.dim() == 4 else t4.reshape(tuple(output.shape[:-2]) + (ch, cw))
        if (ch, cw) == (h, w):
            return t
        out = torch.zeros(tuple(output.shape[:-2]) + (h, w), dtype=t.dtype, device=t.device)
        out[..., top:top + ch, left:left + cw] = t
        return out
    import cv2

    p = np.asarray(output)[:nh, :nw]
    if (nh, nw) != (ch, cw):
        p = cv2.resize(np.ascontiguousarray(p), (cw, ch), interpolation=cv2.INTER_LINEAR)
    if (ch, cw) == (h, w):
        return p
    out = np.zeros((h, w) + p.shape[2:], p.dtype)
    out[top:top + ch, left:left + cw] = p
    return out
