"""Patient metadata (sex, anatomical site, age) as a fixed-length numeric vector (seed 003, eq. 1 input).

The vector ``M_in`` is laid out as

=============  ==========================================================================
slice          meaning
=============  ==========================================================================
``[0:3]``      one-hot sex over :data:`SEX_VOCAB` (``female``, ``male``, ``unknown``)
``[3:3+S]``    one-hot anatomical site over :data:`SITE_VOCAB` (``S`` sites incl. ``unknown``)
``[-2]``       age, normalised ``(age - 50) / 20`` (0.0 when missing)
``[-1]``       age-missing flag (1.0 when the age is unknown)
=============  ==========================================================================

The vocabularies are **fixed** (not learned from the training set) so that a checkpoint's metadata layer
means the same thing on every data set; a value outside the vocabulary maps to ``unknown``. This module is
numpy-only (no torch) so pages can show the encoding cheaply.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

#: Sex values; anything else (None, "", "unknown", "other") -> "unknown".
SEX_VOCAB: tuple[str, ...] = ("female", "male", "unknown")

#: Anatomical sites: HAM10000 ``localization`` values plus the ISIC 2019/2020 ``anatom_site_general`` ones.
SITE_VOCAB: tuple[str, ...] = (
    "abdomen", "acral", "anterior torso", "back", "chest", "ear", "face", "foot", "genital", "hand",
    "head/neck", "lateral torso", "lower extremity", "neck", "oral/genital", "palms/soles",
    "posterior torso", "scalp", "torso", "trunk", "upper extremity", "unknown",
)

#: Age normalisation: ``(age - AGE_CENTER) / AGE_SCALE`` keeps HAM ages (0-85 y) within about [-2.5, 1.8].
AGE_CENTER, AGE_SCALE = 50.0, 20.0

#: Length of the encoded vector.
METADATA_DIM: int = len(SEX_VOCAB) + len(SITE_VOCAB) + 2

#: Record.meta keys the encoder reads.
METADATA_KEYS: tuple[str, ...] = ("age", "sex", "site")


def _norm_str(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    return str(value).strip().lower().replace("_", " ") or "unknown"


def _age(value: Any) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(age) else age


def encode_metadata(meta: Mapping[str, Any]) -> np.ndarray:
    """Encode one record's metadata.

    Args:
        meta: mapping with optional ``age`` (years), ``sex`` and ``site`` (``localization`` is accepted too).

    Returns:
        float32 vector ``[METADATA_DIM]``. An empty mapping gives the "all unknown" vector.
    """
    v = np.zeros(METADATA_DIM, dtype=np.float32)
    sex = _norm_str(meta.get("sex"))
    v[SEX_VOCAB.index(sex) if sex in SEX_VOCAB else SEX_VOCAB.index("unknown")] = 1.0
    site = _norm_str(meta.get("site", meta.get("localization")))
    off = len(SEX_VOCAB)
    v[off + (SITE_VOCAB.index(site) if site in SITE_VOCAB else SITE_VOCAB.index("unknown"))] = 1.0
    age = _age(meta.get("age"))
    if age is None:
        v[-1] = 1.0
    else:
        v[-2] = (age - AGE_CENTER) / AGE_SCALE
    return v


def encode_records(records: Iterable[Any]) -> np.ndarray:
    """Encode the ``meta`` of many records. Returns float32 ``[N, METADATA_DIM]``."""
    rows = [encode_metadata(getattr(r, "meta", None) or {}) for r in records]
    return np.stack(rows) if rows else np.zeros((0, METADATA_DIM), np.float32)


def metadata_coverage(records: Iterable[Any]) -> dict[str, float]:
    """Fraction of records with a known value for each of :data:`METADATA_KEYS` (0-1)."""
    recs = list(records)
    if not recs:
        return {k: 0.0 for k in METADATA_KEYS}
    out = {}
    for k in METADATA_KEYS:
        known = 0
        for r in recs:
            m = getattr(r, "meta", None) or {}
            val = m.get(k, m.get("localization") if k == "site" else None)
            known += (_age(val) is not None) if k == "age" else (_norm_str(val) != "unknown")
        out[k] = known / len(recs)
    return out
