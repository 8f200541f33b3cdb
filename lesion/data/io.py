"""Reading images and masks with readable errors and the conversions users need.

Images come back as RGB ``uint8`` arrays ``[H, W, 3]`` whatever the file holds (grey, 16-bit, RGBA,
palette); masks as ``bool`` arrays ``[H, W]``. PIL applies palettes (HAM10000 has masks whose palette index
0 is white), OpenCV would return raw indices, so masks go through PIL.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lesion.errors import ImageReadError, MaskShapeError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"Image file not found: {path}")
    try:
        im = Image.open(path)
        im.load()  # force decoding now so that a truncated file fails here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"Cannot read image {path.name}: the file is corrupt, truncated or not an image ({e}).") from e
    return im


def to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    """Convert any 2-D or 3-D array (grey, grey+alpha, RGB, RGBA; uint8/uint16/int/float) to RGB uint8.

    16-bit and float images are rescaled by their own min/max range (robust 0.5–99.5 percentiles for
    16-bit, which keeps X-ray contrast); alpha is dropped (composited on black is wrong for dermoscopy,
    so we simply ignore it).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 2:  # grey + alpha
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] >= 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ImageReadError(f"Expected a 2-D or 3-D image array, got shape {a.shape}.")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if a.dtype == np.bool_:
            f = f * 255.0
        elif np.issubdtype(a.dtype, np.integer) and f.max() > 255:
            lo, hi = np.percentile(f, [0.5, 99.5])
            f = (f - lo) / max(hi - lo, 1e-9) * 255.0
        elif np.issubdtype(a.dtype, np.floating) and f.max() <= 1.0:
            f = f * 255.0
        a = np.clip(f, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``[H, W, 3]``.

    Raises:
        ImageReadError: the file is missing, corrupt or truncated, or has zero size.
    """
    im = _open(Path(path))
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im)
    elif im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        arr = np.asarray(im.convert("RGB"))
    else:
        arr = np.asarray(im)
    if arr.size == 0 or min(arr.shape[:2]) < 1:
        raise ImageReadError(f"Image {Path(path).name} is empty.")
    return to_uint8_rgb(arr)


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask as bool ``[H, W]`` (grey > 127 after applying the palette; a {0, 1} mask counts its 1s).

    Args:
        path: mask file.
        shape: expected ``(H, W)`` of the image; a mask of another size raises :class:`MaskShapeError`.
    """
    im = _open(Path(path))
    grey = np.asarray(im.convert("L"))
    # {0, 255} masks (ISIC, HAM10000, PH2) and {0, 1} masks (common in Kaggle sets) are both binary masks.
    mask = grey > 0 if grey.max() <= 1 else grey > 127
    if shape is not None and mask.shape != tuple(shape[:2]):
        raise MaskShapeError(
            f"Mask {Path(path).name} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}."
        )
    return mask


def resize_image(img: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize ``[H, W(, C)]`` to ``size`` (int = square, or ``(H, W)``); masks use ``interpolation='nearest'``."""
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}[interpolation]
    if img.dtype == np.bool_:
        return cv2.resize(img.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, (w, h), interpolation=interp)
