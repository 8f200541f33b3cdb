"""A predictions file as an ensemble member: probabilities written by any tool, read by id.

A CSV or parquet file with an id column and one probability column per class becomes a
:class:`PredictionsMember`: it answers a whole data set at once (:meth:`~lesion.infer.members.Member.predict_all`),
joins ensembles with networks, is cached like any member and is scored by the same code. It has no network, so
no gradients (no CAMs) and no features.

Columns are given (``id_column``, ``columns``) or guessed, and the guess is said in one line (:attr:`note`):

* the id column: ``id``, ``image_id``, ``image``, ``image_name``, ``isic_id``, ``filename``, ``file``, ``name``
  (first present, case-insensitive); file names match with or without their suffix and folder;
* probability columns: for classes ``(A, B, …)`` the columns named ``A``, ``p_A``, ``prob_A`` or
  ``A_prob`` (case-insensitive); for one class also ``prob``, ``probability``, ``score``, ``p``, ``pred`` or
  ``y_pred``, else the single numeric column left.

Values must be probabilities in [0, 1] (stored as logits internally, so every merge rule applies). Ids of the data
that the file lacks are an error naming how many and the first few (no image is silently dropped); rows of the file
that the data lacks are counted in :attr:`note`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.data.records import file_content_digest
from lesion.errors import ConfigError, DataError
from lesion.infer.ensemble import inverse_activation
from lesion.infer.members import Member, Progress
from lesion.infer.results import _Item
from lesion.infer.tta import TTA

ID_COLUMNS = ("id", "image_id", "image", "image_name", "isic_id", "filename", "file", "name")
ONE_CLASS_COLUMNS = ("prob", "probability", "score", "p", "pred", "y_pred")


def _key(value: Any) -> str:
    """An id as the data names it: the file name without folder or suffix."""
    s = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    return s.rsplit(".", 1)[0] if "." in s and not s.startswith(".") else s


def read_table(path: str | Path):
    """A CSV or parquet file as a DataFrame (by its suffix, else by its first bytes).

    Raises:
        DataError: missing, unreadable or empty.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise DataError(f"Predictions file {p} does not exist.")
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        df = pd.read_parquet(p) if head == b"PAR1" else pd.read_csv(p)
    except Exception as e:  # pandas raises many kinds; one line for the user
        raise DataError(f"Cannot read predictions file {p.name}: {str(e).splitlines()[0]}.") from None
    if df.empty:
        raise DataError(f"Predictions file {p.name} has no rows.")
    return df


def guess_columns(df, classes: Sequence[str], id_column: str | None = None,
                  columns: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """``(id column, one probability column per class)`` of a predictions table (see the module docstring).

    Raises:
        ConfigError: a named column is absent, or no column could be matched (the table's columns are listed).
    """
    names = list(map(str, df.columns))
    lower = {n.lower(): n for n in names}
    if id_column is not None:
        if id_column not in names:
            raise ConfigError(f"--id-column {id_column!r} is not a column ({', '.join(names)}).")
        idc = id_column
    else:
        idc = next((lower[c] for c in ID_COLUMNS if c in lower), None)
        if idc is None:
            raise ConfigError(f"No id column in the predictions file (looked for {', '.join(ID_COLUMNS)}; it has "
                              f"{', '.join(names)}); name it with --id-column.")
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConfigError(f"Column(s) {', '.join(missing)} not in the predictions file ({', '.join(names)}).")
        if len(columns) != len(classes):
            raise ConfigError(f"{len(columns)} probability column(s) for {len(classes)} class(es) "
                              f"({', '.join(classes)}).")
        return idc, list(columns)
    out = []
    for c in classes:
        cands = [c, f"p_{c}", f"prob_{c}", f"{c}_prob"]
        hit = next((lower[k.lower()] for k in cands if k.lower() in lower), None)
        if hit is None and len(classes) == 1:
            hit = next((lower[k] for k in ONE_CLASS_COLUMNS if k in lower), None)
            if hit is None:
                numeric = [n for n in names if n != idc and np.issubdtype(df[n].dtype, np.number)]
                hit = numeric[0] if len(numeric) == 1 else None
        if hit is None:
            raise ConfigError(f"No probability column for class {c!r} in the predictions file (it has "
                              f"{', '.join(names)}); name them with --columns.")
        out.append(hit)
    return idc, out


class PredictionsMember(Member):
    """Probabilities from a file, by image id (see the module docstring).

    Args:
        path: CSV or parquet.
        classes: the class names its columns hold (default ``("melanoma",)``).
        id_column, columns: the columns to use (default: guessed, and the guess is in :attr:`note`).
        name: the member's name (default: the file's stem).
        target, domain, multilabel: what the probabilities are of, for the card.
    """

    kind = "predictions"

    def __init__(self, path: str | Path, classes: Sequence[str] = ("melanoma",), id_column: str | None = None,
                 columns: Sequence[str] | None = None, name: str | None = None, target: str | None = None,
                 domain: str = "", multilabel: bool = False):
        p = Path(path)
        df = read_table(p)
        classes = tuple(classes) or ("melanoma",)
        idc, cols = guess_columns(df, classes, id_column, columns)
        values = df[cols].apply(lambda c: np.asarray(c, dtype=np.float64) if np.issubdtype(c.dtype, np.number)
                                else np.full(len(c), np.nan)).to_numpy(np.float64)
        bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1) | (values > 1).any(axis=1)
        if bad.any():
            first = ", ".join(str(v) for v in df[idc][bad].head(3))
            raise DataError(f"{p.name}: {int(bad.sum())} row(s) hold values that are not probabilities in [0, 1] "
                            f"(e.g. {first}).")
        keys = [_key(v) for v in df[idc]]
        dup = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) < len(keys) else []
        if dup:
            raise DataError(f"{p.name}: id(s) {', '.join(dup[:3])} appear more than once.")
        digest = file_content_digest(p, "sha256")
        card = ModelCard(name=name or p.stem, task="classification", domain=domain, arch="predictions file",
                         classes=classes, target=target or (classes[0] if len(classes) == 1 else None),
                         multilabel=multilabel,
                         notes=f"Probabilities read from {p.name} (columns {', '.join(cols)} by id column "
                               f"{idc}); what data produced them is not known.",
                         extra={"source": "predictions", "training_data_unknown": True,
                                "predictions": {"file": p.name, "id_column": idc, "columns": cols}})
        super().__init__(card, f"sha256:{digest}")
        self.path, self.id_column, self.columns = p, idc, cols
        self.table = dict(zip(keys, values))
        self.note = f"{p.name}: id column '{idc}', probabilities {', '.join(f'{c}={k}' for c, k in zip(classes, cols))}"
        self.device = "file"
        self._notes: list[str] = []

    @property
    def where(self) -> str:
        return f"predictions file {self.path.name}"

    def predict_all(self, items: Sequence[_Item], tta: TTA, progress: Progress | None = None) -> np.ndarray:
        ids = [_key(it.id) for it in items]
        missing = [i for i in ids if i not in self.table]
        if missing:
            raise DataError(f"{self.path.name} has no row for {len(missing)} of {len(ids)} image(s) (e.g. "
                            f"{', '.join(missing[:3])}); ids are matched by file name without folder or suffix.")
        extra = len(set(self.table) - set(ids))
        self._notes = [self.note + (f"; {extra} row(s) for images not in the data were not used" if extra else "")]
        p = np.stack([self.table[i] for i in ids])
        z = inverse_activation(p, self.multilabel).astype(np.float32)
        if progress is not None:
            progress(len(ids), len(ids))
        return np.repeat(z[None], tta.views, axis=0)  # a file has one view: every TTA view is the same number

    def notes(self) -> list[str]:
        return list(self._notes)

    def coverage(self, ids: Sequence[str]) -> dict[str, int]:
        """``{"matched", "missing", "unused"}`` counts of the data's ids against the file's rows."""
        keys = {_key(i) for i in ids}
        return {"matched": len(keys & set(self.table)), "missing": len(keys - set(self.table)),
                "unused": len(set(self.table) - keys)}
