"""Tables whose words match their numbers: AUC rows that say "perfect separation" rather than show a
bootstrap CI of [1, 1], and wide tables with their key columns pinned (readable in a 1,400-px window)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

PERFECT = "perfect separation: every positive scores above every negative; a bootstrap CI cannot be computed"
PERFECT_INVERSE = "perfect inverse separation: every positive scores below every negative"


def auc_notes(table, auc: str = "auc", lo: str = "ci_lo", hi: str = "ci_hi"):
    """A copy of an AUC table with a ``note`` column: for AUC 1 (or 0) the CI is blanked (NaN) and the note says
    it is perfect separation — every bootstrap resample separates too, so "[1, 1]" would read as certainty."""
    out = table.copy()
    notes = []
    for i, row in out.iterrows():
        a = row.get(auc)
        note = ""
        if a is not None and np.isfinite(a) and (a >= 1.0 or a <= 0.0):
            note = PERFECT if a >= 1.0 else PERFECT_INVERSE
            out.at[i, lo] = np.nan
            out.at[i, hi] = np.nan
        notes.append(note)
    if any(notes):
        out["note"] = notes
    return out


#: Columns that name a row: pinned, so that a wide table scrolled sideways still says whose numbers they are.
KEY_COLUMNS = ("id", "model", "method", "case", "column", "value", "group", "member", "finding", "metric", "data set",
               "map")


def pinned(columns: Sequence[str], keys: Sequence[str] = KEY_COLUMNS, extra: dict | None = None) -> dict:
    """``column_config`` entries that pin the key columns of a wide table (they stay while it scrolls sideways),
    merged with ``extra`` (a key column's own config gains ``pinned``)."""
    import streamlit as st

    out = dict(extra or {})
    for c in columns:
        if c in keys and c not in out:
            out[c] = st.column_config.Column(pinned=True)
    return out
