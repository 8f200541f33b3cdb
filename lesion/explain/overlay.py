"""Drawing masks and heatmaps on images: outlines + bounding box (seed 003's figures), tints, CAM heatmaps.

Every function returns a new RGB uint8 ``[H, W, 3]`` image and never modifies its input. Colours are RGB
tuples (not OpenCV's BGR) because images in lesion-lab are RGB throughout.
"""
from __future__ import annotations

import numpy as np

from lesion.errors import ConfigError, MaskShapeError, unknown_option
from lesion.data.io import to_uint8_rgb

RGB = tuple[int, int, int]

#: Reference (ground-truth) outline colour: green.
TRUTH_COLOR: RGB = (0, 255, 0)
#: Prediction outline colour: magenta (distinct from green for most colour-vision deficiencies).
PRED_COLOR: RGB = (255, 0, 255)
#: Bounding-box colour used by :func:`draw_outline` when ``box_color`` is not given: yellow.
BOX_COLOR: RGB = (255, 255, 0)
#: Tint of :func:`overlay_mask`: red.
MASK_COLOR: RGB = (255, 0, 0)

#: Colormap names accepted by :func:`heatmap_overlay` -> OpenCV constant name.
COLORMAPS: dict[str, str] = {
    "jet": "COLORMAP_JET",
    "turbo": "COLORMAP_TURBO",
    "viridis": "COLORMAP_VIRIDIS",
    "inferno": "COLORMAP_INFERNO",
    "magma": "COLORMAP_MAGMA",
    "hot": "COLORMAP_HOT",
}


def _rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous RGB uint8 copy of ``image`` (grey is repeated to three channels)."""

    out = to_uint8_rgb(np.asarray(image))
    return out.copy() if out is image else np.ascontiguousarray(out)


def _check(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    m = m if m.dtype == np.bool_ else m != 0
    if m.shape != image.shape[:2]:
        raise MaskShapeError(f"Mask shape {m.shape} does not match the image size {image.shape[:2]}.")
    return m


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight bounding box of the foreground, inclusive pixel coordinates ``(x0, y0, x1, y1)``; None if empty."""
    m = np.asarray(mask) != 0
    if not m.any():
        return None
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def draw_outline(
    image: np.ndarray,
    mask: np.ndarray,
    color: RGB = TRUTH_COLOR,
    thickness: int = 2,
    box: bool = True,
    box_color: RGB | None = None,
) -> np.ndarray:
    """Draw the outline of every mask component and (optionally) the mask's bounding box.

    Args:
        image: RGB (or grey) image ``[H, W(, 3)]``.
        mask: bool or {0, 1} ``[H, W]``.
        color: outline colour (RGB).
        thickness: line width in pixels.
        box: also draw the bounding rectangle of the whole mask.
        box_color: rectangle colour; None uses ``color``.

    Returns:
        A new RGB uint8 image; ``image`` is untouched.
    """
    import cv2

    out = _rgb(image)
    m = _check(out, mask)
    if not m.any():
        return out
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), int(thickness))
    if box:
        x0, y0, x1, y1 = bbox(m)
        cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c) for c in (box_color or color)), int(thickness))
    return out


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: RGB = MASK_COLOR, alpha: float = 0.4) -> np.ndarray:
    """Tint the mask pixels: ``out = (1 - alpha) * image + alpha * color`` inside the mask, image outside."""
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}.")
    out = _rgb(image)
    m = _check(out, mask)
    blend = (1 - alpha) * out[m].astype(np.float32) + alpha * np.asarray(color, np.float32)
    out[m] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap (CAM, probability map) over the image.

    Args:
        image: RGB (or grey) image ``[H, W(, 3)]``.
        heat: float map ``[h, w]`` in [0, 1] (values outside are clipped; NaN counts as 0); resized
            (bilinear) to the image size when it differs.
        alpha: heatmap weight in [0, 1].
        colormap: one of :data:`COLORMAPS`.
    """
    import cv2

    if colormap not in COLORMAPS:
        raise unknown_option("colormap", colormap, list(COLORMAPS))
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}.")
    out = _rgb(image)
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    if h.ndim != 2:
        raise MaskShapeError(f"Heatmap must be 2-D [H, W], got shape {h.shape}.")
    if h.shape != out.shape[:2]:
        h = cv2.resize(h, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_LINEAR)
    h8 = np.clip(np.rint(np.clip(h, 0, 1) * 255), 0, 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(h8, getattr(cv2, COLORMAPS[colormap])), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(out, 1 - alpha, colored, alpha, 0)


def compare_panel(
    image: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray | None,
    pred_color: RGB = PRED_COLOR,
    truth_color: RGB = TRUTH_COLOR,
    thickness: int = 2,
    box: bool = False,
) -> np.ndarray:
    """Prediction and truth outlines on one image (truth first, so the prediction is drawn on top).

    ``truth`` may be None (images without a reference mask): only the prediction is drawn. ``box`` adds the
    prediction's bounding box (seed 003's figures).
    """
    out = _rgb(image)
    if truth is not None:
        out = draw_outline(out, truth, truth_color, thickness, box=False)
    return draw_outline(out, pred, pred_color, thickness, box=box)
