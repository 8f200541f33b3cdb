"""The multi-task network's own attention mask, heatmap binarisation and heatmap-vs-lesion scores.

Seed 003 turns the segmentation branch's continuous output into a mask by an Otsu threshold followed by a
morphological opening (its Fig. 10: red outline of the binarised mask, green bounding box). The same
binarisation is applied here to any heatmap (CAMs too), so every method is scored the same way.
"""
from __future__ import annotations

import numpy as np

from lesion.classify.classifier import as_classifier
from lesion.errors import ConfigError, MaskShapeError
from lesion.explain.overlay import draw_outline, heatmap_overlay

#: Name of the attention "method" next to the CAM methods.
ATTENTION = "attention"


def attention_maps(model, images, meta=None) -> np.ndarray:
    """``σ(mask logits)`` of a classifier with a mask (the multi-task network), at the input size.

    Args:
        model: a :class:`~lesion.classify.classifier.Classifier` (or a raw network, or its ``logits_module``).
        images: normalised ``[B, 3, H, W]`` tensor or array.
        meta: ``[B, D]`` metadata or None (all unknown).

    Returns:
        float32 ``[B, H, W]`` in [0, 1] (the raw sigmoid, not rescaled: 0.5 means the network is undecided).

    Raises:
        ConfigError: the model has no segmentation branch.
    """
    import torch

    clf = as_classifier(model)
    if not clf.has_mask:
        raise ConfigError(f"{type(clf.net).__name__} has no attention mask: only multi-task models have one.")
    p = next(clf.parameters())
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float().to(p.device)
    with torch.inference_mode():
        m = meta.to(p.device) if meta is not None else None
        out = clf.eval()(x, m).mask_logits
    return torch.sigmoid(out[:, 0].float()).cpu().numpy()


def binarize_heatmap(heat: np.ndarray, opening_radius: int = 3) -> np.ndarray:
    """Otsu threshold + morphological opening with a disk (seed 003's mask post-processing).

    Args:
        heat: float ``[H, W]`` (any range; NaN counts as 0).
        opening_radius: disk radius in pixels; 0 skips the opening (it removes specks thinner than 2r+1).

    Returns:
        bool ``[H, W]``; all False for a flat map (no threshold separates anything).
    """
    from scipy.ndimage import binary_opening
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    h = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    if h.ndim != 2:
        raise MaskShapeError(f"A heatmap must be 2-D [H, W], got shape {h.shape}.")
    if opening_radius < 0:
        raise ConfigError(f"opening_radius must be >= 0, got {opening_radius}.")
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, dtype=bool)
    mask = h > threshold_otsu(h)
    if opening_radius > 0:
        mask = binary_opening(mask, structure=disk(opening_radius).astype(bool))
    return mask


def heatmap_scores(heat: np.ndarray, lesion_mask: np.ndarray, opening_radius: int = 3) -> dict[str, float]:
    """How well a heatmap points at the lesion.

    Args:
        heat: float ``[H, W]``, >= 0 (CAM or attention).
        lesion_mask: bool ``[H, W]``, the reference lesion (truth or a segmentation).
        opening_radius: passed to :func:`binarize_heatmap`.

    Returns:
        ``iou``: IoU of the binarised heatmap with the lesion (1.0 when both are empty, the metrics' rule);
        ``pointing_game``: 1.0 when the heatmap's maximum lies inside the lesion, else 0.0;
        ``heat_inside``: sum(heat in lesion) / sum(heat) (NaN for an all-zero heatmap).
    """
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0), 0, None)
    m = np.asarray(lesion_mask).astype(bool)
    if h.shape != m.shape:
        raise MaskShapeError(f"Heatmap {h.shape} and lesion mask {m.shape} differ in size.")
    b = binarize_heatmap(h, opening_radius)
    union = int((b | m).sum())
    iou = 1.0 if union == 0 else float((b & m).sum() / union)
    total = float(h.sum())
    pointing = float(m.flat[int(np.argmax(h))]) if total > 0 else 0.0
    return {"iou": iou, "pointing_game": pointing, "heat_inside": heat_inside(h, m)}


def heat_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of a heatmap's mass inside a mask: ``sum(heat in mask) / sum(heat)`` (negative heat counts as 0).

    NaN for an all-zero heatmap: a map that points nowhere has no share to report (callers that need a number
    decide what it means, e.g. 0 = "not inside").

    Raises:
        MaskShapeError: the two differ in size.
    """
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0), 0, None)
    m = np.asarray(mask).astype(bool)
    if h.shape != m.shape:
        raise MaskShapeError(f"Heatmap {h.shape} and mask {m.shape} differ in size.")
    total = float(h.sum())
    return float(h[m].sum() / total) if total > 0 else float("nan")


def outline_panel(image: np.ndarray, heat: np.ndarray, opening_radius: int = 3, alpha: float = 0.45,
                  truth: np.ndarray | None = None) -> np.ndarray:
    """Heatmap over the image with its binarised mask drawn as a red outline + green box (seed 003 Fig. 10).

    ``truth`` (optional) is outlined in cyan underneath. Returns RGB uint8 ``[H, W, 3]``.
    """

    out = heatmap_overlay(image, heat, alpha=alpha)
    if truth is not None:
        out = draw_outline(out, truth, color=(0, 255, 255), thickness=1, box=False)
    mask = binarize_heatmap(heat, opening_radius)
    return draw_outline(out, mask, color=(255, 0, 0), thickness=2, box=True, box_color=(0, 255, 0))
