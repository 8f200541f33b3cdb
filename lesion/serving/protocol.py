"""The wire format shared by ``lesion serve`` and its client: JSON with images as base64 PNG (lossless, so a
remote prediction equals a local one), arrays as base64 ``.npy``, and the limits every request must keep.

No request names a file: images travel as bytes, models by the names the server lists.
"""
from __future__ import annotations

import base64
import io
from typing import Annotated, Any, Mapping, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lesion.data._common import AGE_RANGE, clean_str, parse_age
from lesion.data.io import read_image, to_uint8_rgb
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
    """base64 image bytes (PNG, JPEG, …) -> RGB uint8 ``[H, W, 3]`` by the one decoder of files and uploads
    (:func:`lesion.data.io.read_image`: EXIF orientation, page 1, DICOM, the pixel limit), refusing what is not
    an image or is too large.

    Raises:
        DataError: not base64; not a readable image, a side over :data:`MAX_SIDE` or over the decoder's pixel
            limit (:class:`~lesion.errors.ImageReadError`, a DataError, naming ``image <index>``).
    """
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as e:
        raise DataError(f"image {index}: not base64 data.") from e
    return read_image(raw, name=f"image {index}", max_side=MAX_SIDE)


def encode_array(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(data: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(data)), allow_pickle=False)


# ------------------------------------------------------------------------------------------- request schemas
#: Longest model name, image id, and sex / site text a request may carry; most models in one request.
MAX_NAME = 128
MAX_ID = 256
MAX_TEXT = 64
MAX_MODELS = 16
#: The fields of one image's metadata (what a model reads: no patient, id or file field).
META_FIELDS = ("age", "sex", "site")

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RequestMetadata(BaseModel):
    """One image's metadata as the wire carries it; :func:`loader_metadata` then applies the data loaders' rule."""

    model_config = _STRICT

    age: Optional[float] = None  # years; finite (NaN / Infinity are refused); outside 0-120 -> unknown
    sex: Optional[str] = Field(None, max_length=MAX_TEXT)  # female / male / anything else -> unknown
    site: Optional[str] = Field(None, max_length=MAX_TEXT)  # anatomical site; outside the vocabulary -> unknown


class PredictBody(BaseModel):
    """``POST /predict``: images (base64), one metadata object and one id per image, TTA and merge modes."""

    model_config = _STRICT

    models: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME)]] = Field(min_length=1)
    images: list[str] = Field(min_length=1)
    metadata: Optional[list[Optional[RequestMetadata]]] = None  # null, or one object (or null) per image
    ids: Optional[list[Annotated[str, Field(min_length=1, max_length=MAX_ID)]]] = None  # null, or one per image
    tta: Optional[str] = Field(None, max_length=MAX_NAME)  # null: the default TTA
    merge: str = Field("mean_prob", max_length=MAX_NAME)
    tta_merge: Optional[str] = Field(None, max_length=MAX_NAME)  # null: as merge

    @model_validator(mode="after")
    def _one_per_image(self) -> "PredictBody":
        n = len(self.images)
        if len(self.models) > MAX_MODELS:
            raise ValueError(f"{len(self.models)} models in one request; the limit is {MAX_MODELS}.")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"'models' names {_first_repeat(self.models)!r} twice.")
        if n > MAX_IMAGES:
            raise ValueError(f"{n} images in one request; the limit is {MAX_IMAGES}.")
        if self.metadata is not None and len(self.metadata) != n:
            raise ValueError(f"'metadata' has {len(self.metadata)} entries for {n} images: one per image, or null.")
        if self.ids is not None:
            if len(self.ids) != n:
                raise ValueError(f"'ids' has {len(self.ids)} entries for {n} images: one per image, or null.")
            if len(set(self.ids)) != n:
                raise ValueError(f"'ids' names {_first_repeat(self.ids)!r} twice; ids must be unique.")
        return self


class ExplainBody(BaseModel):
    """``POST /explain``: one image (base64), its metadata, CAM methods and the class to explain."""

    model_config = _STRICT

    model: str = Field(min_length=1, max_length=MAX_NAME)
    image: str = Field(min_length=1)
    metadata: Optional[RequestMetadata] = None
    methods: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(default_factory=lambda: ["gradcam"],
                                                                      min_length=1, max_length=8)
    class_index: Optional[int] = Field(None, ge=0)  # null: the top class; else < the model's number of classes


def _first_repeat(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return ""


def _where(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def schema_error(err: ValidationError, prefix: tuple = ()) -> str:
    """A pydantic ``ValidationError`` as one line that names the first wrong field (``metadata[0].age: …``);
    ``prefix``: the location of the validated value inside the body."""
    errors = err.errors(include_url=False)
    e = errors[0]
    kind, loc = e.get("type", ""), (*prefix, *e.get("loc", ()))
    msg = str(e.get("msg", "invalid"))
    if kind == "json_invalid":
        text = f"the body is not valid JSON ({e.get('ctx', {}).get('error', msg)})"
    elif kind == "extra_forbidden":
        allowed = META_FIELDS if "metadata" in loc else None
        text = f"{_where(loc)}: unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        text = f"{_where(loc)}: required field missing"
    elif kind == "model_type" and not loc:
        text = "the body must be a JSON object"
    else:
        text = f"{_where(loc)}: {msg.removeprefix('Value error, ')}" if loc else msg.removeprefix("Value error, ")
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def parse_body(raw: bytes, schema: type[BaseModel]) -> BaseModel:
    """Validate a request body (JSON bytes) against ``schema``.

    Raises:
        DataError: the one-line reason of :func:`schema_error` (also for a body that is not JSON).
    """
    try:
        return schema.model_validate_json(raw)
    except ValidationError as e:
        raise DataError(schema_error(e)) from None


def loader_metadata(meta: RequestMetadata | Mapping[str, Any] | None,
                    index: int = 0) -> tuple[dict[str, Any], str | None]:
    """One image's metadata under the data loaders' rule (:func:`lesion.data._common.parse_age` and
    ``clean_str``): an age that is not a number of years in 0-120 is unknown, as is an empty or 'unknown'
    sex / site, so an image sent over HTTP gets the answer it gets from a folder.

    Returns:
        ``(metadata dict with only the known values, a note when a value was set unknown, else None)``.
    """
    if meta is None:
        return {}, None
    m = meta.model_dump() if isinstance(meta, BaseModel) else dict(meta)
    out: dict[str, Any] = {}
    note = None
    age = m.get("age")
    if age is not None:
        text = age
        if isinstance(age, (int, float)) and not isinstance(age, bool):  # a number as a table would write it
            text = repr(float(age)) if "e" not in repr(float(age)) else format(float(age), "f")
        value, bad = parse_age(text)
        if value is not None:
            out["age"] = value
        elif bad is not None:
            note = (f"metadata {index}: age {bad!r} is not a number of years in {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}; "
                    "used as unknown, as the data loaders do.")
    for k in ("sex", "site"):
        v = clean_str(m.get(k))
        if v is not None:
            out[k] = v
    return out, note


def check_metadata(metadata: Any, n: int) -> list[dict[str, Any]]:
    """``None`` or a list of ``n`` objects with only ``age``, ``sex``, ``site`` -> ``n`` dicts under the loaders'
    rule (:func:`loader_metadata`).

    Raises:
        DataError: another shape, key or value type (one line naming the field).
    """
    if metadata is None:
        return [{} for _ in range(n)]
    if not isinstance(metadata, list) or len(metadata) != n:
        raise DataError(f"metadata must be a list of {n} objects (one per image) or null.")
    out = []
    for i, m in enumerate(metadata):
        try:
            parsed = None if m is None else RequestMetadata.model_validate(m)
        except ValidationError as e:
            raise DataError(schema_error(e, ("metadata", i))) from None
        out.append(loader_metadata(parsed, i)[0])
    return out


def wire_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """What of one record's metadata leaves the machine: only what a model reads (age, sex, site), under the
    loaders' rule (an unknown or non-finite value is not sent)."""
    return loader_metadata({k: v for k, v in dict(meta or {}).items() if k in META_FIELDS})[0]


def predict_request(models: Sequence[str], images: Sequence[np.ndarray], metadata: Sequence[Mapping] | None,
                    ids: Sequence[str], tta: str, merge: str, tta_merge: str | None) -> dict[str, Any]:
    """The body of ``POST /predict`` (:class:`PredictBody`); metadata as :func:`wire_metadata` sends it."""
    metas = None if metadata is None else [wire_metadata(m) for m in metadata]
    return {"models": list(models), "images": [encode_image(im) for im in images], "metadata": metas,
            "ids": list(ids), "tta": tta, "merge": merge, "tta_merge": tta_merge}
