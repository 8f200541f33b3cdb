"""A predictions file as an ensemble member on the pages that need no network (Classification, Failure review,
Multi-view fusion): the sidebar's "Add a predictions file (CSV/parquet)" makes a
:class:`lesion.infer.predictions.PredictionsMember`, checked on adding (one line when it cannot be used) and shown
with its :attr:`~lesion.infer.predictions.PredictionsMember.note` and coverage counts."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import streamlit as st

from lesion.errors import LesionError
from lesion.infer.predictions import PredictionsMember

PREFIX = "file: "


def _store(domain: str) -> dict:
    """label -> spec (path, classes, id column, columns) of the files added this session for ``domain``."""
    return st.session_state.setdefault(f"_pred_files.{domain}", {})


def _stat(path: str) -> tuple:
    try:
        s = os.stat(path)
        return s.st_size, s.st_mtime_ns, s.st_ino
    except OSError:
        return ()


def load_predictions(spec: dict, domain: str) -> PredictionsMember:
    """The member of one added file, re-read when the file changed since (kept for the session)."""
    objs = st.session_state.setdefault("_pred_objs", {})
    key = (spec["path"], tuple(spec["classes"]), spec["id_column"], tuple(spec["columns"] or ()), domain,
           _stat(spec["path"]))
    if key not in objs:
        objs[key] = PredictionsMember(spec["path"], classes=spec["classes"], id_column=spec["id_column"],
                                      columns=spec["columns"] or None, domain=domain)
    return objs[key]


def coverage_words(m: PredictionsMember, ids: Sequence[str], what: str = "images") -> str:
    """One line: which columns the file gave and how its ids match the images to score."""
    cov = m.coverage(ids)
    words = f"{m.note} · {cov['matched']} of {len(set(ids))} {what} matched"
    if cov["missing"]:
        words += f", **{cov['missing']} missing from the file**"
    if cov["unused"]:
        words += f" · {cov['unused']} row(s) for images not in these data (not used)"
    return words


def predictions_control(ds, key: str, default_classes: Sequence[str] = ("melanoma",)) -> dict[str, PredictionsMember]:
    """The sidebar form that adds a predictions file; returns label -> member of every file added (this domain).

    A file is refused with one line when it cannot be read, has no usable id / probability column, holds values
    outside [0, 1], or matches none of the data set's images."""
    store = _store(ds.domain)
    with st.sidebar.expander("Add a predictions file (CSV/parquet)"):
        st.caption("Probabilities from any tool, one row per image, joined by image id: a member like a model "
                   "(no heatmaps: a file has no network).")
        path = st.text_input("File path", key=f"{key}.pred_path", placeholder="/data/preds.csv").strip()
        classes = st.text_input("Classes its columns hold", ",".join(default_classes), key=f"{key}.pred_classes",
                                help="Comma-separated; one class (melanoma) for a binary head.")
        id_col = st.text_input("Id column (blank: guessed)", key=f"{key}.pred_id").strip()
        cols = st.text_input("Probability columns (blank: guessed)", key=f"{key}.pred_cols").strip()
        if st.button("Add file", key=f"{key}.pred_add") and path:
            spec = {"path": str(Path(path).expanduser()),
                    "classes": tuple(c.strip() for c in classes.split(",") if c.strip()) or tuple(default_classes),
                    "id_column": id_col or None,
                    "columns": tuple(c.strip() for c in cols.split(",") if c.strip()) or None}
            try:
                m = load_predictions(spec, ds.domain)
                cov = m.coverage([r.id for r in ds.records])
                if cov["matched"] == 0:
                    raise LesionError(f"{Path(spec['path']).name} names none of the {len(ds)} images of {ds.name} "
                                      f"({cov['unused']} rows; ids are matched by file name without folder or "
                                      "suffix).")
                label = PREFIX + m.name
                store[label] = spec
                st.success(f"Added {label}: {coverage_words(m, [r.id for r in ds.records])}.")
            except LesionError as e:
                st.error(str(e))
            except Exception as e:  # a user's file can fail in ways no library documents
                st.error(f"This predictions file cannot be used: {e}")
        if store and st.button("Remove all files", key=f"{key}.pred_clear"):
            store.clear()
    out: dict[str, PredictionsMember] = {}
    for label, spec in list(store.items()):
        try:
            out[label] = load_predictions(spec, ds.domain)
        except LesionError as e:
            st.sidebar.error(f"{label}: {e}")
    return out


def show_coverage(members: dict[str, PredictionsMember], chosen: Sequence[str], ids: Sequence[str],
                  what: str = "images") -> bool:
    """A caption per chosen file (note and coverage); an error when a file lacks images that are to be scored.
    Returns True when every chosen file covers ``ids``."""
    ok = True
    for label in chosen:
        if label not in members:
            continue
        m = members[label]
        cov = m.coverage(ids)
        if cov["missing"]:
            ok = False
            st.error(f"{label}: {coverage_words(m, ids, what)}. Every scored image needs a row; add the missing "
                     "rows or score without this file.")
        else:
            st.caption(f"{label}: {coverage_words(m, ids, what)}.")
    return ok
