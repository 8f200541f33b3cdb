"""Decoding uploads: every supported format, odd pixel types, tiny, huge and corrupt files."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lesion.data.upload import MIN_SIDE, decode_upload, dicom_supported, upload_extensions
from lesion.errors import ImageReadError


def _bytes(arr, fmt, mode=None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, format=fmt)
    return buf.getvalue()


RGB = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_roundtrip(fmt):
    d = decode_upload(_bytes(RGB, fmt), f"x.{fmt.lower()}")
    assert d.image.dtype == np.uint8 and (d.image == RGB).all() and d.original_shape == (40, 50)


def test_jpeg_close():
    d = decode_upload(_bytes(RGB, "JPEG"), "x.jpg")
    assert d.image.shape == (40, 50, 3)


def test_16bit_grey_rgba_palette():
    g16 = (np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40)
    d = decode_upload(_bytes(g16, "PNG"), "x16.png")
    assert d.image.shape == (40, 40, 3) and d.image.dtype == np.uint8
    assert d.image[..., 0].max() == 255 and d.image[..., 0].min() == 0
    assert any("8-bit" in n for n in d.notes) and any("grey" in n for n in d.notes)
    rgba = np.dstack([RGB, np.full((40, 50), 7, np.uint8)])
    d = decode_upload(_bytes(rgba, "PNG"), "a.png")
    assert (d.image == RGB).all() and any("alpha" in n for n in d.notes)
    pal = Image.fromarray(RGB).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    d = decode_upload(buf.getvalue(), "p.png")
    assert d.image.shape == (40, 50, 3) and any("converted" in n for n in d.notes)


def test_tiny_corrupt_empty():
    with pytest.raises(ImageReadError, match="too small"):
        decode_upload(_bytes(RGB[:MIN_SIDE - 1], "PNG"), "tiny.png")
    with pytest.raises(ImageReadError, match="corrupt"):
        decode_upload(b"definitely not an image", "bad.png")
    with pytest.raises(ImageReadError, match="corrupt"):
        decode_upload(_bytes(RGB, "PNG")[:60], "cut.png")
    with pytest.raises(ImageReadError, match="empty"):
        decode_upload(b"", "e.png")


def test_huge_is_downscaled_and_said():
    big = np.zeros((100, 200, 3), np.uint8)
    d = decode_upload(_bytes(big, "PNG"), "big.png", max_pixels=5000)  # 20 000 px -> 5 000: half each side
    assert d.image.shape == (50, 100, 3) and d.original_shape == (100, 200)
    assert any("downscaled from 200x100" in n for n in d.notes)


def test_dicom_optional():
    fake = b"\0" * 128 + b"DICM" + b"\0" * 64
    if dicom_supported():
        with pytest.raises(ImageReadError):
            decode_upload(fake, "x.dcm")
        assert "dcm" in upload_extensions()
    else:
        with pytest.raises(ImageReadError, match="pydicom"):
            decode_upload(fake, "x.dcm")
        assert "dcm" not in upload_extensions()
