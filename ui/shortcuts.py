"""Streamlit glue of the Shortcut audit page: the lung fields, the audit run in stoppable parts, the measured time of
one CAM pass, the scatter and its click → image id. The maths is in :mod:`lesion.analyse.shortcuts`."""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import streamlit as st

from lesion.errors import LesionError

from lesion.analyse.shortcuts import References, outside_table
from lesion.segment.lungs import LungFields
from ui.charts import fit
from ui.classify import CAM_LOCK, load_classifier_cached, member_identity
from ui.segment import load_segmenter_cached
from ui.state import current_compute

#: Fixed colours per outcome (the Explain page's): the legend never swaps between runs.
COLOURS = {"right": "#1f77b4", "wrong": "#d62728"}
#: Images per cached part of a page run (a Stop keeps the parts before it; the library caches every batch too).
PART = 32


def lung_fields(name: str) -> LungFields:
    """:class:`LungFields` of a lung checkpoint, its network loaded (once per server) by the Segmentation page's
    cached loader when a mask has to be predicted."""
    return LungFields(name, loader=lambda: load_segmenter_cached(name))


def _ids_key(records: Sequence[Any]) -> str:
    """The images and their metadata (a model that reads age / sex / site predicts differently without them)."""
    text = "\n".join(f"{r.id}|{sorted((str(k), str(v)) for k, v in dict(r.meta or {}).items())}" for r in records)
    return hashlib.sha1(text.encode()).hexdigest()


def audit_table(ds, ref: str, method: str, records: Sequence[Any], refs: References,
                progress: Callable[[int, int], None] | None = None):
    """:func:`lesion.analyse.shortcuts.outside_table` of ``records`` (kept for the session per data set, model and
    its weights, method, lung network and images; computed in parts of :data:`PART` under the CAM lock, so other
    sessions' heatmaps are not held up for the whole run)."""
    import pandas as pd

    lungs = refs.lungs.identity if refs.lungs is not None else ""
    key = (current_compute().key(), ds.fingerprint(), ref, member_identity(ref), method, lungs, _ids_key(records))
    store = st.session_state.setdefault("_shortcut_tables", {})
    if key in store:
        return store[key]
    model, card = load_classifier_cached(ref)
    recs = list(records)
    out = []
    for start in range(0, len(recs), PART):
        part = recs[start:start + PART]

        def sub(d: int, _t: int, offset: int = start) -> None:
            if progress is not None:
                progress(offset + d, len(recs))

        with CAM_LOCK:
            out.append(outside_table(model, card, part, method, progress=sub, references=refs))
    table = pd.concat(out, ignore_index=True) if out else outside_table(model, card, [], method, references=refs)
    store[key] = table
    return table


@st.cache_data(show_spinner="Measuring how long one lung mask takes here…", max_entries=8)
def _measure_lung_ms(name: str, path: str) -> float:
    from lesion.data.io import read_image

    seg = load_segmenter_cached(name)
    image = read_image(path)
    seg(image)  # warm-up
    t0 = time.perf_counter()
    seg(image)
    return (time.perf_counter() - t0) * 1000.0


def measured_lung_ms(name: str, records: Sequence[Any]) -> float:
    """Measured milliseconds of one lung mask of network ``name`` on this machine (0 without images)."""
    recs = list(records)
    try:
        return _measure_lung_ms(name, str(recs[0].image_path)) if recs else 0.0
    except LesionError:
        return 0.0


def clicked_id(event: Any, ids_by_curve: Mapping[int, Sequence[str]] | None = None) -> str | None:
    """The image id of the first point selected in a plotly chart (``st.plotly_chart(..., on_select="rerun")``'s
    return value, or its ``selection`` dict): the point's ``customdata[0]`` when the figure carries the ids there,
    else ``ids_by_curve[curve_number][point_index]``; None when nothing (or nothing known) is selected."""
    if not event:
        return None
    selection = event.get("selection", event) if isinstance(event, Mapping) else getattr(event, "selection", None)
    if selection is None:
        return None
    points = selection.get("points") if isinstance(selection, Mapping) else getattr(selection, "points", None)
    for p in points or []:
        custom = p.get("customdata")
        if isinstance(custom, (list, tuple)) and custom and custom[0] is not None:
            return str(custom[0])
        if isinstance(custom, str):
            return custom
        curve, index = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        ids = (ids_by_curve or {}).get(curve)
        if ids is not None and index is not None and 0 <= int(index) < len(ids):
            return str(ids[int(index)])
    return None


def scatter_figure(frame, y: str, title: str):
    """Outside mass (x) against ``y`` (``prob`` or ``loss``), one colour per outcome (right / wrong, fixed), the
    image id in each point's ``customdata`` (for :func:`clicked_id`)."""
    import plotly.express as px

    shown = frame.assign(outcome=np.where(frame["correct"].astype(bool), "right", "wrong"))
    labels = {"outside": "CAM mass outside the mask", "prob": "probability (positive class)",
              "loss": "loss (binary cross-entropy)", "outcome": "prediction"}
    fig = px.scatter(shown, x="outside", y=y, color="outcome", color_discrete_map=COLOURS,
                     category_orders={"outcome": ["right", "wrong"]}, custom_data=["id"], hover_name="id",
                     hover_data={"mask_source": True, "label": True}, labels=labels,
                     range_x=[-0.02, 1.02], range_y=[-0.02, 1.02] if y == "prob" else None)
    return fit(fig, title, height=460, legend_title="prediction")
