"""Explain: class heatmaps (Grad-CAM family) and the multi-task attention mask for one image, scored
against the lesion; the attention-agreement score and how well low agreement predicts a wrong answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from lesion.errors import LesionError
from lesion.explain.agreement import agreement_score, wrongness_auc
from lesion.explain.attention import ATTENTION, heatmap_scores, outline_panel
from lesion.explain.cam import FAST_METHODS, METHODS
from lesion.explain.overlay import draw_outline
from lesion.infer.evaluate import label_vector
from lesion.metrics import ci_verdict
from lesion.review import wrong_predictions
from ui.charts import fit
from ui.classify import run_gate
from ui.compute import heatmaps_where, needs_this_machine, require_compute
from ui.explain import (
    agreement_table,
    class_options,
    classifier_picker,
    explain_image_cached,
    meta_key,
    no_classifier_message,
    probabilities,
    segment,
    try_load_classifier,
)
from ui.state import in_options, keep, page_setup, require_dataset, read_sample, st_progress
from ui.trust import mask_labels, show_model_notes, subset_choice

finish_page = page_setup()
st.title("Explain")
st.caption(
    "Where does a classifier look? Class activation maps (pytorch-grad-cam) and, for multi-task models, the "
    "network's own attention mask. Each map is thresholded (Otsu) and opened into regions: red outline, green box; "
    "cyan = the lesion. Maps are shown at the network's input view (its centre crop and size)."
)

ds = require_dataset(finish_page)
compute = require_compute(finish_page)

choices = classifier_picker(ds.domain, key="explain")
if not choices:
    no_classifier_message(ds.domain)
    finish_page(stop=True)

c1, c2, c3 = st.columns([2, 2, 1])
name = c1.selectbox("Classifier", list(choices), key=keep("explain_model", next(iter(choices)), valid=in_options(list(choices))))
loaded = try_load_classifier(choices[name])
if loaded is None:
    finish_page(stop=True)
model, card = loaded
show_model_notes([card], ds)
options = class_options(card)
class_label = c2.selectbox("Class to explain", list(options), key=f"explain_class.{name}")
radius = int(c3.number_input("Opening radius (px)", 0, 15, key=keep("explain_radius", 3, valid=int),
                             help="Morphological opening after the Otsu threshold removes specks thinner than 2r+1. "
                                  "The same radius draws the outlines and scores the maps (here and over the data set)."))
methods = st.multiselect(
    "Methods", list(METHODS), key=keep("explain_methods", ["gradcam", "gradcam++", "eigencam"],
                                       valid=lambda v: [m for m in (v or []) if m in METHODS]),
    help="Score-CAM runs one forward pass per channel of the target layer: seconds to minutes on a CPU.",
)
if "scorecam" in methods:
    st.warning("Score-CAM runs one forward pass per channel of the target layer (1280 for EfficientNet-Lite0): "
               "minutes per image on a CPU (bench/bench_cam.py), seconds on a GPU.")
aug_smooth = st.checkbox("TTA-smoothed maps (flips × brightness, averaged)", key=keep("explain_smooth", False),
                         disabled=compute.remote)
if compute.remote:
    st.caption(needs_this_machine("TTA-smoothed maps") + " The model server computes plain maps.")
    aug_smooth = False

ids = [r.id for r in ds.records]
wanted = st.session_state.get("explain_image_id")
record = ds.by_id(st.selectbox("Image", ids, index=ids.index(wanted) if wanted in ids else 0, key="explain_image"))
try:
    image, truth = read_sample(str(record.image_path), str(record.mask_path) if record.mask_path else None)
except LesionError as e:
    st.error(f"Cannot read {record.id}: {e}")
    finish_page(stop=True)
meta = meta_key(record.meta)

# The reference the heatmaps are scored against: the truth mask, else an Otsu segmentation.
reference_name = "ground truth"
if truth is None:
    truth = segment(image, str(record.image_path), "otsu", ds.domain)
    reference_name = "Otsu segmentation (no truth mask)"
try:
    res = explain_image_cached(choices[name], str(record.image_path), image, truth, meta, tuple(methods),
                               options[class_label], aug_smooth, mask_key=reference_name)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

probs = probabilities(res["logits"], card)
st.caption(f"Maps and prediction computed on **{heatmaps_where(compute)}**.")
st.markdown("**Prediction**: " + " · ".join(f"{c} {p:.3f}" for c, p in probs.items())
            + (f" · truth: {record.diagnosis}" if record.diagnosis else ""))

maps = dict(res["heats"])
if res["attention"] is not None:
    maps[ATTENTION] = res["attention"]
ref = res["mask"]
panels = [("image", res["view"])]
panels += [(m, outline_panel(res["view"], h, radius, truth=ref)) for m, h in maps.items()]
panels.append((reference_name, draw_outline(res["view"], ref, color=(0, 255, 255), box=False)))
per_row = min(len(panels), 5)
for start in range(0, len(panels), per_row):
    cols = st.columns(per_row)
    for col, (cap, img) in zip(cols, panels[start:start + per_row]):
        col.image(img, caption=cap, width="stretch")
if res["attention"] is None:
    st.caption("This model has no attention mask (only multi-task models have one).")

rows = [{"map": m, **heatmap_scores(h, ref, radius)} for m, h in maps.items()]
if rows:
    st.markdown(f"**Heatmap vs {reference_name}** (the maps drawn above, class '{class_label}'): IoU of the "
                "thresholded map, pointing game (the hottest pixel inside the lesion), share of the heat inside the lesion")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("iou", "pointing_game", "heat_inside")})

# ------------------------------------------------------------------ attention agreement
st.divider()
st.subheader("Attention agreement")
st.caption("Mean of: 1 / number of regions of the thresholded map, 1 − spread of the heat, share of heat on the "
           "lesion, and (multi-task) IoU of the heatmap's regions with the attention mask's. A paper's hypothesis: "
           "low agreement flags a likely wrong prediction. Below, it is measured on this data set.",
           help="The agreement score and the hypothesis are those of seed 003 (Fig. 14).")
if res["heats"]:
    first = next(iter(res["heats"]))
    score = agreement_score(res["heats"][first], res["attention"], ref, radius)
    a1, a2 = st.columns([1, 3])
    if score["n_components"] == 0:  # the map drawn has no region: say so rather than show a mean of leftovers
        a1.metric(f"Agreement ({first}, '{class_label}')", "empty map",
                  help="The thresholded map has no region (a flat or all-zero heatmap): it points at nothing.")
    else:
        a1.metric(f"Agreement ({first}, '{class_label}')", f"{score['agreement']:.2f}")
    a2.dataframe(pd.DataFrame([score]), hide_index=True, width="stretch")
else:
    st.info("Choose at least one CAM method.")

method_all = st.selectbox("CAM method for the data set", list(FAST_METHODS),
                          key=keep("explain_ds_method", FAST_METHODS[0], valid=in_options(list(FAST_METHODS))))
labels_target = card.target or "melanoma"
run_gate("explain", "Score agreement over the whole data set",
         f"Computes one {method_all} map per image (the map of its predicted class, opening radius {radius}).",
         finish_page, identity=ds.fingerprint())
update, clear = st_progress("Heatmaps…")
try:
    table = agreement_table(ds, choices[name], method_all, progress=update, radius=radius)
except LesionError as e:
    clear()
    st.error(str(e))
    finish_page(stop=True)
clear()
st.caption(f"Maps of the data set computed on **{heatmaps_where(compute)}**.")
keep_ids, on_what = subset_choice([card], ds, "explain")
y = mask_labels(label_vector(ds.records, labels_target), list(table["id"]), keep_ids)
wrong, labelled = wrong_predictions(table["class_index"], y)
table = table.assign(wrong=wrong, labelled=labelled, empty_map=table["n_components"] == 0)
st.caption(f"Each image's **{method_all}** map of its **predicted class**, opening radius {radius}; scored on "
           f"{on_what}. {int(table['empty_map'].sum())} maps have no region at all (listed as empty_map).")
try:
    auc, lo, hi = wrongness_auc(table["agreement"][labelled], wrong[labelled])
    verdict = ci_verdict(lo, hi)
    st.metric("ROC-AUC of low agreement for 'prediction is wrong'", f"{auc:.3f}",
              help="0.5 = agreement says nothing about errors; above 0.5: wrong predictions have lower agreement.")
    st.caption(f"95% CI {lo:.3f}–{hi:.3f} · {int(wrong[labelled].sum())} wrong of {int(labelled.sum())} labelled images")
    words = {
        "supports": f"**This data supports the hypothesis**: the whole 95% CI ({lo:.3f}–{hi:.3f}) lies above 0.5, "
                    "so wrong predictions tend to have lower agreement.",
        "contradicts": f"**This data contradicts the hypothesis**: the whole 95% CI ({lo:.3f}–{hi:.3f}) lies below "
                       "0.5, so here wrong predictions tend to have *higher* agreement; low agreement does not flag "
                       "errors for this model.",
        "inconclusive": f"**Inconclusive on this data**: the 95% CI ({lo:.3f}–{hi:.3f}) contains 0.5, so agreement "
                        "neither flags errors nor the opposite measurably here.",
    }[verdict]
    (st.success if verdict == "supports" else st.warning if verdict == "contradicts" else st.info)(words)
except LesionError as e:
    st.info(f"No AUC: {e}")
fig = px.histogram(table[labelled], x="agreement", color="wrong", barmode="overlay", nbins=20, opacity=0.6,
                   labels={"wrong": "prediction wrong"})
st.plotly_chart(fit(fig, f"Agreement of right and wrong predictions ({int(labelled.sum())} labelled images)",
                    height=400, legend_title="prediction wrong"), width="stretch")
st.dataframe(table, hide_index=True, width="stretch")
finish_page()
