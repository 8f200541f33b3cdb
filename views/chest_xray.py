"""Chest X-ray decision support: the model's label set, per-finding ROC, and each finding's heatmap beside the
lung fields."""
from __future__ import annotations

import numpy as np
import streamlit as st

from lesion.errors import LesionError
from ui.state import in_options, keep, page_setup, read_sample, require_dataset, require_domain

finish_page = page_setup()
st.title("Chest X-ray")
st.caption("Multi-label findings (the small NIH classes merged into 'Other' or dropped, as each model was trained) "
           "and tuberculosis vs normal: per-finding ROC curves and AUCs, then any finding's Grad-CAM over the "
           "radiograph beside the lung fields the segmentation model finds.",
           help="The label sets follow seed 002's variants: merge, drop, all findings, or tuberculosis.")

ds = require_dataset(finish_page)
require_domain(ds, "cxr", "This page works on chest X-rays; the data set in the sidebar is dermoscopy. Pick a chest "
               "X-ray folder in the sidebar, or use the built-in synthetic radiographs.",
               "Use the demo chest X-rays", "cxr_use_demo", finish_page)

from lesion.classify.cxr import LabelSet, class_table, labels_for_model, view_warnings  # noqa: E402
from lesion.explain.attention import heatmap_scores  # noqa: E402
from lesion.segment.lungs import default_lung_model  # noqa: E402
from lesion.explain.overlay import draw_outline, heatmap_overlay, overlay_mask  # noqa: E402
from ui.classify import no_models_where, run_ensemble, run_gate  # noqa: E402
from ui.compute import heatmaps_where, ran_on, require_compute  # noqa: E402
from ui.cxr import (  # noqa: E402
    cxr_classifier_cards,
    finding_auc_table,
    finding_roc_figure,
    label_heat,
    lung_segmenter_names,
)
from ui.charts import fit  # noqa: E402
from ui.tables import pinned  # noqa: E402
from ui.segment import network_mask  # noqa: E402
from ui.scope import plan_caption, scope_choice, stoppable, stopped_note  # noqa: E402
from ui.trust import default_models, follows_dataset, model_label, show_model_notes  # noqa: E402

for note in list(ds.warnings) + view_warnings(ds.records):
    st.warning(note)

# ------------------------------------------------------------------------------------------ model
require_compute(finish_page)
cards = cxr_classifier_cards()
if not cards:
    st.info(f"No chest X-ray classifier {no_models_where('cxr')}. Train one with `lesion train cxr …` (see the "
            "README).")
    finish_page(stop=True)
by_name = {c.name: c for c in cards}
c1, c2 = st.columns([3, 1])
cxr_default = default_models(cards, ds, 1)[0]
cxr_follow = follows_dataset("cxr_model", ds, cards, [cxr_default])  # a demo pick never stays on real films
name = c1.selectbox("Model", list(by_name),
                    key=keep("cxr_model", cxr_default,
                             valid=lambda v: in_options(list(by_name), cxr_default)(cxr_follow(v))),
                    format_func=lambda n: f"{model_label(by_name[n])} · {', '.join(by_name[n].classes)[:80]}")
tta = c2.selectbox("TTA", ["none", "hflip"], key=keep("cxr_tta", "none", valid=in_options(["none", "hflip"])),
                   help="Radiographs have a left and a right: only the horizontal flip is offered, and off by default.")
card = by_name[name]
show_model_notes([card], ds)
headline = card.headline()
st.caption(f"Trained on: {', '.join(d.name for d in card.trained_on) or '?'}"
           + (" (synthetic images only)" if card.synthetic_only else "") + f" · {card.arch} · "
           f"{card.preprocessing.size_text} px grey · "
           + (f"held-out {'mean AUC' if headline.name == 'auc_mean' else 'AUC'} {headline.value:.3f} "
              f"({headline.data})" if headline else "no held-out AUC on its card"))

# ------------------------------------------------------------------------------------------ the model's label set
ls = LabelSet.from_card(card)
ls = LabelSet(ls.mode, ls.small, tuple(card.classes or ls.classes))
with st.expander(f"How this model's labels are read from the data (label set '{ls.mode}')", expanded=False):
    st.caption({"merge": "The smallest NIH findings are merged into 'Other'.",
                "drop": "The smallest NIH findings are dropped (and images with only those findings).",
                "all": "Every finding the model has a column for is its own class.",
                "tb": "Tuberculosis vs normal."}.get(ls.mode, ls.mode)
               + " The label set is the model's own (from its card): the AUCs below score the data this way.")
    try:
        st.dataframe(class_table(ds.records, ls), hide_index=True, width="stretch")
        st.caption(f"Output classes: **{', '.join(ls.classes)}** ({len(ls.select(ds.records))} images scored).")
    except LesionError as e:
        st.error(str(e))

scope = scope_choice([card], ds, "cxr")
on_what = scope.words
st.caption(plan_caption(scope, [name], [name], tta, ds))
stopped_note("cxr")
run_gate("cxr", "Run on the data set", "Predictions are cached per model, data set, images and TTA.", finish_page,
         identity=ds.fingerprint())

result = stoppable("cxr", "Predicting…", lambda update: run_ensemble(ds, [name], tta, "mean_prob", progress=update,
                                                                     records=scope.records), finish_page)
classes = list(result.classes)
probs = result.probs
y, notes = labels_for_model(card, scope.records)
for note in notes:
    if note not in view_warnings(ds.records):  # shown above already
        st.info(note)
st.caption(f"Ran on **{ran_on(result.device)}**, {result.ms_per_image:.1f} ms per image.")

preds = result.to_frame()[["id"] + [f"p_{c}" for c in classes]]
preds.insert(1, "split", [scope.split_of(i) for i in result.ids])
if y is not None:
    for j, c in enumerate(classes):
        preds[f"label_{c}"] = y[:, j]
    fig = finding_roc_figure(y, probs, classes)
    table = finding_auc_table(y, probs, classes)
    if fig is not None:
        st.subheader("Per-finding ROC")
        st.caption(f"On {on_what}.")
        st.plotly_chart(fit(fig, f"ROC per finding: {name} ({int(np.isfinite(y).any(axis=1).sum())} images)",
                            height=520, legend_title="finding"), key="cxr_roc", width="stretch")
    st.caption("Select a row to explain that finding below.")
    picked = st.dataframe(table, hide_index=True, width="stretch", key="cxr_auc_table", column_config=pinned(table.columns),
                          on_select="rerun", selection_mode="single-row")
    rows = getattr(getattr(picked, "selection", None), "rows", None) or []
    if rows:
        st.session_state["cxr_finding"] = classes[rows[0]]
else:
    st.dataframe(preds, hide_index=True, width="stretch", column_config=pinned(preds.columns))

# ------------------------------------------------------------------------------------------ explain a finding
st.subheader("Explain a finding")
finding = st.selectbox("Finding", classes, key="cxr_finding")
j = classes.index(finding)
order = np.argsort(-probs[:, j])


def _label_text(i: int) -> str:
    lab = "" if y is None or not np.isfinite(y[i, j]) else f" · truth {int(y[i, j])}"
    return f"{result.ids[i]} · p={probs[i, j]:.3f}{lab}"


pick = st.selectbox("Radiograph (highest score first)", [int(i) for i in order], format_func=_label_text,
                    key=f"cxr_image.{name}.{finding}")
rec = ds.by_id(result.ids[pick])
try:
    image, truth = read_sample(str(rec.image_path), str(rec.mask_path) if rec.mask_path else None)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

method = st.radio("Heatmap", ["gradcam", "gradcam++", "layercam"], horizontal=True, key="cxr_cam_method")
lungs = lung_segmenter_names()
a, b, c = st.columns(3)
a.image(image, width="stretch", caption=f"{rec.id} · findings: {', '.join(rec.findings) or rec.diagnosis or 'none recorded'}")
try:
    heat = label_heat(name, str(rec.image_path), image, j, method)
    b.image(heatmap_overlay(image, heat), width="stretch", caption=f"{method} for '{finding}' (p={probs[pick, j]:.3f})")
    b.caption(f"Heatmap computed on {heatmaps_where()}.")
except LesionError as e:
    b.error(str(e))
    heat = None
if lungs:
    best = lungs.index(default_lung_model(lungs))  # the better lung model (the shortcut audit's too)
    seg = st.selectbox("Lung-field model", lungs, index=best, key="cxr_lung_model")
    try:
        lung = network_mask(seg, str(rec.image_path), image)
        panel = overlay_mask(image, lung, color=(0, 200, 255), alpha=0.3)
        if truth is not None:
            panel = draw_outline(panel, truth, color=(255, 255, 0), box=False)
        c.image(panel, width="stretch", caption=f"lung fields by {seg} (on this machine)"
                + (" · yellow: ground truth" if truth is not None else ""))
        inside = heatmap_scores(heat, lung)["heat_inside"] if heat is not None and lung.any() else None
        if inside is not None and not np.isfinite(inside):  # an all-zero map: no heat anywhere to share out
            st.caption("The heatmap is all zero, so no share of it lies inside the predicted lung fields.")
        elif inside is not None:
            st.caption(f"Share of the heatmap inside the predicted lung fields: **{inside:.0%}** "
                       f"(lungs cover {lung.mean():.0%} of the image). For a lung finding a low share means the model "
                       "looks elsewhere (labels, borders, devices); heart and mediastinal findings such as "
                       "cardiomegaly lie outside the lung fields.")
    except LesionError as e:
        c.error(str(e))
else:
    c.info("No lung segmentation model in `weights/` (train one with `lesion train seg --data …`).")

st.download_button("Download predictions (CSV)", preds.to_csv(index=False).encode(), file_name="cxr_predictions.csv",
                   mime="text/csv", key="cxr_download")
finish_page()
