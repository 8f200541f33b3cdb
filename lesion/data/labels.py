"""Labels of records: the classification targets and the rules that turn a record's diagnosis into a label.

Written once here (data layer) and used by the trainers, the engine's evaluation, the pages and the exporter:

* ``melanoma``: diagnosis ``mel`` / ``melanoma`` (HAM10000 / ISIC code, PH2 name) = 1, any other known
  diagnosis = 0 (:data:`MELANOMA_DX`);
* ``malignant``: the record's ``target`` when the layout has one, else the diagnosis in :data:`MALIGNANT_DX`;
* ``dx7``: index into HAM10000's seven diagnoses :data:`HAM7`;
* ``tb``: tuberculosis (1) vs normal (0) for chest X-ray layouts (:func:`tb_label`).
"""
from __future__ import annotations

import re
from typing import Any, Literal, Sequence

import numpy as np

from lesion.data.records import MALIGNANT_DX
from lesion.errors import DataError, unknown_option

#: HAM10000 diagnosis codes, in the order of the multi-class head.
HAM7: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

#: Diagnosis names that count as melanoma (HAM/ISIC code and PH2 name).
MELANOMA_DX = frozenset({"mel", "melanoma"})

#: Diagnosis names whose binary target (malignant or not) is known: HAM10000 / ISIC codes, PH2, ISIC 2017 and
#: SIIM-ISIC 2020 names, and plain benign / malignant. Spaces and hyphens count as underscores.
DERM_DX: frozenset[str] = frozenset(HAM7) | MALIGNANT_DX | frozenset({
    "nevus", "common_nevus", "atypical_nevus", "seborrheic_keratosis", "lentigo_nos", "lichenoid_keratosis",
    "solar_lentigo", "cafe_au_lait_macule", "atypical_melanocytic_proliferation", "benign", "malignant",
})


def known_derm_dx(dx: str) -> bool:
    """True when ``dx`` (any case; spaces/hyphens = underscores) is in :data:`DERM_DX`."""
    return re.sub(r"[\s\-]+", "_", dx.strip().lower()) in DERM_DX


TARGETS: tuple[str, ...] = ("melanoma", "malignant", "dx7")

Target = Literal["melanoma", "malignant", "dx7"]


def tb_label(record: Any) -> int | None:
    """1 = tuberculosis, 0 = normal, None = unknown (from the record's ``diagnosis``)."""
    dx = (getattr(record, "diagnosis", None) or "").strip().lower()
    if dx in ("tuberculosis", "tb"):
        return 1
    if dx in ("normal", "no finding"):
        return 0
    return None


def classes_for_target(target: str) -> tuple[str, ...]:
    """Class names of the head: ``("melanoma",)``, ``("malignant",)`` or :data:`HAM7`."""
    if target not in TARGETS:
        raise unknown_option("target", target, TARGETS)
    return HAM7 if target == "dx7" else (target,)


def record_label(record: Any, target: str) -> float | int | None:
    """The label of one record for ``target`` (None when the record has no usable label)."""
    dx = (record.diagnosis or "").strip().lower() or None
    if target == "melanoma":
        return None if dx is None else float(dx in MELANOMA_DX)
    if target == "malignant":
        if record.target is not None:
            return float(record.target)
        return None if dx is None else float(dx in MALIGNANT_DX)
    if target == "dx7":
        return HAM7.index(dx) if dx in HAM7 else None
    if target == "tb":  # chest X-ray models (lesion train cxr --labels tb): tuberculosis vs normal
        v = tb_label(record)
        return None if v is None else float(v)
    raise unknown_option("target", target, TARGETS)


def make_targets(records: Sequence[Any], target: str) -> np.ndarray:
    """Labels of records for a head.

    Args:
        records: :class:`lesion.data.records.Record` list.
        target: ``melanoma`` (diagnosis mel/melanoma = 1), ``malignant`` (Record.target, else diagnosis in
            MALIGNANT_DX) or ``dx7`` (index into :data:`HAM7`).

    Returns:
        float32 ``[N]`` of 0/1 for binary targets, int64 ``[N]`` of class indices for ``dx7``.

    Raises:
        DataError: some records have no usable label (the message names a few).
    """
    if target not in TARGETS:
        raise unknown_option("target", target, TARGETS)
    labels = [record_label(r, target) for r in records]
    missing = [r.id for r, y in zip(records, labels) if y is None]
    if missing:
        extra = "" if target != "dx7" else f" (dx7 needs one of {', '.join(HAM7)})"
        raise DataError(
            f"{len(missing)} of {len(labels)} images have no label for target '{target}'{extra}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}."
        )
    if target == "dx7":
        return np.asarray(labels, dtype=np.int64)
    return np.asarray(labels, dtype=np.float32)


def melanoma_column(classes: Sequence[str]) -> int:
    """Which output column scores melanoma: the only one of a binary head, else the ``mel`` column of a
    HAM10000 seven-class head.

    Raises:
        DataError: a multi-class head without a ``mel`` class.
    """
    classes = list(classes)
    if len(classes) <= 1:
        return 0
    if "mel" not in classes:
        raise DataError(f"This model's classes ({', '.join(classes)}) have no 'mel' column to score melanoma.")
    return classes.index("mel")

