"""Classification: an ensemble of classifiers with TTA over the data set; ROC, PR, confusion, calibration."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import streamlit as st

from lesion.errors import LesionError
from lesion.infer.ensemble import MERGE_MODES, correlation_matrix, suggest_members
from lesion.infer.evaluate import label_vector, score
from lesion.infer.tta import TTA_NAMES
from lesion.metrics import auc_table, calibration_table, curve_table, threshold_report
from ui.classify import checked_target, require_classifiers, run_ensemble, run_gate
from ui.state import page_setup, require_dataset, st_progress

finish_page = page_setup()
st.title("Classification")
st.caption("Pick ensemble members, test-time augmentation and the merge rule; read ROC and PR curves with "
           "bootstrap 95% CIs, the confusion matrix at a threshold, calibration, and how correlated members are.")

ds = require_dataset(finish_page, need_images=False)

if ds.domain == "cxr":
    st.caption("Multi-label chest X-ray findings models are on the **Chest X-ray** page.")
cards = require_classifiers(ds.domain, finish_page)

names = [c.name for c in cards]
if "cls_members" not in st.session_state:
    st.session_state["cls_members"] = names[: min(3, len(names))]
c1, c2, c3 = st.columns([3, 1, 1])
members = c1.multiselect("Ensemble members", names, key="cls_members")
tta = c2.selectbox("TTA", TTA_NAMES, index=TTA_NAMES.index("d4"), key="cls_tta",
                   help="none, horizontal / vertical flips, or the 8 views of the d4 group (flips + 90° rotations).")
merge = c3.selectbox("Merge", MERGE_MODES, index=MERGE_MODES.index("mean_prob"), key="cls_merge",
                     help="Mean of logits, mean of probabilities, log-mean (geometric) or rank average.")
target = checked_target(members, ds.records, finish_page)
run_gate("cls", "Run the ensemble", "Predictions are cached per model, data set and TTA: a page revisited is instant.",
         finish_page)

update, clear = st_progress("Predicting…")
try:
    result = run_ensemble(ds, members, tta, merge, progress=update)
except LesionError as e:
    clear()
    st.error(str(e))
    finish_page(stop=True)
clear()
st.caption(f"Ran on **{result.device}**, {result.ms_per_image:.1f} ms per image for the whole ensemble × TTA "
           f"({'; '.join(result.notes) if result.notes else 'no cached members'}).")

y = label_vector(ds.records, target)
scores = {name: score(p, result.classes, target) for name, p in result.member_probs.items()}
if len(members) > 1:
    scores[f"ensemble ({merge})"] = score(result.probs, result.classes, target)
preds = result.to_frame()
preds["label"] = y
labelled = np.isfinite(y)
if not labelled.any() or len(np.unique(y[labelled])) < 2:
    st.info(f"This data set has no usable '{target}' labels (both classes needed): predictions only, no ROC.")
    st.dataframe(preds, hide_index=True, width="stretch")
    finish_page(stop=True)

# ------------------------------------------------------------------ AUC table and curves
st.dataframe(auc_table(y, scores), hide_index=True, width="stretch")

left, right = st.columns(2)
roc = curve_table(y, scores, "roc")
fig = px.line(roc, x="x", y="y", color="label", labels={"x": "false-positive rate", "y": "true-positive rate"},
              title=f"ROC: {target}")
fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
left.plotly_chart(fig, width="stretch")
pr = curve_table(y, scores, "pr")
right.plotly_chart(px.line(pr, x="x", y="y", color="label", labels={"x": "recall", "y": "precision"},
                           title="Precision-recall"), width="stretch")

left, right = st.columns(2)
main = list(scores)[-1]
thr = left.slider("Threshold", 0.0, 1.0, 0.5, 0.01, key="cls_thr")
rep = threshold_report(y, scores[main], thr)
cm = np.array([[rep["tn"], rep["fp"]], [rep["fn"], rep["tp"]]])
left.plotly_chart(px.imshow(cm, text_auto=True, x=["pred 0", "pred 1"], y=["true 0", "true 1"],
                            color_continuous_scale="Blues", title=f"Confusion matrix: {main}"), width="stretch")
left.caption(f"Sensitivity {rep['sensitivity']:.3f} · specificity {rep['specificity']:.3f} · "
             f"PPV {rep['ppv']:.3f} · NPV {rep['npv']:.3f}")
cal = calibration_table(y, scores)
fig = px.line(cal, x="mean_predicted", y="fraction_positive", color="model", markers=True, title="Calibration")
fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
right.plotly_chart(fig, width="stretch")

# ------------------------------------------------------------------ member correlation and suggestion
if len(result.member_probs) > 1:
    st.subheader("Member correlation")
    corr = correlation_matrix({n: score(p, result.classes, target)[:, None] for n, p in result.member_probs.items()})
    st.plotly_chart(px.imshow(corr, text_auto=".2f", zmin=-1, zmax=1, color_continuous_scale="RdBu_r"),
                    width="stretch")
k = st.number_input("Members to suggest", 1, len(names), min(3, len(names)), key="cls_k")


def apply_suggestion() -> None:
    """Pick members by AUC and low correlation (seed 003) and put them in the member list (runs before widgets)."""
    all_res = run_ensemble(ds, names, tta, merge)
    member_scores = {n: score(p, all_res.classes, target)[labelled] for n, p in all_res.member_probs.items()}
    chosen = suggest_members(member_scores, y[labelled].astype(int), int(st.session_state["cls_k"]))
    st.session_state["cls_members"] = chosen
    st.session_state["cls_suggested"] = chosen


st.button("Suggest an ensemble (high AUC, low correlation)", key="cls_suggest", on_click=apply_suggestion)
if st.session_state.get("cls_suggested"):
    st.success(f"Members set to the suggestion: {', '.join(st.session_state['cls_suggested'])}")

st.download_button("Download predictions (CSV)", preds.to_csv(index=False).encode(),
                   file_name=f"predictions_{ds.layout}.csv", mime="text/csv")
finish_page()
