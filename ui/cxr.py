"""Streamlit glue of the Chest X-ray page: model list, cached heatmaps, the ROC figure and the AUC table.

The work is in :mod:`lesion.classify.cxr` (label sets, labels per model), :func:`lesion.explain.cam.label_heatmap`
and :mod:`lesion.metrics` (per-finding ROC and AUC); this module only caches and draws.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lesion.card import ModelCard
from lesion.explain.cam import label_heatmap
from lesion.metrics import ONE_CLASS_AUC, label_auc_table, label_curve_table
from lesion.segment.lungs import lung_model_names
from ui.classify import CAM_LOCK, available_cards, load_classifier_cached, member_identity
from ui.compute import client, served_card
from ui.state import current_compute


def cxr_classifier_cards() -> list[ModelCard]:
    """Chest X-ray classifier cards (multi-label findings or tuberculosis) in ``weights/``, or served by the
    chosen model server."""
    return [c for c in available_cards("cxr") if c.task == "classification"]


def lung_segmenter_names() -> list[str]:
    """The lung-field networks (:func:`lesion.segment.lungs.lung_model_names`)."""
    return lung_model_names()


def label_heat(ref: str, image_key: str, _image: np.ndarray, class_index: int, method: str) -> np.ndarray:
    """CAM of one finding over one radiograph, on this machine or by the model server (cached per backend, model
    and its weights' identity, image, finding and method: a replaced checkpoint is recomputed)."""
    return _label_heat(current_compute().key(), ref, member_identity(ref), image_key, _image, class_index, method)


@st.cache_data(show_spinner="Computing the heatmap…", max_entries=64)
def _label_heat(compute_key: tuple, ref: str, identity: tuple, image_key: str, _image: np.ndarray,
                class_index: int, method: str) -> np.ndarray:
    if compute_key[0] == "remote":
        return remote_label_heat(ref, _image, class_index, method)
    model, card = load_classifier_cached(ref)
    with CAM_LOCK:
        return label_heatmap(model, card, _image, class_index, method)


def remote_label_heat(name: str, image: np.ndarray, class_index: int, method: str) -> np.ndarray:
    """:func:`lesion.explain.cam.label_heatmap` computed by the model server: the map at the network's view,
    resized here to the radiograph (float32 ``[H, W]``). Raises ServerError (one line)."""
    import cv2

    card = served_card(name)
    target = 1 if len(card.classes or ()) <= 1 else int(class_index)  # one-logit heads: the positive class
    heat = client().explain(name, image, None, [method], target)["heats"][method]
    h, w = image.shape[:2]
    return cv2.resize(np.asarray(heat, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def finding_roc_figure(y: np.ndarray, probs: np.ndarray, classes: list[str]):
    """Per-finding ROC curves on one plotly chart (findings without both classes are left out); None if none."""
    import plotly.express as px

    curves = label_curve_table(y, probs, classes)
    if curves.empty:
        return None
    fig = px.line(curves, x="x", y="y", color="label",
                  labels={"x": "false-positive rate (1 − specificity)", "y": "true-positive rate (sensitivity)"})
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": "grey"})
    fig.update_layout(height=460, legend_title_text="finding", margin={"t": 30})
    return fig


def finding_auc_table(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per finding: images scored, positives, AUC with bootstrap 95% CI (NaN without both classes, the
    ``note`` column then says so)."""
    table = label_auc_table(y, probs, classes, n_boot=500)
    table["note"] = ["" if np.isfinite(a) else ONE_CLASS_AUC for a in table["auc"].to_numpy(dtype=float)]
    return table.rename(columns={"label": "finding", "n": "images", "auc": "AUC", "ci_lo": "95% CI low",
                                 "ci_hi": "95% CI high"})
