"""Image-derived columns to slice by. **Estimates and heuristics, not measurements**: each says so in its name.

Dermoscopy (computed on the image at most 256 px on its long side; the lesion mask when the record has one, else
the central ellipse stands in for the lesion and ``skin_from`` says so):

* ``est_skin_tone_ita``: the individual typology angle ``ITA = atan((L* − 50) / b*)`` in degrees (Chardon et al.
  1991) of the median CIELAB L*, b* of the skin **outside** the lesion (dilated), hair and dark corners left out;
  banded by Del Bino's categories (very light > 55° > light > 41° > intermediate > 28° > tan > 10° > brown > −30° >
  dark). Dermoscopy light and white balance move it: it is a proxy for skin tone, not a Fitzpatrick type.
* ``est_brightness``: mean L* (0–100) of the whole image.
* ``est_dark_corners``: ``1 − L*(corners) / L*(centre)`` (vignette of the dermatoscope's field stop; 0 = none).
* ``heur_hair``: share of pixels a black-hat filter (DullRazor's first step) marks as thin dark lines.
* ``heur_ink``: share of saturated purple / blue pixels outside the lesion (surgical pen marks).
* ``heur_ruler``: long axis-aligned straight segments (Hough) in the outer 15 % band of the image (a ruler's edge).

Chest X-ray: ``est_brightness``, ``est_contrast`` (std of L*), ``est_dark_corners`` and ``heur_text_marks``
(share of saturated-white pixels in the outer band: burned-in letters and markers).

Every value is cached by image (and mask) content: ``cache_dir()/analyse/features-v<VERSION>/<key>.parquet``.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.io import read_image, read_mask, resize_image
from lesion.data.records import file_content_digest
from lesion.errors import LesionError
from lesion.paths import atomic_target, cache_dir

VERSION = 1
Progress = Callable[[int, int], None]

#: Column -> what it is (pages show it beside the column; the words "estimate" and "heuristic" are kept).
DESCRIPTIONS: dict[str, str] = {
    "est_skin_tone_ita": "skin tone, estimate: individual typology angle (°) of the skin outside the lesion mask",
    "est_brightness": "brightness, estimate: mean L* (0-100)",
    "est_contrast": "contrast, estimate: standard deviation of L*",
    "est_dark_corners": "dark corners / vignette, estimate: 1 - L*(corners) / L*(centre)",
    "heur_hair": "hair, heuristic: share of pixels a black-hat filter marks as thin dark lines",
    "heur_ink": "ink marks, heuristic: share of saturated purple/blue pixels outside the lesion",
    "heur_ruler": "ruler marks, heuristic: long axis-aligned straight segments in the image's outer band (Hough)",
    "heur_text_marks": "text / markers, heuristic: share of saturated-white pixels in the outer band",
}
DERM_COLUMNS = ("est_skin_tone_ita", "est_brightness", "est_dark_corners", "heur_hair", "heur_ink", "heur_ruler")
CXR_COLUMNS = ("est_brightness", "est_contrast", "est_dark_corners", "heur_text_marks")

#: Del Bino et al. (2006) ITA categories, lower edge in degrees -> name.
ITA_BANDS: tuple[tuple[float, str], ...] = ((55, "very light (>55°)"), (41, "light (41-55°)"),
                                            (28, "intermediate (28-41°)"), (10, "tan (10-28°)"),
                                            (-30, "brown (-30-10°)"), (-1e9, "dark (<-30°)"))
#: Presence cut-offs of the heuristics (share of pixels, or a count of segments).
PRESENT: dict[str, float] = {"heur_hair": 0.035, "heur_ink": 0.003, "heur_ruler": 1, "heur_text_marks": 0.002,
                             "est_dark_corners": 0.5}


def ita_band(ita: float) -> str:
    """Del Bino's category of an ITA in degrees; ``unknown`` for NaN."""
    if not np.isfinite(ita):
        return "unknown"
    return next(name for lo, name in ITA_BANDS if ita > lo)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB float32 ``[H, W, 3]`` (L* 0-100, a*, b*) of an RGB uint8 image (OpenCV's D65 conversion)."""
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _corners_centre(L: np.ndarray) -> tuple[float, float]:
    h, w = L.shape
    ch, cw = max(1, h // 8), max(1, w // 8)
    corners = np.concatenate([L[:ch, :cw].ravel(), L[:ch, -cw:].ravel(), L[-ch:, :cw].ravel(), L[-ch:, -cw:].ravel()])
    centre = L[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
    return float(corners.mean()), float(centre.mean())


def _band(shape: tuple[int, int], frac: float = 0.15) -> np.ndarray:
    h, w = shape
    m = np.zeros(shape, bool)
    bh, bw = max(1, int(h * frac)), max(1, int(w * frac))
    m[:bh], m[-bh:], m[:, :bw], m[:, -bw:] = True, True, True, True
    return m


def derm_features(image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """The dermoscopy columns of one RGB uint8 image (and its lesion mask, bool ``[H, W]``, or None)."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) > 256:
        s = 256 / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        image = resize_image(image, size)
        if mask is not None:
            mask = cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    h, w = image.shape[:2]
    lab = _lab(image)
    L, b = lab[..., 0], lab[..., 2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    k = max(3, (min(h, w) // 16) | 1)
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    hair = blackhat > 18
    if mask is not None and mask.any():
        lesion, skin_from = mask.astype(bool), "mask"
    else:
        yy, xx = np.mgrid[:h, :w]
        lesion = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
        skin_from = "central ellipse (no mask)"
    grown = cv2.dilate(lesion.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    corner_l, centre_l = _corners_centre(L)
    skin = ~grown & ~hair & (L > 25)  # dark field-stop corners and hairs are not skin
    if skin.sum() >= 50:
        ita = float(np.degrees(np.arctan((np.median(L[skin]) - 50.0) / max(float(np.median(b[skin])), 1e-3))))
    else:
        ita, skin_from = float("nan"), "too little skin outside the lesion"
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0].astype(int), hsv[..., 1], hsv[..., 2]
    ink = (hue >= 120) & (hue <= 165) & (sat > 70) & (val > 50) & ~lesion  # OpenCV hue is 0-180: 240-330°
    edges = cv2.Canny(gray, 60, 160)
    edges[~_band((h, w))] = 0
    # a ruler's base line: a straight axis-aligned segment at least half the side long (hairs curve, the
    # field stop is round)
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=40, minLineLength=min(h, w) // 2, maxLineGap=3)
    if lines is not None:
        lines = np.asarray(lines).reshape(-1, 4)
        d = np.abs(lines[:, 2:] - lines[:, :2])
        lines = lines[(np.minimum(d[:, 0], d[:, 1]) <= 0.05 * np.maximum(d[:, 0], d[:, 1]))]
    return {"est_skin_tone_ita": ita, "est_brightness": float(L.mean()),
            "est_dark_corners": float(np.clip(1 - corner_l / max(centre_l, 1e-3), 0, 1)),
            "heur_hair": float(hair.mean()), "heur_ink": float(ink.mean()),
            "heur_ruler": float(0 if lines is None else len(lines)), "skin_from": skin_from}


def cxr_features(image: np.ndarray) -> dict[str, Any]:
    """The chest X-ray columns of one radiograph (RGB or grey uint8)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    if max(h, w) > 256:
        s = 256 / max(h, w)
        image = resize_image(image, (max(1, round(h * s)), max(1, round(w * s))))
    L = _lab(image)[..., 0]
    corner_l, centre_l = _corners_centre(L)
    white = image.min(axis=2) >= 250
    return {"est_brightness": float(L.mean()), "est_contrast": float(L.std()),
            "est_dark_corners": float(np.clip(1 - corner_l / max(centre_l, 1e-3), 0, 1)),
            "heur_text_marks": float(white[_band(white.shape)].mean())}


def _key(records: Sequence[Any], domain: str) -> str:
    h = hashlib.sha1(f"{VERSION}|{domain}".encode())
    for r in records:
        h.update(f"{r.id}|{file_content_digest(r.image_path)}|"
                 f"{file_content_digest(r.mask_path) if r.mask_path else '-'}".encode())
    return h.hexdigest()[:20]


def image_features(records: Sequence[Any], domain: str = "derm", progress: Progress | None = None,
                   cache: bool = True):
    """Image-derived columns of every record, one row per record (``id`` + :data:`DERM_COLUMNS` or
    :data:`CXR_COLUMNS`; derm adds ``skin_from``). An unreadable image gets NaN. Cached by content (module doc)."""
    import pandas as pd

    path = cache_dir() / "analyse" / f"features-v{VERSION}" / f"{_key(records, domain)}.parquet"
    if cache and path.is_file():
        try:
            return pd.read_parquet(path)
        except Exception:  # a damaged cache file is recomputed
            pass
    cols = DERM_COLUMNS if domain == "derm" else CXR_COLUMNS
    rows = []
    for i, r in enumerate(records):
        try:
            im = read_image(r.image_path)
            if domain == "derm":
                m = read_mask(r.mask_path, im.shape[:2]) if r.mask_path else None
                rows.append({"id": r.id, **derm_features(im, m)})
            else:
                rows.append({"id": r.id, **cxr_features(im)})
        except LesionError:
            rows.append({"id": r.id, **{c: float("nan") for c in cols}})
        if progress is not None:
            progress(i + 1, len(records))
    df = pd.DataFrame(rows)
    if cache:
        with atomic_target(path) as tmp:
            df.to_parquet(tmp, index=False)
    return df


def feature_groups(features) -> "Any":
    """The columns of :func:`image_features` as slice labels: ITA in Del Bino's bands, the presence heuristics as
    ``present`` / ``absent`` at :data:`PRESENT`, brightness and contrast in quartile bands."""
    import pandas as pd

    from_bands = {}
    for c in features.columns:
        if c in ("id", "skin_from"):
            continue
        v = pd.to_numeric(features[c], errors="coerce")
        if c == "est_skin_tone_ita":
            from_bands[c] = v.map(ita_band)
        elif c in PRESENT:
            from_bands[c] = np.where(v.isna(), "unknown", np.where(v >= PRESENT[c], "present", "absent"))
        else:
            from_bands[c] = quantile_bands(v.to_numpy())
    return pd.DataFrame({"id": features["id"], **from_bands})


def quantile_bands(values: np.ndarray, n_bands: int = 4, digits: int = 3) -> np.ndarray:
    """Numbers as ``"[lo, hi)"`` labels of ``n_bands`` quantile bands (fewer when values repeat); NaN -> unknown."""
    import pandas as pd

    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, "unknown", dtype=object)
    ok = np.isfinite(v)
    if ok.sum() < 2 or np.unique(v[ok]).size < 2:
        out[ok] = "all"
        return out
    edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, n_bands + 1)))
    idx = np.clip(np.searchsorted(edges, v[ok], side="right") - 1, 0, len(edges) - 2)
    fmt = lambda x: f"{x:.{digits}g}"  # noqa: E731
    labels = [f"[{fmt(edges[i])}, {fmt(edges[i + 1])}{']' if i == len(edges) - 2 else ')'}"
              for i in range(len(edges) - 1)]
    out[ok] = [labels[i] for i in idx]
    return out
