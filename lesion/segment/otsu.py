"""Classical Otsu segmentation, configured step by step as a researcher would (seed 000; seed 004 for lungs).

Pipeline (every step switchable in :class:`OtsuConfig`)::
    input -> working size -> vignette exclusion -> hair removal -> channel -> blur -> Otsu threshold
          -> opening -> closing -> hole filling -> clear border -> component selection -> mask at input size

The Otsu threshold is computed on the pixels inside the valid region only (the dark microscope circle or the
black X-ray surround would otherwise pull the threshold down). Library first: ``skimage.filters.threshold_otsu``,
OpenCV morphology/inpainting, ``scipy.ndimage`` hole filling and labelling.

``preset("derm")`` was tuned on HAM10000 training images only (``bench/tune_otsu.py``; PH2 chose nothing) and
``preset("cxr")`` on the lung masks (Montgomery + Shenzhen); what each was tuned on is :data:`PRESET_NOTES`, their
measured mean IoU :data:`PRESET_SCORES`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np

from lesion.errors import ConfigError, unknown_option
from lesion.data.io import to_uint8_rgb

Channel = Literal["grey", "red", "green", "blue", "L", "a*", "b*", "saturation", "value", "min_rgb"]
Selection = Literal["central", "largest", "two_largest", "all"]
Vignette = Literal["off", "border_dark", "circle"]

CHANNELS: tuple[str, ...] = ("grey", "red", "green", "blue", "L", "a*", "b*", "saturation", "value", "min_rgb")
SELECTIONS: tuple[str, ...] = ("central", "largest", "two_largest", "all")
VIGNETTES: tuple[str, ...] = ("off", "border_dark", "circle")
HAIR_KERNELS: tuple[str, ...] = ("ellipse", "lines")
DOMAINS: tuple[str, ...] = ("derm", "cxr")


#: Long side (pixels) at and above which the config's sizes apply as they are; smaller images get them in proportion.
SIZE_REFERENCE = 200


@dataclass(frozen=True)
class OtsuConfig:
    """One field per step; frozen so that a config is a hashable cache key.

    Defaults are the dermoscopy preset (see :func:`preset`).
    """

    # Working size: the long side is downscaled to this many pixels before any step (speed; Otsu on a
    # histogram does not need full resolution); the mask is upsampled back. 0 = work at input size.
    work_size: int = 256
    # Vignette exclusion: 'border_dark' drops very dark pixels connected to the image border (microscope
    # circle / corners, black X-ray surround); 'circle' keeps only the largest inscribed circle of the
    # bright field; 'off' keeps everything. Excluded pixels never count towards the threshold or the mask.
    vignette: Vignette = "border_dark"
    # Grey level (0-255) below which a border-connected pixel counts as vignette (derm: 70, tuned on HAM10000
    # training images; 40 before).
    vignette_level: int = 70
    # Hair removal (DullRazor-style): black-hat morphology finds thin dark lines, which are inpainted.
    # Off in the derm preset: on HAM10000 training images it lowered the mean IoU (bench/tune_otsu.py, stage 2)
    # because it also erases dark lesion texture, and it costs most of the run time (cv2.inpaint). Switch it on
    # for very hairy images.
    hair_removal: bool = False
    # Black-hat structuring element: 'ellipse' (one disc) or 'lines' (max over 4 line orientations, more
    # selective for thin straight hairs). Size in pixels at the working size (odd).
    hair_kernel: Literal["ellipse", "lines"] = "ellipse"
    hair_kernel_size: int = 9
    # Black-hat response (grey levels) above which a pixel is hair (30 kept more lesion texture than 12-20).
    hair_threshold: int = 30
    # Channel to threshold: the blue channel separates pigment from skin best in dermoscopy; 'grey' for
    # X-rays. All channels are on a 0-255 scale (OpenCV's 8-bit L*a*b* / HSV scaling).
    channel: Channel = "blue"
    # True when the object is darker than the background (lesions on skin, lungs in the body): the mask is
    # channel <= threshold. False for channels where it is brighter (saturation, b*).
    invert: bool = True
    # Gaussian blur sigma in working-size pixels before thresholding (0 = off): removes texture and noise.
    blur_sigma: float = 3.0
    # Morphological opening / closing radius in working-size pixels (0 = off): opening removes specks and
    # thin bridges, closing joins fragments of one lesion.
    open_radius: int = 3
    close_radius: int = 9
    # Fill holes inside the object (lesion regression areas, lung vessels).
    fill_holes: bool = True
    # Drop components that touch the image border (or the vignette edge) before selection.
    clear_border: bool = False
    # Components to keep: 'central' (largest, weighted by closeness to the centre: seed 000's "most central
    # large component"), 'largest', 'two_largest' (two lungs), 'all'.
    selection: Selection = "central"
    # Components smaller than this fraction of the valid area are ignored.
    min_area_frac: float = 0.005

    def __post_init__(self) -> None:
        for name, value, options in (
            ("channel", self.channel, CHANNELS),
            ("component selection", self.selection, SELECTIONS),
            ("vignette mode", self.vignette, VIGNETTES),
            ("hair kernel", self.hair_kernel, HAIR_KERNELS),
        ):
            if value not in options:
                raise unknown_option(name, value, options)
        if self.work_size < 0 or self.open_radius < 0 or self.close_radius < 0 or self.blur_sigma < 0:
            raise ConfigError("work_size, blur_sigma and the morphology radii must be >= 0 (0 switches the step off).")
        if not 0 <= self.min_area_frac < 1:
            raise ConfigError(f"min_area_frac must be in [0, 1), got {self.min_area_frac}.")

    def replace(self, **changes) -> "OtsuConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)


#: Tuned presets (their measured mean IoU is in :data:`PRESET_SCORES`).
PRESETS: dict[str, OtsuConfig] = {
    "derm": OtsuConfig(),
    # X-ray: lungs are dark in a brighter body; the black surround outside the body is dark too but connected
    # to the border, so the vignette step removes it; then keep the two largest components (two lungs).
    "cxr": OtsuConfig(
        work_size=256,
        vignette="border_dark",
        # Higher than for dermoscopy: Shenzhen's soft-tissue surround is mid-grey, not black (its IoU rises
        # with the level: 40 -> 0.53, 80 -> 0.65, 140 -> 0.77), but Montgomery's lungs touch its black
        # border and vanish above ~90 (0.68, 0.71, 0.05). 80 is the best compromise over both (0.667).
        vignette_level=80,
        hair_removal=False,
        channel="grey",
        invert=True,
        blur_sigma=2.0,
        # A wide opening cuts the thin bridges between the lungs and the dark neck / axillae.
        open_radius=8,
        close_radius=5,
        fill_holes=True,
        # Lungs often touch the image edge at the apices; clearing border components drops them (IoU 0.15).
        clear_border=False,
        selection="two_largest",
        min_area_frac=0.01,
    ),
}

#: Mean IoU (per image, at native size) of each preset. derm: on the images it was tuned on (HAM10000 training
#: sample), on HAM10000 images it never saw (the derm U-Net's held-out ids) and on PH2 (external, chose nothing).
#: cxr: tuned on the same images (no held-out split): "what the classical baseline reaches", not a test score.
PRESET_SCORES: dict[str, dict[str, float]] = {
    "derm": {"HAM10000 training sample (tuned on, 400 imgs, 200x150)": 0.625,
             "HAM10000 held-out (665 imgs, 200x150)": 0.634, "PH2 (external, 200 imgs, 512 px)": 0.839},
    "cxr": {"Shenzhen (320, 512 px)": 0.652, "Montgomery (110, 512 px)": 0.711, "both (430)": 0.667},
}

#: What each preset was tuned on: the card-like note shown wherever the preset is shown (the Segmentation page).
PRESET_NOTES: dict[str, str] = {
    "derm": ("tuned 2026-12-04 by bench/tune_otsu.py on 400 HAM10000 training images (a seeded sample of the 3577 "
             "not held out by derm_unet_efficientnet_lite0, native 200x150), by mean per-image IoU over a 108-config "
             "grid (channel, blur, opening, closing, vignette level) and then one switch at a time; the U-Net's 665 "
             "held-out images and PH2 chose nothing (PH2 is external validation only). Mean IoU: 0.625 on the "
             "tuning images, 0.634 on HAM10000 held-out, 0.839 on PH2."),
    "cxr": ("tuned on all 430 lung X-rays of Montgomery + Shenzhen (no held-out split), by mean IoU over both: "
            "a classical baseline, not a test score."),
}


def preset(domain: str) -> OtsuConfig:
    """The tuned configuration of a domain (``'derm'`` dermoscopy, ``'cxr'`` chest X-ray lungs)."""
    if domain not in PRESETS:
        raise unknown_option("domain", domain, DOMAINS)
    return PRESETS[domain]


@dataclass
class OtsuResult:
    """Output of :func:`otsu_segment`.

    Attributes:
        mask: bool ``[H, W]`` at the input size.
        threshold: Otsu threshold in channel units (0-255 scale of the chosen channel, after blur).
        steps: step name -> displayable uint8 image (``[h, w]`` or ``[h, w, 3]`` at the working size),
            in pipeline order; empty unless ``return_steps=True``.
    """

    mask: np.ndarray
    threshold: float
    steps: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def extract_channel(rgb: np.ndarray, channel: str) -> np.ndarray:
    """One channel of an RGB uint8 image as uint8 ``[H, W]`` on a 0-255 scale."""
    import cv2

    if channel not in CHANNELS:
        raise unknown_option("channel", channel, CHANNELS)
    if channel == "grey":
        return _grey(rgb)
    if channel in ("red", "green", "blue"):
        return np.ascontiguousarray(rgb[..., ("red", "green", "blue").index(channel)])
    if channel == "min_rgb":
        return rgb.min(axis=2)
    if channel in ("L", "a*", "b*"):
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)  # 8-bit: L*255/100, a*+128, b*+128
        return np.ascontiguousarray(lab[..., ("L", "a*", "b*").index(channel)])
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return np.ascontiguousarray(hsv[..., 1 if channel == "saturation" else 2])


def valid_region(rgb: np.ndarray, mode: str, level: int) -> np.ndarray:
    """Bool ``[H, W]``: pixels outside the vignette (True = usable).

    ``border_dark``: pixels darker than ``level`` that are connected to the image border are excluded.
    ``circle``: only the largest circle inscribed in the not-dark field is kept.
    """
    import cv2
    from scipy import ndimage as ndi

    h, w = rgb.shape[:2]
    if mode == "off":
        return np.ones((h, w), bool)
    dark = _grey(rgb) < level
    if mode == "border_dark":
        lab, _ = ndi.label(dark)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border > 0]
        valid = ~np.isin(lab, border)
    elif mode == "circle":
        # Distance to the nearest dark pixel or image edge; its maximum is the inscribed circle's radius.
        field_ = np.pad(~dark, 1, constant_values=False).astype(np.uint8)
        dist = cv2.distanceTransform(field_, cv2.DIST_L2, 5)[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        r = float(dist[cy, cx])
        yy, xx = np.ogrid[:h, :w]
        valid = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        raise unknown_option("vignette mode", mode, VIGNETTES)
    if valid.sum() < 0.1 * h * w:  # a very dark image would lose everything; keep it whole instead
        return np.ones((h, w), bool)
    return valid


def hair_mask(rgb: np.ndarray, kernel: str = "ellipse", size: int = 9, threshold: int = 12) -> np.ndarray:
    """Bool ``[H, W]``: thin dark structures (hair) found by black-hat morphology of the grey image."""
    import cv2

    grey = _grey(rgb)
    size = max(3, int(size) | 1)
    if kernel == "ellipse":
        response = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    elif kernel == "lines":
        response = np.zeros_like(grey)
        line = np.zeros((size, size), np.uint8)
        line[size // 2, :] = 1
        for k in range(4):  # 0, 45, 90, 135 degrees
            se = line if k % 2 == 0 else np.eye(size, dtype=np.uint8)
            se = se if k < 2 else np.ascontiguousarray(np.rot90(se))
            response = np.maximum(response, cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, se))
    else:
        raise unknown_option("hair kernel", kernel, HAIR_KERNELS)
    hair = response > threshold
    # Widen by one pixel so that the inpainting also replaces the hair's soft edge.
    return cv2.dilate(hair.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def remove_hair(rgb: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """Inpaint the hair pixels (Telea) and return a new RGB uint8 image."""
    import cv2

    if not hair.any():
        return rgb.copy()
    return cv2.inpaint(rgb, hair.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def _touches_border(lab: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Label ids of components touching the image border or the edge of the valid region."""
    import cv2

    edge = np.zeros(lab.shape, bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    if not valid.all():
        # Pixels just inside the vignette edge count as border too.
        edge |= valid & ~cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ids = np.unique(lab[edge])
    return ids[ids > 0]


def select_components(
    mask: np.ndarray,
    selection: str,
    min_area: float,
    clear_border: bool,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Keep the components of a bool mask chosen by ``selection`` (see :class:`OtsuConfig`)."""
    from scipy import ndimage as ndi

    if selection not in SELECTIONS:
        raise unknown_option("component selection", selection, SELECTIONS)
    lab, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    ids = np.arange(1, n + 1)
    areas = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    keep = areas >= max(min_area, 1)
    if clear_border:
        keep &= ~np.isin(ids, _touches_border(lab, valid if valid is not None else np.ones_like(mask)))
    if not keep.any():
        return np.zeros_like(mask)
    if selection == "all":
        chosen = ids[keep]
    else:
        score = areas.copy()
        if selection == "central":
            # Area weighted by closeness of the centroid to the image centre (1 at the centre, ~0.1 at a
            # corner), so a big dark corner loses against a smaller lesion in the middle.
            h, w = mask.shape
            cy, cx = np.asarray(ndi.center_of_mass(mask, lab, ids)).T
            d = np.hypot((cy - (h - 1) / 2) / (h / 2), (cx - (w - 1) / 2) / (w / 2)) / np.sqrt(2)
            score = areas * (1.0 - 0.9 * np.clip(d, 0, 1)) ** 2
        score[~keep] = -1
        k = 2 if selection == "two_largest" else 1
        order = np.argsort(-score)[:k]
        chosen = ids[order[score[order] > 0]]
    return np.isin(lab, chosen)


# ---------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------


def otsu_segment(image: np.ndarray, cfg: OtsuConfig | None = None, return_steps: bool = False) -> OtsuResult:
    """Segment the dark (or bright) object of an image with the configured Otsu pipeline.

    Args:
        image: RGB uint8 ``[H, W, 3]`` (a grey ``[H, W]`` image is accepted and repeated to RGB).
        cfg: pipeline configuration; None uses ``preset('derm')``.
        return_steps: also return the intermediate images for display (costs a few copies).

    Returns:
        :class:`OtsuResult` with the bool mask at the input size, the threshold and (optionally) the steps.
    """
    import cv2
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    cfg = cfg or preset("derm")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8:
        img = to_uint8_rgb(img)
    img = np.ascontiguousarray(img[..., :3])
    H, W = img.shape[:2]
    steps: dict[str, np.ndarray] = {}

    def keep(name: str, arr: np.ndarray) -> None:
        if return_steps:
            steps[name] = (arr.astype(np.uint8) * 255) if arr.dtype == np.bool_ else arr.copy()

    # 1. Working size.
    scale = 1.0
    if cfg.work_size and max(H, W) > cfg.work_size:
        scale = cfg.work_size / max(H, W)
        w, h = max(1, round(W * scale)), max(1, round(H * scale))
        work = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    else:
        work = img
    h, w = work.shape[:2]
    keep("input", work)
    # Sizes (blur sigma, hair kernel, morphology radii) are pixels of an image whose long side is at least
    # SIZE_REFERENCE (the presets were tuned on HAM10000 at 200 x 150): a smaller image gets them in proportion, so a
    # 64-px thumbnail is the same picture to the pipeline rather than one where a 9-px closing joins the lesion to the
    # border. Images at or above the reference are unchanged.
    f = min(1.0, max(h, w) / SIZE_REFERENCE)

    def px(r: float) -> int:
        return max(1, round(r * f)) if r > 0 else 0

    # 2. Vignette exclusion.
    valid = valid_region(work, cfg.vignette, cfg.vignette_level)
    if cfg.vignette != "off":
        keep("valid region", valid)

    # 3. Hair removal.
    if cfg.hair_removal:
        hair = hair_mask(work, cfg.hair_kernel, px(cfg.hair_kernel_size) | 1, cfg.hair_threshold)
        hair &= valid
        work = remove_hair(work, hair)
        keep("hair", hair)
        keep("hair removed", work)

    # 4. Channel and 5. blur.
    chan = extract_channel(work, cfg.channel)
    keep(f"channel ({cfg.channel})", chan)
    if cfg.blur_sigma > 0:
        chan = cv2.GaussianBlur(chan, (0, 0), cfg.blur_sigma * f)
        keep("blurred", chan)

    # 6. Otsu threshold on the valid pixels only.
    values = chan[valid]
    if values.size == 0 or values.min() == values.max():
        t = float(values.min()) if values.size else 0.0
        fg = np.zeros((h, w), bool)  # a flat image has no object
    else:
        t = float(threshold_otsu(values))
        fg = (chan <= t) if cfg.invert else (chan > t)
        fg &= valid
    keep("threshold", fg)

    # 7. Morphology.
    if cfg.open_radius > 0:
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, _disk(px(cfg.open_radius))).astype(bool)
        keep("opened", fg)
    if cfg.close_radius > 0:
        fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, _disk(px(cfg.close_radius))).astype(bool)
        fg &= valid
        keep("closed", fg)
    if cfg.fill_holes:
        fg = ndi.binary_fill_holes(fg)
        keep("holes filled", fg)

    # 8. Component selection.
    fg = select_components(fg, cfg.selection, cfg.min_area_frac * float(valid.sum()), cfg.clear_border, valid)
    keep("selected", fg)

    # 9. Back to the input size (linear on the 0/1 mask then 0.5 gives smoother edges than nearest).
    if (h, w) != (H, W):
        fg = cv2.resize(fg.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) >= 0.5
    if return_steps:
        keep("mask", fg)
    return OtsuResult(mask=fg, threshold=t, steps=steps)


class OtsuSegmenter:
    """The segmenter protocol for Otsu: ``OtsuSegmenter(cfg)(image_rgb_uint8) -> bool [H, W]``."""

    def __init__(self, cfg: OtsuConfig | None = None):
        self.cfg = cfg or preset("derm")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return otsu_segment(image, self.cfg).mask

    def __repr__(self) -> str:
        return f"OtsuSegmenter({self.cfg!r})"


SegmenterFn = Callable[[np.ndarray], np.ndarray]
