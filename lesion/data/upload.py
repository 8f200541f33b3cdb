"""Decoding an uploaded image's bytes into the RGB uint8 array the rest of lesion-lab expects.

Accepts PNG, JPEG, BMP, TIFF (8/16-bit, grey, RGBA, palette: converted by :func:`lesion.data.io.to_uint8_rgb`)
and DICOM when ``pydicom`` is installed, read by the same rule as files in folders (:mod:`lesion.data.io`: EXIF
orientation applied, page 1 of a multi-page file with a note, DICOM window applied). Images smaller than
:data:`MIN_SIDE` are refused with a message; images above :data:`MAX_PIXELS` are downscaled and the
returned notes say so. Anything else that cannot be decoded raises :class:`ImageReadError`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from lesion.errors import ImageReadError
from lesion.data.io import first_page, upright, dicom_to_array, to_uint8_rgb

#: Smallest accepted side, pixels (networks downsample by 32; a smaller image holds nothing to look at).
MIN_SIDE = 32
#: Largest accepted size in pixels (50 MP); larger images are downscaled to it (aspect kept).
MAX_PIXELS = 50_000_000
#: Upload extensions offered by the page (``dcm`` only when pydicom imports).
EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff")


def dicom_supported() -> bool:
    """True when pydicom can be imported."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def upload_extensions() -> list[str]:
    """Extensions for ``st.file_uploader`` (adds ``dcm`` when DICOM can be read)."""
    return list(EXTENSIONS) + (["dcm"] if dicom_supported() else [])


@dataclass
class DecodedImage:
    """An uploaded image ready for the models.

    Attributes:
        image: RGB uint8 ``[H, W, 3]``.
        original_shape: the file's ``(H, W)`` before any downscale.
        mode: what the file held (PIL mode such as ``I;16`` or ``RGBA``, or ``DICOM``).
        notes: conversions applied, for the page to show (16-bit rescaled, alpha dropped, downscaled...).
    """

    image: np.ndarray
    original_shape: tuple[int, int]
    mode: str
    notes: list[str] = field(default_factory=list)


def _is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def _decode_dicom(data: bytes, name: str, notes: list | None = None) -> tuple[np.ndarray, str]:
    """DICOM by the one rule of :func:`lesion.data.io.dicom_to_array` (modality + VOI LUT / window, MONOCHROME1
    inverted, frame 1, uint8; no patient field read)."""
    if not dicom_supported():
        raise ImageReadError(f"{name} is a DICOM file, but DICOM support needs the optional package 'pydicom' "
                             "(pip install pydicom). Export the image as PNG or TIFF instead.")
    return dicom_to_array(data, name, notes), "DICOM"


def decode_upload(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                  min_side: int = MIN_SIDE) -> DecodedImage:
    """Decode uploaded bytes.

    Args:
        data: the file's bytes.
        name: file name, for messages.
        max_pixels: downscale above this many pixels (area interpolation).
        min_side: refuse images with a side below this.

    Returns:
        :class:`DecodedImage`.

    Raises:
        ImageReadError: empty, corrupt or unsupported file, or an image too small to analyse.
    """

    if not data:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    notes: list[str] = []
    if _is_dicom(data):
        arr, mode = _decode_dicom(data, name, notes)
    else:
        from PIL import Image, UnidentifiedImageError

        Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves and downscale instead of refusing
        try:
            im = Image.open(io.BytesIO(data))
            im.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageReadError(f"Cannot read {name}: the file is corrupt, truncated or not a supported image "
                                 f"(PNG, JPEG, BMP, TIFF{', DICOM' if dicom_supported() else ''}).") from e
        im = upright(first_page(im, name, notes), name, notes)  # the one image rule: page 1, EXIF applied
        mode = im.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
            notes.append(f"converted from {mode} to RGB")
        arr = np.asarray(im)
    if arr.size == 0:
        raise ImageReadError(f"{name} holds no pixels.")
    h, w = arr.shape[:2]
    if min(h, w) < min_side:
        raise ImageReadError(f"{name} is {w}x{h} pixels: too small to analyse (each side must be at least "
                             f"{min_side} px).")
    if arr.dtype != np.uint8:
        notes.append(f"{arr.dtype} pixels rescaled to 8-bit (0.5-99.5 percentile window)"
                     if np.issubdtype(arr.dtype, np.integer) else f"{arr.dtype} pixels rescaled to 8-bit")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2)):
        notes.append("grey image repeated to three channels")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        notes.append("alpha channel dropped")
    rgb = to_uint8_rgb(arr)
    if h * w > max_pixels:
        import cv2

        s = (max_pixels / float(h * w)) ** 0.5
        nh, nw = max(min_side, int(h * s)), max(min_side, int(w * s))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {w}x{h} ({h * w / 1e6:.0f} MP) to {nw}x{nh}")
    return DecodedImage(np.ascontiguousarray(rgb), (h, w), str(mode), notes)
