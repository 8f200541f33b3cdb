"""Vectorised drawing of the synthetic demo images (dermoscopy lesions and chest radiographs).

Private helpers of :mod:`lesion.data.demo`. Every function takes a ``numpy.random.Generator`` so that one
seed fixes every pixel. Images are built as float32 arrays in 0–1 and converted to ``uint8`` at the end.

Why our own drawing code instead of a library: no well-kept package synthesises dermoscopy or radiographs
with pixel-exact masks; what we need is a handful of noise fields, polar contours and polygons, which numpy
and OpenCV draw in milliseconds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

# ----------------------------------------------------------------------------------------------- noise


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth random field with zero mean and unit std.

    Args:
        rng: random generator.
        shape: (H, W) of the output.
        scale: feature size in pixels (white noise on a grid ``scale`` times coarser, upsampled bicubically).

    Returns:
        float32 array [H, W], mean 0, std 1.
    """
    h, w = shape
    gh, gw = max(2, int(round(h / scale)) + 2), max(2, int(round(w / scale)) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    f = cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return (f - f.mean()) / (f.std() + 1e-6)


def network_lines(rng: np.random.Generator, shape: tuple[int, int], cell: float, width: float = 0.3) -> np.ndarray:
    """Reticular (honeycomb-like) line pattern in 0–1: zero crossings of band-pass noise.

    The zero set of band-pass filtered noise is a web of closed loops whose mesh size is about ``cell``
    pixels, which reads like the pigment network of a naevus.
    """
    n = rng.standard_normal(shape).astype(np.float32)
    band = cv2.GaussianBlur(n, (0, 0), cell * 0.35) - cv2.GaussianBlur(n, (0, 0), cell * 0.7)
    band /= band.std() + 1e-6
    return np.exp(-((band / width) ** 2)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False  # shared between calls
    return yy, xx


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rgb(*c: float) -> np.ndarray:
    return np.array(c, dtype=np.float32) / 255.0


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend images/colours a -> b by weight t ([H, W] or scalar)."""
    t = np.asarray(t, dtype=np.float32)
    if t.ndim == 2:
        t = t[..., None]
    return a + (b - a) * t


def _bezier(p0, p1, p2, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return pts


def _poly_layer(shape, curves: list[np.ndarray], thickness: int, closed: bool = False) -> np.ndarray:
    """Anti-aliased polylines drawn on a blank layer, returned as float32 coverage 0–1."""
    layer = np.zeros(shape, np.uint8)
    # Sub-pixel precision (shift=4) keeps thin curves smooth.
    pts = [np.round(c * 16).astype(np.int32).reshape(-1, 1, 2) for c in curves]
    cv2.polylines(layer, pts, closed, 255, thickness, cv2.LINE_AA, shift=4)
    return layer.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------------------- dermoscopy

#: Reference colours (RGB 0–1), picked by eye from HAM10000 / PH2 images.
SKIN = _rgb(218, 165, 148)
LIGHT_BROWN = _rgb(172, 112, 78)
MID_BROWN = _rgb(128, 76, 52)
DARK_BROWN = _rgb(80, 45, 32)
BLACK = _rgb(38, 28, 30)
BLUE_GREY = _rgb(105, 108, 135)
RED = _rgb(185, 75, 90)
PINK = _rgb(205, 120, 125)
WHITE = _rgb(225, 210, 215)
TAN = _rgb(185, 140, 105)
HAIR = _rgb(40, 28, 22)
PEN = _rgb(120, 60, 150)


@dataclass(frozen=True)
class DermLesion:
    """Everything that is fixed for one lesion across its views (drawn in the lesion's own frame).

    Attributes:
        harmonics: [K, 3] rows (k, amplitude, phase) of the polar contour r(θ) = r0·(1 + Σ a·cos(kθ + φ)).
        r0: mean radius in pixels.
        layer: lesion colour RGB + opacity [F, F, 4] float32, drawn in the lesion frame (centre at F/2).
        skin: skin texture RGB [F, F, 3] float32 in the same frame.
    """

    harmonics: np.ndarray
    r0: float
    layer: np.ndarray
    skin: np.ndarray


def _contour_radius(theta: np.ndarray, r0: float, harmonics: np.ndarray) -> np.ndarray:
    r = np.ones_like(theta)
    for k, a, ph in harmonics:
        r += np.float32(a) * np.cos(np.float32(k) * theta + np.float32(ph))
    return np.float32(r0) * np.maximum(r, np.float32(0.35))


def make_derm_lesion(rng: np.random.Generator, dx: str, size: int, low_contrast: bool) -> DermLesion:
    """Draw one lesion's shape, colours and the skin around it in a frame 1.5× the image size.

    ABCD cues follow the diagnosis: naevi (``nv``) and keratoses (``bkl``) are small, near-symmetric, smooth
    and 1–2 shades of brown; melanoma (``mel``) is large, asymmetric, notched and multicoloured (blue-grey,
    black dots, red, regression white); basal cell carcinoma (``bcc``) is pink with blue-grey nests and
    red vessels.
    """
    f = size  # lesion frame: the largest lesion (r0·(1+Σa) ≈ 0.44·size) fits inside
    malignant = dx in ("mel", "bcc")
    # --- shape (A, B, D)
    if malignant:
        r0 = size * rng.uniform(0.18, 0.28)
        harm = [(1, rng.uniform(0.08, 0.16), rng.uniform(0, 2 * np.pi)),  # asymmetry: off-centre bulge
                (2, rng.uniform(0.06, 0.18), rng.uniform(0, 2 * np.pi)),
                (3, rng.uniform(0.04, 0.12), rng.uniform(0, 2 * np.pi))]
        for k in rng.choice(np.arange(4, 16), size=6, replace=False):  # notches and irregular border
            harm.append((int(k), rng.uniform(0.015, 0.06) * (6 / k) ** 0.5, rng.uniform(0, 2 * np.pi)))
    else:
        r0 = size * rng.uniform(0.1, 0.19)
        harm = [(2, rng.uniform(0.02, 0.12), rng.uniform(0, 2 * np.pi)),  # oval but point-symmetric
                (3, rng.uniform(0.0, 0.025), rng.uniform(0, 2 * np.pi)),
                (4, rng.uniform(0.0, 0.02), rng.uniform(0, 2 * np.pi))]
        if dx == "bkl":
            harm.append((int(rng.integers(6, 12)), rng.uniform(0.01, 0.03), rng.uniform(0, 2 * np.pi)))
    harmonics = np.array(harm, dtype=np.float32)

    yy, xx = np.mgrid[0:f, 0:f].astype(np.float32)
    u, v = xx - np.float32(f / 2), yy - np.float32(f / 2)
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    depth = np.clip(1 - rho / _contour_radius(theta, r0, harmonics), 0, 1)  # 0 at the border, 1 at centre
    shp = (f, f)

    # --- colour (C) and structure (D)
    n1 = smooth_noise(rng, shp, r0 * 0.5)
    shade = smoothstep(-1.2, 1.2, n1)
    if dx == "nv":
        col = _mix(_mix(LIGHT_BROWN, MID_BROWN, shade), DARK_BROWN, 0.55 * depth ** rng.uniform(0.8, 2))
        net = network_lines(rng, shp, rng.uniform(5, 8))
        col = col * (1 - rng.uniform(0.15, 0.35) * net[..., None] * smoothstep(0.0, 0.3, depth)[..., None])
    elif dx == "bkl":
        col = _mix(TAN, LIGHT_BROWN, 0.6 * shade)
        milia = (rng.random(shp) < 0.0015).astype(np.float32)
        milia = np.clip(cv2.GaussianBlur(milia, (0, 0), 1.2) * 12, 0, 1)
        col = _mix(col, WHITE, 0.6 * milia)
        fiss = network_lines(rng, shp, rng.uniform(10, 16), width=0.2)
        col = col * (1 - 0.12 * fiss[..., None])
    elif dx == "mel":
        col = _mix(_mix(MID_BROWN, DARK_BROWN, shade), BLACK, 0.35 * smoothstep(0.3, 1.0, depth))
        net = network_lines(rng, shp, rng.uniform(5, 10), width=0.35)
        atyp = smoothstep(-0.2, 1.0, smooth_noise(rng, shp, 12))  # network thick in places, absent in others
        col = col * (1 - 0.45 * (net * atyp)[..., None])
        zones = [(BLUE_GREY, 0.8, 0.2), (BLACK, 0.75, 0.35), (RED, 0.4, 0.0), (WHITE, 0.25, 0.25)]
        for colour, strength, min_depth in zones:
            if rng.random() < 0.85:
                z = smoothstep(0.4, 1.4, smooth_noise(rng, shp, r0 * rng.uniform(0.25, 0.5)))
                col = _mix(col, colour, strength * z * smoothstep(min_depth, min_depth + 0.2, depth))
        # irregular black dots and globules, denser toward the periphery
        dots = (rng.random(shp) < 0.004 * (1.2 - depth)).astype(np.float32)
        dots = np.clip(cv2.GaussianBlur(dots, (0, 0), rng.uniform(0.8, 1.6)) * 10, 0, 1)
        col = _mix(col, BLACK, 0.9 * dots)
    else:  # bcc
        col = _mix(PINK, _rgb(190, 130, 125), shade)
        nests = smoothstep(0.8, 1.6, smooth_noise(rng, shp, r0 * 0.2))
        col = _mix(col, BLUE_GREY, 0.85 * nests * smoothstep(0.1, 0.3, depth))
        curves = []
        for _ in range(int(rng.integers(4, 9))):  # arborising vessels
            a, ln = rng.uniform(0, 2 * np.pi), r0 * rng.uniform(0.3, 0.8)
            p0 = np.array([f / 2, f / 2]) + rng.uniform(-0.4, 0.4, 2) * r0
            p2 = p0 + ln * np.array([np.cos(a), np.sin(a)])
            p1 = (p0 + p2) / 2 + rng.normal(0, r0 * 0.15, 2)
            curves.append(_bezier(p0, p1, p2))
        vessels = _poly_layer(shp, curves, 1)
        col = _mix(col, RED, 0.8 * vessels)
    # opacity: fairly sharp for naevi, fuzzier for malignant, washed out when low-contrast
    edge = rng.uniform(0.15, 0.35) if not malignant else rng.uniform(0.25, 0.5)
    alpha = 0.3 + 0.7 * smoothstep(0.0, edge, depth)
    alpha *= rng.uniform(0.28, 0.42) if low_contrast else rng.uniform(0.85, 1.0)
    layer = np.concatenate([col, alpha[..., None]], axis=2).astype(np.float32)

    # --- skin in the same frame: tone, blotches, fine texture
    # skin is smooth: drawn at half resolution in a frame 1.5x the image so that rotated views stay covered
    fs = int(size * 0.75)
    sshp = (fs, fs)
    tone = SKIN + rng.normal(0, 1, 3).astype(np.float32) * _rgb(9, 9, 9) + _rgb(0, 1, 1) * rng.normal(0, 6)
    skin = np.broadcast_to(tone, (fs, fs, 3)).astype(np.float32)
    blotch = smooth_noise(rng, sshp, size * 0.12)[..., None]
    skin = skin * (1 + 0.03 * blotch) + _rgb(6, -4, -2) * smoothstep(0.5, 2, smooth_noise(rng, sshp, 10))[..., None]
    return DermLesion(harmonics, float(r0), layer, skin.astype(np.float32))


def render_derm_view(
    lesion: DermLesion,
    rng: np.random.Generator,
    size: int,
    centre: tuple[float, float],
    angle: float,
    artefacts: dict[str, bool],
) -> tuple[np.ndarray, np.ndarray]:
    """Render one view of a lesion: rigid placement, exact mask, then artefacts drawn over it.

    Args:
        lesion: the lesion from :func:`make_derm_lesion`.
        rng: generator for this view's artefacts (hairs, pen marks...).
        size: output side in pixels.
        centre: lesion centre (x, y) in pixels.
        angle: rotation of the lesion frame in radians.
        artefacts: flags ``hair``, ``vignette``, ``ruler``, ``pen``, ``uneven_light``.

    Returns:
        (image uint8 [size, size, 3] RGB, mask bool [size, size]). The mask is the drawn lesion region
        exactly: lesion colour is composited only where the analytic contour says "inside".
    """
    f = lesion.layer.shape[0]
    fs = lesion.skin.shape[0]
    yy, xx = _grid(size)
    dx, dy = xx - np.float32(centre[0]), yy - np.float32(centre[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = c * dx + s * dy, -s * dx + c * dy  # view pixel -> lesion frame
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    mask = rho < _contour_radius(theta, lesion.r0, lesion.harmonics)
    mx, my = (u + f / 2).astype(np.float32), (v + f / 2).astype(np.float32)
    layer = cv2.remap(lesion.layer, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    skin = cv2.remap(lesion.skin, u * 0.5 + fs / 2, v * 0.5 + fs / 2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    skin = skin * (1 + 0.02 * smooth_noise(rng, (size, size), 2.5)[..., None])  # fine texture of this shot
    a = np.where(mask, layer[..., 3], 0.0)[..., None]
    img = skin * (1 - a) + layer[..., :3] * a

    shp = (size, size)
    if artefacts.get("pen"):  # surgical marking: a purple arc around the lesion, or a few dots
        r = lesion.r0 * rng.uniform(1.5, 2.0)
        t0 = rng.uniform(0, 2 * np.pi)
        t = np.linspace(t0, t0 + rng.uniform(1.2, 3.5), 60)
        arc = np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], 1)
        pen = _poly_layer(shp, [arc], int(rng.integers(3, 7)))
        img = _mix(img, PEN, 0.75 * cv2.GaussianBlur(pen, (0, 0), 0.8))
    if artefacts.get("hair"):
        curves = []
        for _ in range(int(rng.integers(3, 16))):
            p0 = rng.uniform(-0.1, 1.1, 2) * size
            a = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(0.3, 1.0) * size
            p2 = p0 + ln * np.array([np.cos(a), np.sin(a)])
            p1 = (p0 + p2) / 2 + rng.normal(0, 0.12 * ln, 2)
            curves.append(_bezier(p0, p1, p2, 60))
        hair = np.maximum(_poly_layer(shp, curves[: 2 * len(curves) // 3 + 1], 1) * 0.85,
                          _poly_layer(shp, curves[2 * len(curves) // 3 + 1:], 2) * 0.8)
        img = _mix(img, HAIR, hair)
    if artefacts.get("ruler"):  # tick marks along one edge
        side = int(rng.integers(0, 4))
        ruler = np.zeros(shp, np.uint8)
        step = int(rng.integers(5, 9))
        base = int(rng.integers(3, 10))
        for i, p in enumerate(range(int(rng.integers(0, step)), size, step)):
            ln = 14 if i % 5 == 0 else 7
            cv2.line(ruler, (p, base), (p, base + ln), 255, 1)
        cv2.line(ruler, (0, base), (size - 1, base), 255, 1)
        ruler = np.rot90(ruler, side).astype(np.float32) / 255.0
        img = _mix(img, _rgb(30, 25, 30), 0.85 * ruler)
    if artefacts.get("uneven_light"):
        a = rng.uniform(0, 2 * np.pi)
        g = ((xx - size / 2) * np.cos(a) + (yy - size / 2) * np.sin(a)) / size  # -0.7..0.7
        img = img * (1 + rng.uniform(0.35, 0.6) * g)[..., None]
    img = img * rng.uniform(0.93, 1.06)  # exposure of this shot
    if artefacts.get("vignette"):  # black circular field stop of the dermatoscope
        r = np.hypot(xx - size / 2 - rng.normal(0, 4), yy - size / 2 - rng.normal(0, 4)) / (size / 2)
        rv = rng.uniform(1.0, 1.25)
        img = img * (1 - 0.95 * smoothstep(rv - 0.12, rv + 0.02, r))[..., None]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.6)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.012)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------------------- chest X-ray


def _spline(points: np.ndarray, n: int = 200, closed: bool = True) -> np.ndarray:
    """Catmull-Rom spline through control points [P, 2] -> [n, 2] (smooth organ outlines)."""
    p = np.asarray(points, np.float64)
    if closed:
        p = np.concatenate([p[-1:], p, p[:2]])
    else:
        p = np.concatenate([p[:1], p, p[-1:]])
    segs = len(p) - 3
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
        t = np.linspace(0, 1, max(2, n // segs), endpoint=False)[:, None]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.concatenate(out)


def _fill(shape, poly: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return m.astype(bool)


def _lung_outline(rng: np.random.Generator, s: float, side: int, jitter: float) -> np.ndarray:
    """Control points of one lung in image coordinates (side -1 = patient's right = image left).

    Points go apex -> lateral wall -> costophrenic angle -> diaphragm dome -> medial border. The right
    lung is wider with a higher dome; the left lung's medial border is cut later by the heart.
    """
    right = side < 0
    w = (0.36 if right else 0.32) * s  # lung width
    top = 0.15 * s
    base = (0.78 if right else 0.80) * s  # costophrenic angle height
    dome = (0.64 if right else 0.67) * s  # top of diaphragm dome (medial)
    med = 0.04 * s  # medial border distance from the midline
    pts = np.array([
        [med + 0.12 * w, top + 0.00 * s],  # apex (medial side)
        [med + 0.45 * w, top - 0.01 * s],
        [med + 0.72 * w, top + 0.05 * s],
        [med + 0.92 * w, top + 0.20 * s],  # lateral wall
        [med + 1.00 * w, top + 0.40 * s],
        [med + 1.02 * w, base - 0.10 * s],
        [med + 1.04 * w, base],  # costophrenic angle (sharp)
        [med + 0.80 * w, base - 0.045 * s],
        [med + 0.50 * w, dome + 0.005 * s],  # dome
        [med + 0.18 * w, dome + 0.035 * s],
        [med + 0.02 * w, dome + 0.02 * s],  # cardiophrenic
        [med + 0.00 * w, top + 0.35 * s],  # medial border (mediastinum)
        [med + 0.05 * w, top + 0.12 * s],
    ])
    pts = pts + rng.normal(0, jitter * s, pts.shape)
    pts[:, 0] = s / 2 + side * pts[:, 0]
    return pts


def _largest_component(m: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


@dataclass(frozen=True)
class CxrFindings:
    cardiomegaly: bool = False
    effusion: bool = False
    nodule: bool = False
    pneumothorax: bool = False
    infiltration: bool = False


def render_cxr(rng: np.random.Generator, size: int, findings: CxrFindings) -> tuple[np.ndarray, np.ndarray]:
    """Draw one PA chest radiograph and its lung mask.

    Mask convention: the mask is the *aerated lung parenchyma*. Pleural fluid (Effusion) and pneumothorax
    air lie outside it, as a reader tracing the visible lung edge would draw it; a nodule or an
    infiltrate lies inside the lung and stays in the mask.

    Returns:
        (image uint8 [size, size] grey, mask bool [size, size]) with exactly two lung components.
    """
    s = float(size)
    shp = (size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sc = rng.uniform(0.92, 1.05)  # patient size / collimation
    ox, oy = rng.normal(0, 0.015 * s), rng.normal(0.0, 0.015 * s)

    def place(p: np.ndarray) -> np.ndarray:  # scale about the image centre, then shift
        return (p - s / 2) * sc + s / 2 + np.array([ox, oy])

    jit = 0.006
    polys = {side: place(_lung_outline(rng, s, side, jit)) for side in (-1, 1)}
    lung_r, lung_l = _fill(shp, _spline(polys[-1])), _fill(shp, _spline(polys[1]))
    # heart: ellipse sitting on the left hemidiaphragm, bulging into the left lung
    ctr = rng.uniform(0.42, 0.48) if not findings.cardiomegaly else rng.uniform(0.56, 0.64)
    hw = ctr * s * sc * 0.5
    hx = s / 2 + ox + hw * 0.28
    hy = s / 2 + oy + 0.13 * s * sc
    hh = 0.16 * s * sc
    heart = ((xx - hx) / (hw * 0.86)) ** 2 + ((yy - hy) / hh) ** 2 < 1
    heart |= ((xx - hx) / (hw * 0.95)) ** 2 + ((yy - hy - 0.06 * s) / (hh * 0.9)) ** 2 < 1
    lung_l = _largest_component(lung_l & ~heart)
    lung_r = _largest_component(lung_r & ~heart)

    # the lungs as they appear on film before pathology: used for intensity, the mask is refined below
    anat = lung_r | lung_l
    hilum_y = s / 2 + oy - 0.05 * s
    mask = anat.copy()
    fluid = np.zeros(shp, bool)
    ptx = np.zeros(shp, bool)
    ptx_edge = np.zeros(shp, np.float32)
    if findings.effusion:
        lung = lung_r if rng.random() < 0.5 else lung_l
        rows = np.where(lung.any(axis=1))[0]
        base_y = rows.max()
        cols = np.where(lung.any(axis=0))[0]
        lateral_x = cols.min() if cols.mean() < s / 2 else cols.max()
        lat = np.abs(xx - cols.mean()) / max(1.0, (cols.max() - cols.min()) / 2)
        lat = np.where((xx - cols.mean()) * (lateral_x - cols.mean()) > 0, lat, 0)  # meniscus rises laterally
        level = base_y - rng.uniform(0.07, 0.14) * s - 0.06 * s * np.clip(lat, 0, 1.2) ** 2
        fluid = lung & (yy > level)
        mask &= ~fluid
    if findings.pneumothorax:
        right = rng.random() < 0.5
        poly = polys[-1 if right else 1]
        lung = lung_r if right else lung_l
        hil = np.array([s / 2 + (-1 if right else 1) * 0.12 * s, hilum_y])
        # collapse: outline points above the hilum are pulled toward it (apex and upper lateral wall)
        pull = np.clip((hilum_y - poly[:, 1]) / (0.3 * s), 0, 1) ** 0.8 * rng.uniform(0.15, 0.28)
        collapsed = poly + (hil - poly) * pull[:, None]
        coll = _fill(shp, _spline(collapsed))
        ptx = lung & ~coll
        mask &= ~ptx
        edge = _poly_layer(shp, [_spline(collapsed)], 1, closed=True)
        ptx_edge = edge * cv2.dilate(ptx.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)

    # each lung must stay one piece (two components in all); a stray island cut off by fluid counts as fluid
    mask = _largest_component(mask & lung_r) | _largest_component(mask & lung_l)
    if findings.effusion:
        fluid |= anat & ~mask & ~ptx

    # ---- intensities (1 = radio-opaque / white on film)
    cx0 = s / 2 + ox
    # body silhouette with rounded shoulders; air outside is nearly black
    body_half = (0.15 * s + 0.36 * s * smoothstep(0.0, 0.24 * s, yy - oy)) * sc
    body = cv2.GaussianBlur((np.abs(xx - cx0) < body_half).astype(np.float32), (0, 0), 2.0)
    img = 0.06 + 0.5 * body
    img += 0.08 * body * smoothstep(0.5 * s, 0.15 * s, np.abs(xx - cx0))  # thicker chest wall centrally
    # dense centre: mediastinum, heart, and the abdomen under the diaphragm are equally white on film
    dome_y = s / 2 + oy + 0.2 * s * sc
    dense = np.maximum.reduce([
        np.exp(-(((xx - cx0) / (0.075 * s)) ** 2)) * smoothstep(0.08 * s, 0.2 * s, yy),
        cv2.GaussianBlur(heart.astype(np.float32), (0, 0), 1.5),
        smoothstep(dome_y - 0.06 * s, dome_y + 0.04 * s, yy) * body,
    ])
    img += 0.24 * dense
    spine = np.abs(xx - cx0) < 0.042 * s * sc
    img += 0.04 * spine + 0.012 * spine * np.sin(yy / (0.03 * s) * np.pi) ** 8  # vertebrae behind the mediastinum
    lung_soft = cv2.GaussianBlur(anat.astype(np.float32), (0, 0), 1.6)
    # lungs darkest in the mid and upper zones; hila (vessels) and bases (soft tissue overlap) less dark
    hil_dist = np.minimum(np.hypot(xx - (cx0 - 0.12 * s), yy - hilum_y), np.hypot(xx - (cx0 + 0.12 * s), yy - hilum_y))
    dark = 0.44 - 0.09 * np.exp(-hil_dist / (0.08 * s)) - 0.1 * smoothstep(0.5 * s, 0.8 * s, yy)
    dark -= 0.04 * smooth_noise(rng, shp, 0.15 * s)
    img -= lung_soft * dark
    # lung markings: branching vessels from the hila, fading to the periphery
    curves = []
    for hxs in (-1, 1):
        h0 = np.array([cx0 + hxs * 0.11 * s, hilum_y])
        for _ in range(18):
            a = rng.uniform(-0.45 * np.pi, 0.6 * np.pi)  # pointing laterally, up or down
            ln = rng.uniform(0.08, 0.24) * s
            d = np.array([hxs * np.cos(a), -np.sin(a) * 1.3])
            p2 = h0 + ln * d
            p1 = (h0 + p2) / 2 + rng.normal(0, 0.02 * s, 2)
            curves.append(_bezier(h0, p1, p2, 30))
    marks = cv2.GaussianBlur(_poly_layer(shp, curves, 1), (0, 0), 0.9) * np.exp(-hil_dist / (0.2 * s))
    marks += 0.25 * np.clip(smooth_noise(rng, shp, 3.0), 0, None)
    img += 0.12 * marks * lung_soft * (~ptx)
    # ribs: posterior ribs rise from the spine then arch down laterally; spacing widens downward
    ribs = []
    for side in (-1, 1):
        for k in range(10):
            y0 = (0.12 + 0.058 * k + 0.0015 * k * k) * s * sc + oy
            t = np.linspace(0, 0.44 * s * sc, 40)
            y = y0 - 0.035 * s * np.sin(np.pi / 2 * np.minimum(t / (0.16 * s), 1)) + 1.1 * np.maximum(t - 0.1 * s, 0) ** 2 / s
            ribs.append(np.stack([cx0 + side * (0.03 * s + t), y], 1))
    rib_in = _poly_layer(shp, ribs, max(2, int(0.02 * s)))
    rib_cortex = np.clip(_poly_layer(shp, ribs, max(3, int(0.03 * s))) - rib_in, 0, 1)
    img += cv2.GaussianBlur(0.06 * rib_in + 0.08 * rib_cortex, (0, 0), 0.8) * (0.3 + 0.7 * lung_soft)
    # clavicles
    cl = []
    for side in (-1, 1):
        p0 = np.array([cx0 + side * 0.05 * s, 0.2 * s + oy])
        p2 = np.array([cx0 + side * 0.40 * s, 0.10 * s + oy])
        cl.append(_bezier(p0, (p0 + p2) / 2 + np.array([0, 0.03 * s]), p2))
    img += 0.1 * cv2.GaussianBlur(_poly_layer(shp, cl, max(3, int(0.035 * s))), (0, 0), 1.5)
    # ---- findings
    if findings.effusion:
        img = np.where(fluid, 0.62 + 0.08 * smoothstep(0, 6, cv2.distanceTransform(fluid.astype(np.uint8), cv2.DIST_L2, 3)), img)
    if findings.pneumothorax:
        img = np.where(ptx, img - 0.05 - 0.09 * marks, img)  # air, no markings
        img += 0.25 * ptx_edge  # visible pleural line
    if findings.nodule:
        pts = np.argwhere(cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0)
        if len(pts):
            cy, cx = pts[rng.integers(len(pts))]
            r = rng.uniform(0.012, 0.025) * s
            img += 0.28 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (r * 0.7) ** 2)) * (
                (xx - cx) ** 2 + (yy - cy) ** 2 < (2 * r) ** 2)
    if findings.infiltration:
        patch = smoothstep(0.4, 1.6, smooth_noise(rng, shp, 0.06 * s)) * (0.6 + 0.4 * smoothstep(-1, 1, smooth_noise(rng, shp, 5)))
        img += 0.2 * patch * lung_soft

    # ---- acquisition: blur, exposure, gamma, noise, side marker
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.1))
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.2) * rng.uniform(0.9, 1.08) + rng.uniform(-0.03, 0.03)
    img = img + rng.standard_normal(shp, dtype=np.float32) * np.float32(0.012)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        cv2.putText(out, "R", (int(0.05 * s), int(0.08 * s)), cv2.FONT_HERSHEY_SIMPLEX, 0.02 * s / 12, 235, 1, cv2.LINE_AA)
    return out, mask
