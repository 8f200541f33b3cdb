"""Streamlit glue of the research-instrument pages (Slices, Model diff): cached image-derived columns, member
scores from checkpoints (the sidebar's Compute, through :func:`ui.classify.run_ensemble`) or predictions files,
and the charts. The maths is in :mod:`lesion.analyse`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from lesion.analyse.image_features import image_features
from lesion.analyse.slices import SliceConfig, slice_table
from lesion.data.records import file_content_digest
from lesion.errors import ConfigError
from lesion.serving.backends import predict
from lesion.infer.evaluate import score
from lesion.infer.predictions import PredictionsMember
from ui.charts import fit
from ui.classify import run_ensemble


@st.cache_data(show_spinner="Image-derived columns (estimates and heuristics)…", max_entries=8)
def _image_columns(content_key: str, ids: tuple[str, ...], _ds, _records):
    return image_features(_records, _ds.domain)


def image_columns(content_key: str, ds, records=None):
    """:func:`lesion.analyse.image_features.image_features` of ``records`` (default: every image of the data
    set; the pages pass their scope), cached for the session and on disk by content."""
    recs = list(ds.records if records is None else records)
    return _image_columns(content_key, tuple(r.id for r in recs), ds, recs)


@st.cache_data(show_spinner="Reading the predictions file…", max_entries=32)
def _file_scores(path: str, digest: str, ds_key: str, ids: tuple[str, ...], target: str, _ds,
                 _records) -> tuple[np.ndarray, str]:
    """The file's probabilities of ``_records`` (the images in scope: a file of the held-out images only is
    enough), in their order."""
    m = PredictionsMember(path, classes=(target,))
    res = predict([m], list(_records), tta="none", cache=None)
    return res.probs[:, 0], m.note


def member_scores(ds, models: list[str], files: list[str], tta: str, target: str,
                  progress: Callable[[int, int], None] | None = None, records=None,
                  merge: str = "mean_prob") -> tuple[dict[str, np.ndarray], np.ndarray | None, list[str], str]:
    """``({member name: positive-class probability [N]}, the models' ensemble probability [N] or None, notes,
    where the models ran)`` over ``records`` of the data set (default: all; the pages pass their scope, held-out
    by default, and only those are computed). The models run as one ensemble (the session's TTA and ``merge``),
    so the ensemble's score is the one the Classification page shows; each file is one more member.

    Raises:
        LesionError: a file that cannot be read or lacks some images; a model that fails (one line).
    """
    scores: dict[str, np.ndarray] = {}
    notes: list[str] = []
    device = "predictions files"
    for f in files:
        p = Path(f).expanduser()
        if not p.is_file():
            raise ConfigError(f"Predictions file {p} does not exist.")
        recs = list(ds.records if records is None else records)
        s, note = _file_scores(str(p), file_content_digest(p, "sha256"), ds.content_fingerprint(),
                               tuple(r.id for r in recs), target, ds, recs)
        name = f"file: {p.stem}"  # never the name of a model in the same run
        scores[name if name not in scores else f"{name} ({len(scores)})"] = s
        notes.append(note)
    ensemble = None
    if models:
        res = run_ensemble(ds, list(models), tta, merge, progress=progress, records=records)
        for name, p in res.member_probs.items():
            scores[name] = np.asarray(score(p, res.classes, target), dtype=np.float64)
        ensemble = np.asarray(score(res.probs, res.classes, target), dtype=np.float64)
        device = res.device
    return scores, ensemble, notes, device


def styled_slices(table):
    """The slice table with groups too small to score greyed (their AUC is blank, never a number)."""
    def grey(row):
        return ["color: #9e9e9e" if row["too_small"] else "" for _ in row]

    return table.style.apply(grey, axis=1).format(
        {c: "{:.3f}" for c in ("auc", "ci_lo", "ci_hi", "sensitivity", "specificity", "ece")}, na_rep="—")


def forest_figure(table, title: str):
    """AUC with its 95% CI per group (rows too small to score left out and said so in the title)."""
    import plotly.graph_objects as go

    t = table[~table["too_small"]]
    labels = [f"{c}: {v} (n={n})" for c, v, n in zip(t["column"], t["value"], t["n"])]
    fig = go.Figure(go.Scatter(x=t["auc"], y=labels, mode="markers",
                               error_x={"type": "data", "symmetric": False, "array": t["ci_hi"] - t["auc"],
                                        "arrayminus": t["auc"] - t["ci_lo"]}))
    fig.add_vline(x=0.5, line_dash="dot", line_color="grey")
    fig.update_xaxes(title="ROC-AUC (95% bootstrap CI)", range=[0, 1])
    fig.update_yaxes(autorange="reversed")
    return fit(fig, title, height=max(300, 28 * len(t) + 120))


def slice_rows(y, s, groups, by, threshold, min_n, n_boot=500):
    """:func:`lesion.analyse.slices.slice_table` with the page's settings."""
    return slice_table(y, s, groups, by, threshold, SliceConfig(min_n=min_n, n_boot=n_boot))
