"""Streamlit glue of the Chest X-ray page: model list, cached predictions and heatmaps, ROC figure.

The work is in :mod:`lesion.classify.cxr` (label sets, labels per model, per-label heatmaps) and
:mod:`lesion.train.cxr` (per-label AUC); this module only caches and draws.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st

from ui.classify import load_classifier_cached

_CAM_LOCK = threading.Lock()  # CAM hooks live on the shared cached model: one computation at a time


def cxr_classifier_cards() -> list[dict]:
    """Chest X-ray classifier cards in ``weights/`` (multi-label findings or tuberculosis)."""
    from lesion.weights import list_weights

    return [c for c in list_weights(domain="cxr") if c.get("task") == "classification"]


def lung_segmenter_names() -> list[str]:
    from lesion.weights import list_weights

    return [c["name"] for c in list_weights(domain="cxr", task="segmentation")]


@st.cache_data(show_spinner="Computing the heatmap…", max_entries=64)
def label_heat(ref: str, image_key: str, _image: np.ndarray, class_index: int, method: str) -> np.ndarray:
    """CAM of one finding over one radiograph (cached per model, image, finding and method)."""
    from lesion.classify.cxr import label_heatmap

    model, card = load_classifier_cached(ref)
    with _CAM_LOCK:
        return label_heatmap(model, card, _image, class_index, method)


def roc_figure(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    """Per-finding ROC curves on one plotly chart (findings without both classes are left out)."""
    import plotly.express as px
    from sklearn.metrics import roc_auc_score, roc_curve

    frames = []
    for j, c in enumerate(classes):
        ok = np.isfinite(y[:, j])
        t, s = y[ok, j], probs[ok, j]
        if len(np.unique(t)) < 2:
            continue
        fpr, tpr, _ = roc_curve(t, s)
        frames.append(pd.DataFrame({"fpr": fpr, "tpr": tpr,
                                    "finding": f"{c} (AUC {roc_auc_score(t, s):.3f}, n+={int(t.sum())})"}))
    if not frames:
        return None
    fig = px.line(pd.concat(frames), x="fpr", y="tpr", color="finding",
                  labels={"fpr": "false-positive rate (1 − specificity)", "tpr": "true-positive rate (sensitivity)"})
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "grey"})
    fig.update_layout(height=460, legend_title_text="finding", margin={"t": 30})
    return fig


def auc_table(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per finding: images scored, positives, AUC with bootstrap 95% CI (None without both classes)."""
    from lesion.train.cxr import per_label_auc

    rows = []
    for j, c in enumerate(classes):
        ok = np.isfinite(y[:, j])
        res = per_label_auc(y[ok, j][:, None], probs[ok, j][:, None], [c], ci=True)[c]
        lo, hi = (res.get("auc_ci") or [None, None])
        rows.append({"finding": c, "images": int(ok.sum()), "positives": res["positives"], "AUC": res["auc"],
                     "95% CI low": lo, "95% CI high": hi})
    return pd.DataFrame(rows)
