"""Explain: class heatmaps (Grad-CAM family) and the multi-task attention mask for one image, scored
against the lesion; the attention-agreement score and how well low agreement predicts a wrong answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from lesion.errors import LesionError
from lesion.explain.agreement import agreement_score, agreement_verdict
from lesion.explain.attention import ATTENTION, heatmap_scores, outline_panel
from lesion.explain.cam import FAST_METHODS, methods_for
from lesion.explain.overlay import draw_outline
from lesion.infer.evaluate import label_vector
from lesion.metrics import ONE_CLASS_AUC
from lesion.review import wrong_predictions
from ui.charts import fit, image_grid
from ui.classify import run_gate, threshold_by_rule
from ui.compute import heatmaps_where, needs_this_machine, require_compute
from ui.explain import (
    agreement_table,
    class_options,
    classifier_picker,
    explain_image_cached,
    measured_cam_ms,
    meta_key,
    no_classifier_message,
    probabilities,
    segment,
    try_load_classifier,
)
from ui.state import in_options, keep, page_setup, require_dataset, read_sample
from ui.scope import human_time, scope_choice, stoppable, stopped_note
from ui.tables import pinned
from ui.trust import show_model_notes

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
# a member without gradients (an imported ONNX / TorchScript network) gets the gradient-free heatmap only
differentiable = model is None or getattr(getattr(model, "net", model), "differentiable", True)
offered = methods_for(differentiable)
methods = st.multiselect(
    "Methods", list(offered), key=keep("explain_methods" if differentiable else "explain_methods.nograd",
                                       ["gradcam", "gradcam++", "eigencam"] if differentiable else ["occlusion"],
                                       valid=lambda v: [m for m in (v or []) if m in offered]),
    help="Score-CAM runs one forward pass per channel of the target layer: seconds to minutes on a CPU. "
         "Occlusion (gradient-free) masks patches of the input and measures how much the score drops.",
)
if not differentiable:
    st.caption("This model gives no gradients (an imported ONNX or TorchScript file): its heatmap is occlusion "
               "sensitivity, scored against the lesion mask the same way as the CAMs.")
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
image_grid(panels)
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

ds_methods = list(FAST_METHODS) if differentiable else list(offered)
method_all = st.selectbox("Heatmap method for the data set", ds_methods,
                          key=keep("explain_ds_method" if differentiable else "explain_ds_method.nograd", ds_methods[0],
                                   valid=in_options(ds_methods)))
labels_target = card.target or "melanoma"
scope = scope_choice([card], ds, "explain")
keep_ids, on_what = None, scope.words
cam_ms = float("nan") if compute.remote else measured_cam_ms(choices[name], method_all, scope.records)
timed = (f"about {human_time(len(scope.records) * cam_ms / 1000.0)} here (measured: {cam_ms:.0f} ms per map)"
         if np.isfinite(cam_ms) else "on the model server, not timed here" if compute.remote else
         f"not timed before Run ({method_all}: minutes per image on a CPU)")
st.caption(f"**This run computes one {method_all} map for each of {len(scope.records)} images: {timed}** (the map "
           f"of its predicted class, opening radius {radius}"
           + (f"; the {scope.not_computed} training images are not computed" if scope.not_computed else "")
           + "). A run can be stopped: the maps finished stay cached.")
stopped_note("explain")
run_gate("explain", "Score agreement over the data set",
         f"Computes one {method_all} map per image (the map of its predicted class, opening radius {radius}).",
         finish_page, identity=ds.fingerprint())
table = stoppable("explain", "Heatmaps…", lambda update: agreement_table(
    ds, choices[name], method_all, progress=update, radius=radius, records=scope.records), finish_page)
st.caption(f"Maps of the data set computed on **{heatmaps_where(compute)}**.")
y = label_vector(scope.records, labels_target)
binary = len(card.classes) == 1
if binary:  # "wrong" at the threshold in use (the session's rule on this model's one-view probabilities)
    p_pos = 1.0 / (1.0 + np.exp(-table["logit"].to_numpy(dtype=np.float64)))
    thr, thr_words = threshold_by_rule(y, p_pos)
    pred_class = np.where(np.isfinite(p_pos), (p_pos >= thr).astype(float), np.nan)
    wrong_words = (f"**wrong** = the model's probability (one view, the image its map explains) on the wrong side of "
                   f"the {thr_words}, the session's threshold rule")
else:
    pred_class = table["class_index"].to_numpy(dtype=np.float64)
    wrong_words = "**wrong** = the predicted (argmax) class differs from the label (a multi-class head has no threshold)"
wrong, labelled = wrong_predictions(pred_class, y)
table = table.assign(predicted=pred_class, wrong=wrong, labelled=labelled, empty_map=table["n_components"] == 0)
table.insert(1, "split", [scope.split_of(i) for i in table["id"]])
st.caption(f"Each image's **{method_all}** map of its **predicted class**, opening radius {radius}; scored on "
           f"{on_what}; {wrong_words}. {int(table['empty_map'].sum())} maps have no region at all (listed as "
           "empty_map). A map must be on the lesion: with a lesion mask, agreement is scaled by the share of heat "
           "on it (a compact map wholly off the lesion scores 0).")
res = agreement_verdict(table["agreement"][labelled], wrong[labelled], pred_class[labelled])
auc, lo, hi = res["auc"], res["lo"], res["hi"]
if not np.isfinite(auc):
    st.info(f"No AUC: {int(wrong[labelled].sum())} wrong of {int(labelled.sum())} labelled images; the AUC "
            f"{ONE_CLASS_AUC} (right and wrong predictions).")
else:
    verdict, ctl = res["verdict"], res["control"]
    st.metric("ROC-AUC of low agreement for 'prediction is wrong'", f"{auc:.3f}",
              help="0.5 = agreement says nothing about errors; above 0.5: wrong predictions have lower agreement.")
    st.caption(f"95% CI {lo:.3f}–{hi:.3f} · {int(wrong[labelled].sum())} wrong of {int(labelled.sum())} labelled "
               f"images · control (right / wrong shuffled within each predicted class, what the predicted class "
               f"alone gives, as for an untrained network): {ctl['mean']:.3f} (95% {ctl['lo']:.3f}–{ctl['hi']:.3f})")
    words = {
        "supports": f"**This data supports the hypothesis**: the whole 95% CI ({lo:.3f}–{hi:.3f}) lies above 0.5 and "
                    f"above the control, so wrong predictions tend to have lower agreement.",
        "contradicts": f"**This data contradicts the hypothesis**: the whole 95% CI ({lo:.3f}–{hi:.3f}) lies below "
                       "0.5 and below the control, so here wrong predictions tend to have *higher* agreement; low "
                       "agreement does not flag errors for this model.",
        "inconclusive": f"**Inconclusive on this data**: {res['reason']}.",
    }[verdict]
    (st.success if verdict == "supports" else st.warning if verdict == "contradicts" else st.info)(words)
    per = pd.DataFrame(res["per_class"]).rename(columns={"class": "predicted class", "n": "images"})
    st.markdown("**Within each predicted class** (the same statistic, so the class cannot make it)")
    st.dataframe(per, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("auc", "lo", "hi")})
COLOURS = {"right": "#1f77b4", "wrong": "#d62728"}  # fixed per category: the legend never swaps between runs
hist = table[labelled].assign(outcome=np.where(wrong[labelled], "wrong", "right"))
fig = px.histogram(hist, x="agreement", color="outcome", barmode="overlay", nbins=20, opacity=0.6,
                   color_discrete_map=COLOURS, category_orders={"outcome": ["right", "wrong"]},
                   labels={"outcome": "prediction"})
st.plotly_chart(fit(fig, f"Agreement of right and wrong predictions ({int(labelled.sum())} labelled images)",
                    height=400, legend_title="prediction"), width="stretch")
st.dataframe(table, hide_index=True, width="stretch", column_config=pinned(table.columns))
finish_page()
