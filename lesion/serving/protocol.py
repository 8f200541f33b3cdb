"""The wire format shared by ``lesion serve`` and its client: JSON with images as base64 PNG (lossless, so a
remote prediction equals a local one), arrays as base64 ``.npy``, and the limits every request must keep.

No request names a file: images travel as bytes, models by the names the server lists.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Mapping, Sequence

import numpy as np

from lesion.data.io import to_uint8_rgb
from lesion.errors import DataError

#: Most images in one predict request, largest request body, longest image side accepted by the server.
MAX_IMAGES = 64
MAX_BODY_BYTES = 48 * 1024 * 1024
MAX_SIDE = 4096
#: The header that carries ``LESION_SERVE_TOKEN``.
TOKEN_HEADER = "authorization"


def encode_image(image: np.ndarray) -> str:
    """RGB uint8 ``[H, W, 3]`` -> base64 PNG (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8_rgb(np.asarray(image))).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(data: str, index: int = 0) -> np.ndarray:
    """base64 image bytes (PNG, JPEG, …) -> RGB uint8, refusing what is not an image or is too large.

    Raises:
        DataError: not base64, not a readable image, or a side over :data:`MAX_SIDE`.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as e:
        raise DataError(f"image {index}: not base64 data.") from e
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if max(im.size) > MAX_SIDE:
                raise DataError(f"image {index}: {im.size[0]}x{im.size[1]} px, over the {MAX_SIDE}-px limit.")
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image {index}: not a readable image ({e.__class__.__name__}).") from e
    return arr


def encode_array(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(data: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(data)), allow_pickle=False)


def check_metadata(metadata: Any, n: int) -> list[dict[str, Any]]:
    """``None`` or a list of ``n`` dicts with only ``age``, ``sex``, ``site`` (values: number / string / null).

    Raises:
        DataError: another shape, key or value type.
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if not isinstance(metadata, list) or len(metadata) != n:
        raise DataError(f"metadata must be a list of {n} objects (one per image) or null.")
    out = []
    for i, m in enumerate(metadata):
        if m is None:
            out.append({})
            continue
        if not isinstance(m, Mapping):
            raise DataError(f"metadata {i}: an object with age / sex / site was expected.")
        bad = sorted(set(m) - {"age", "sex", "site"})
        if bad:
            raise DataError(f"metadata {i}: unknown field(s) {', '.join(bad)}; allowed: age, sex, site.")
        age = m.get("age")
        if age is not None and not isinstance(age, (int, float)):
            raise DataError(f"metadata {i}: age must be a number or null.")
        for k in ("sex", "site"):
            if m.get(k) is not None and not isinstance(m[k], str):
                raise DataError(f"metadata {i}: {k} must be a string or null.")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def predict_request(models: Sequence[str], images: Sequence[np.ndarray], metadata: Sequence[Mapping] | None,
                    ids: Sequence[str], tta: str, merge: str, tta_merge: str | None) -> dict[str, Any]:
    # only what a model reads (age, sex, site) leaves the machine: no id, patient or file field
    keep = ("age", "sex", "site")
    metas = None if metadata is None else [
        {k: (float(v) if k == "age" else str(v)) for k, v in dict(m or {}).items() if k in keep and v is not None
         and not (isinstance(v, float) and np.isnan(v))} for m in metadata]
    return {"models": list(models), "images": [encode_image(im) for im in images], "metadata": metas,
            "ids": list(ids), "tta": tta, "merge": merge, "tta_merge": tta_merge}
