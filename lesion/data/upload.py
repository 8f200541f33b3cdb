"""Decoding an uploaded image's bytes into the RGB uint8 array the rest of lesion-lab expects.

Accepts PNG, JPEG, BMP, TIFF (8/16-bit, grey, RGBA, palette: converted by :func:`lesion.data.io.to_uint8_rgb`)
and DICOM when ``pydicom`` is installed, decoded by the one decoder of files in folders
(:func:`lesion.data.io.decode_image`: EXIF orientation applied, page 1 of a multi-page file with a note, DICOM
window applied, files over :data:`lesion.data.io.PIXEL_LIMIT` refused in one line). Images smaller than
:data:`MIN_SIDE` are refused with a message; images above :data:`MAX_PIXELS` are downscaled and the
returned notes say so. Anything else that cannot be decoded raises :class:`ImageReadError`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lesion.data.io import decode_image
from lesion.errors import ImageReadError

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


def decode_upload(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                  min_side: int = MIN_SIDE) -> DecodedImage:
    """Decode uploaded bytes (:func:`lesion.data.io.decode_image`), refuse tiny images, downscale huge ones.

    Args:
        data: the file's bytes.
        name: file name, for messages (a ``.dcm`` name or a ``DICM`` preamble is read as DICOM).
        max_pixels: downscale above this many pixels (area interpolation); files over
            :data:`lesion.data.io.PIXEL_LIMIT` are refused by the decoder.
        min_side: refuse images with a side below this.

    Returns:
        :class:`DecodedImage`.

    Raises:
        ImageReadError: empty, corrupt or unsupported file, over the pixel limit, or an image too small to analyse.
    """
    notes: list[str] = []
    decoded = decode_image(data, name, notes)  # EXIF / page / DICOM notes go to notes
    rgb, mode = decoded.image, decoded.mode
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise ImageReadError(f"{name} is {w}x{h} pixels: too small to analyse (each side must be at least "
                             f"{min_side} px).")
    notes.extend(decoded.conversions)
    if h * w > max_pixels:
        import cv2

        s = (max_pixels / float(h * w)) ** 0.5
        nh, nw = max(min_side, int(h * s)), max(min_side, int(w * s))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        notes.append(f"downscaled from {w}x{h} ({h * w / 1e6:.0f} MP) to {nw}x{nh}")
    return DecodedImage(np.ascontiguousarray(rgb), (h, w), str(mode), notes)
