"""Streamlit glue of the Embedding map page: the per-image frame the map is drawn from, fixed colours per
category, the plotly figure, and the chart selection -> rows mapping. The maths (features, UMAP / PCA, nearest
neighbours, outcomes) is in :mod:`lesion.analyse.embedding`; the functions here other than the cached ones are
pure (no widget), so they are unit-tested without a page."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from lesion.analyse.embedding import Projection, outcomes, project
from lesion.analyse.label_issues import label_issue_columns
from lesion.analyse.slices import MAX_LEVELS, group_columns, make_groups
from ui.charts import fit

#: Colour-by choices that every map offers (then the data set's metadata and image-derived columns).
BASE_COLOURS = {"label": "truth label", "outcome": "error at the threshold in use", "prob": "predicted probability",
                "label_issue_score": "label-issue score (cleanlab)", "split": "held-out / training"}
#: Colour-by choices drawn on a continuous scale (the others are categories).
CONTINUOUS = frozenset({"prob", "label_issue_score"})
#: Fixed colours of the fixed vocabularies: the same word is the same colour on every page run and data set.
FIXED_COLOURS = {"true positive": "#2ca02c", "true negative": "#1f77b4", "false positive": "#ff7f0e",
                 "false negative": "#d62728", "unlabelled": "#b0b0b0", "no score": "#d9d9d9", "unknown": "#b0b0b0",
                 "held-out": "#1f77b4", "training": "#ff7f0e"}
#: Colours of the other categories, given out in the sorted order of the column's categories.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#ad494a", "#637939", "#7b4173", "#8c6d31", "#3182bd", "#e6550d", "#31a354")
POSITIVE, NEGATIVE = "#d62728", "#1f77b4"


def label_words(y: np.ndarray, target: str) -> np.ndarray:
    """Truth labels ``[N]`` (1 / 0 / NaN) as words: the target's name, ``not <target>``, ``unlabelled``."""
    y = np.asarray(y, dtype=np.float64)
    out = np.where(y == 1, target, f"not {target}").astype(object)
    out[~np.isfinite(y)] = "unlabelled"
    return out


def category_colours(values: Sequence[Any], fixed: Mapping[str, str] | None = None) -> dict[str, str]:
    """Category -> colour: :data:`FIXED_COLOURS` (and ``fixed``) for known words, then :data:`PALETTE` in the
    sorted order of the remaining categories, so the same column gives the same colours on every rerun (not the
    order in which points happen to come)."""
    known = {**FIXED_COLOURS, **dict(fixed or {})}
    cats = sorted({str(v) for v in values})
    out = {c: known[c] for c in cats if c in known}
    rest = [c for c in cats if c not in out]
    out.update({c: PALETTE[i % len(PALETTE)] for i, c in enumerate(rest)})
    return out


def map_frame(ids: Sequence[str], xy: np.ndarray, y: np.ndarray, prob: np.ndarray, threshold: float, target: str,
              training: frozenset | set = frozenset(), extra=None) -> pd.DataFrame:
    """One row per mapped image: ``row`` (its index in the features), ``id``, ``split`` (held-out / training),
    ``x``, ``y``, ``label`` (words), ``truth`` (1 / 0 / NaN), ``prob``, ``outcome`` at ``threshold``, then the
    columns of ``extra`` (a frame with an ``id`` column: metadata groups, label-issue scores…) joined by id."""
    df = pd.DataFrame({"row": np.arange(len(ids)), "id": [str(i) for i in ids],
                       "split": ["training" if i in training else "held-out" for i in ids],
                       "x": np.asarray(xy, dtype=np.float64)[:, 0], "y": np.asarray(xy, dtype=np.float64)[:, 1],
                       "label": label_words(y, target), "truth": np.asarray(y, dtype=np.float64),
                       "prob": np.asarray(prob, dtype=np.float64), "outcome": outcomes(y, prob, threshold)})
    if extra is not None and len(extra.columns) > 1:
        extra = extra.drop(columns=[c for c in extra.columns if c in df.columns and c != "id"])
        df = df.merge(extra, on="id", how="left")
    return df


def colour_columns(meta) -> list[str]:
    """Metadata / image-derived columns to colour by: the slices' group columns, and ``diagnosis`` when it has
    at most :data:`~lesion.analyse.slices.MAX_LEVELS` values (HAM10000's 7 codes; the slices skip it as a label)."""
    cols = group_columns(meta)
    if "diagnosis" in meta.columns and 2 <= meta["diagnosis"].dropna().astype(str).nunique() <= MAX_LEVELS:
        cols = ["diagnosis"] + cols
    return cols


def group_frame(meta, columns: Sequence[str]) -> pd.DataFrame:
    """:func:`lesion.analyse.slices.make_groups` of ``columns`` (numbers banded, missing = ``unknown``)."""
    return make_groups(meta, list(columns)) if columns else meta[["id"]].astype({"id": str})


def map_figure(df: pd.DataFrame, colour: str, title: str, colours: Mapping[str, str] | None = None,
               highlight: Sequence[int] = (), colour_title: str | None = None):
    """The embedding map: one point per row of ``df`` (:func:`map_frame`), coloured by column ``colour``
    (categories with fixed colours and their n in the legend; :data:`CONTINUOUS` columns on a scale, missing
    values grey), training images drawn as ×, the rows of ``highlight`` ringed.

    Returns:
        ``(figure, trace_rows)``: ``trace_rows[k]`` lists the frame rows of trace ``k`` in point order (for
        :func:`selected_rows`); every point also carries its row as ``customdata``.
    """
    import plotly.graph_objects as go

    df = df.reset_index(drop=True)  # positions index the symbols below
    fig = go.Figure()
    trace_rows: list[list[int]] = []
    symbols = np.where(df["split"].to_numpy() == "training", "x", "circle")

    def hover(sub: pd.DataFrame) -> list[str]:
        return [f"<b>{i}</b><br>{lab} · p {p:.3f} · {o}<br>{s}" + (f"<br>{colour}: {v}" if colour not in
                                                                   ("label", "prob", "outcome", "split") else "")
                for i, lab, p, o, s, v in zip(sub["id"], sub["label"], sub["prob"], sub["outcome"], sub["split"],
                                              sub[colour])]

    def add(sub: pd.DataFrame, name: str, marker: dict, showlegend: bool = True) -> None:
        idx = sub.index.to_numpy()
        fig.add_trace(go.Scattergl(x=sub["x"], y=sub["y"], mode="markers", name=name, showlegend=showlegend,
                                   customdata=sub["row"].to_numpy()[:, None], text=hover(sub),
                                   hovertemplate="%{text}<extra></extra>",
                                   marker={"size": 8, "opacity": 0.85, "symbol": symbols[idx].tolist(), **marker}))
        trace_rows.append([int(r) for r in sub["row"]])

    if colour in CONTINUOUS:
        v = pd.to_numeric(df[colour], errors="coerce")
        ok = v.notna().to_numpy()
        if ok.any():
            add(df[ok], colour_title or colour, {"color": v[ok].to_numpy(), "colorscale": "Viridis",
                                                 "showscale": True, "colorbar": {"title": colour_title or colour}},
                showlegend=False)
        if (~ok).any():
            add(df[~ok], f"no value (n={int((~ok).sum())})", {"color": FIXED_COLOURS["unknown"]})
    else:
        values = df[colour].astype(str)
        colours = dict(colours or category_colours(values))
        for cat in sorted(values.unique(), key=lambda c: (c in ("unknown", "unlabelled", "no score"), c)):
            sub = df[(values == cat).to_numpy()]
            add(sub, f"{cat} (n={len(sub)})", {"color": colours.get(cat, FIXED_COLOURS["unknown"])})
    if len(highlight):
        sub = df[df["row"].isin([int(r) for r in highlight]).to_numpy()]
        add(sub, f"picked (n={len(sub)})", {"color": "rgba(0,0,0,0)", "size": 15,
                                              "line": {"color": "black", "width": 2}})
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False, scaleanchor="x", scaleratio=1)
    fig.update_layout(dragmode="lasso", clickmode="event+select")
    return fit(fig, title, height=620, width_chars=110), trace_rows


def selected_rows(points: Sequence[Mapping[str, Any]] | None, trace_rows: Sequence[Sequence[int]]) -> list[int]:
    """Frame rows of the points a chart selection holds (click, box or lasso), sorted and unique.

    Each point's ``customdata`` (its row, as :func:`map_figure` sets it) is used when present; else its
    ``curve_number`` and ``point_index`` (``point_number``) are looked up in ``trace_rows``. Points that match
    neither are ignored."""
    out: set[int] = set()
    for p in points or []:
        cd = p.get("customdata")
        if cd is not None:
            v = cd[0] if isinstance(cd, (list, tuple, np.ndarray)) and len(cd) else cd
            try:
                out.add(int(v))
                continue
            except (TypeError, ValueError):
                pass
        curve = p.get("curve_number")
        index = p.get("point_index", p.get("point_number"))
        if curve is None or index is None:
            continue
        if 0 <= int(curve) < len(trace_rows) and 0 <= int(index) < len(trace_rows[int(curve)]):
            out.add(int(trace_rows[int(curve)][int(index)]))
    return sorted(out)


# ------------------------------------------------------------------------------------------ cached steps
@st.cache_data(show_spinner="Laying out the map…", max_entries=16)
def projection_cached(key: tuple, method: str, n_neighbors: int, min_dist: float, _features: np.ndarray) -> Projection:
    """:func:`lesion.analyse.embedding.project` (UMAP also cached on disk), per ``key`` (member identity, data
    content, ids) and settings, so selecting points (a rerun) does not lay the map out again."""
    return project(_features, method, n_neighbors=n_neighbors, min_dist=min_dist, seed=0)


@st.cache_data(show_spinner="Label-issue scores (cleanlab)…", max_entries=16)
def label_issues_cached(ids: tuple[str, ...], y: np.ndarray, prob: np.ndarray) -> pd.DataFrame:
    """:func:`lesion.analyse.label_issues.label_issue_columns` (rows only for labelled images of both classes)."""
    return label_issue_columns(list(ids), y, prob)
