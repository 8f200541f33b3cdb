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
from ui.charts import fit
from ui.classify import checked_target, require_classifiers, run_ensemble, run_gate, threshold_control
from ui.compute import ran_on, require_compute
from ui.state import in_options, keep, kept_members, members_name, page_setup, require_dataset, set_kept, st_progress
from ui.trust import default_models, mask_labels, model_label, show_model_notes, subset_choice

finish_page = page_setup()
st.title("Classification")
st.caption("Pick ensemble members, test-time augmentation and the merge rule; read ROC and PR curves with "
           "bootstrap 95% CIs, the confusion matrix at a threshold, calibration, and how correlated members are.")

ds = require_dataset(finish_page, need_images=False)
require_compute(finish_page)

if ds.domain == "cxr":
    st.caption("Multi-label chest X-ray findings models are on the **Chest X-ray** page.")
cards = require_classifiers(ds.domain, finish_page)
by_name = {c.name: c for c in cards}
names = list(by_name)

c1, c2, c3 = st.columns([3, 1, 1])
members = c1.multiselect("Ensemble members", names, format_func=lambda n: model_label(by_name[n]),
                         key=kept_members("cls_members", ds.domain, names, default_models(cards, ds)),
                         help="The same models are chosen on the Multi-view fusion, Failure review and Upload pages.")
tta = c2.selectbox("TTA", TTA_NAMES, key=keep("cls_tta", "d4", "tta", in_options(TTA_NAMES, "d4")),
                   help="none, horizontal / vertical flips, or the 8 views of the d4 group (flips + 90° rotations).")
merge = c3.selectbox("Merge", MERGE_MODES, key=keep("cls_merge", "mean_prob", valid=in_options(MERGE_MODES, "mean_prob")),
                     help="Mean of logits, mean of probabilities, log-mean (geometric) or rank average.")
target = checked_target(members, ds.records, finish_page)
show_model_notes([by_name[m] for m in members], ds)
run_gate("cls", "Run the ensemble", "Predictions are cached per model, data set and TTA: a page revisited is instant.",
         finish_page, identity=ds.fingerprint())

update, clear = st_progress("Predicting…")
try:
    result = run_ensemble(ds, members, tta, merge, progress=update)
except LesionError as e:
    clear()
    st.error(str(e))
    finish_page(stop=True)
clear()
st.caption(f"Ran on **{ran_on(result.device)}**, {result.ms_per_image:.1f} ms per image for the whole ensemble × TTA "
           f"({'; '.join(result.notes) if result.notes else 'no cached members'}).")

keep_ids, on_what = subset_choice([by_name[m] for m in members], ds, "cls")
y = mask_labels(label_vector(ds.records, target), result.ids, keep_ids)
scores = {name: score(p, result.classes, target) for name, p in result.member_probs.items()}
if len(members) > 1:
    scores[f"ensemble ({merge})"] = score(result.probs, result.classes, target)
preds = result.to_frame()
preds["label"] = label_vector(ds.records, target)
if keep_ids is not None:
    preds["held_out"] = [i in keep_ids for i in result.ids]
labelled = np.isfinite(y)
if not labelled.any() or len(np.unique(y[labelled])) < 2:
    st.info(f"This data set has no usable '{target}' labels on {on_what} (both classes needed): predictions "
            "only, no ROC.")
    st.dataframe(preds, hide_index=True, width="stretch")
    finish_page(stop=True)

# ------------------------------------------------------------------ AUC table and curves
st.markdown(f"**Scored on {on_what}**: {int(labelled.sum())} labelled, {int(np.nansum(y))} positive for '{target}'.")
st.dataframe(auc_table(y, scores), hide_index=True, width="stretch",
             column_config={"auc": "AUC", "ci_lo": "95% CI low", "ci_hi": "95% CI high", "n": "images"})

left, right = st.columns(2)
roc = curve_table(y, scores, "roc")
fig = px.line(roc, x="x", y="y", color="label", labels={"x": "false-positive rate", "y": "true-positive rate"})
fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
left.plotly_chart(fit(fig, f"ROC: {target} ({int(labelled.sum())} images)", legend_title="model"), width="stretch")
pr = curve_table(y, scores, "pr")
right.plotly_chart(fit(px.line(pr, x="x", y="y", color="label", labels={"x": "recall", "y": "precision"}),
                       f"Precision-recall: {target} ({int(labelled.sum())} images)", legend_title="model"),
                   width="stretch")

left, right = st.columns(2)
main = list(scores)[-1]
with left:
    thr, thr_words = threshold_control("cls", y, scores[main])
rep = threshold_report(y, scores[main], thr)
cm = np.array([[rep["tn"], rep["fp"]], [rep["fn"], rep["tp"]]])
left.plotly_chart(fit(px.imshow(cm, text_auto=True, x=["predicted 0", "predicted 1"], y=["true 0", "true 1"],
                                color_continuous_scale="Blues"), f"Confusion matrix: {main} at {thr:.3f}", height=360),
                  width="stretch")
left.caption(f"At the {thr_words}: sensitivity {rep['sensitivity']:.3f} · specificity {rep['specificity']:.3f} · "
             f"PPV {rep['ppv']:.3f} · NPV {rep['npv']:.3f}")
cal = calibration_table(y, scores)
fig = px.line(cal, x="mean_predicted", y="fraction_positive", color="model", markers=True,
              labels={"mean_predicted": "mean predicted probability", "fraction_positive": "fraction positive"})
fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
right.plotly_chart(fit(fig, f"Calibration ({int(labelled.sum())} images)", height=520, legend_title="model"),
                   width="stretch")

# ------------------------------------------------------------------ member correlation and suggestion
if len(result.member_probs) > 1:
    st.subheader("Member correlation")
    corr = correlation_matrix({n: score(p, result.classes, target)[:, None] for n, p in result.member_probs.items()})
    st.plotly_chart(fit(px.imshow(corr, text_auto=".2f", zmin=-1, zmax=1, color_continuous_scale="RdBu_r"),
                        f"Correlation of the members' scores ({len(result.ids)} images)", height=420), width="stretch")
k = st.number_input("Members to suggest", 1, len(names), key=keep("cls_k", min(3, len(names)), valid=int))

if st.button("Suggest an ensemble (high AUC, low correlation)", key="cls_suggest",
             help="Greedy choice: the model with the best AUC first, then each time the model with the best AUC "
                  "minus its largest correlation with those already chosen (the selection rule of seed 003), on "
                  "the images scored above."):
    update, clear = st_progress("Predicting with every model for the suggestion…")
    try:
        all_res = run_ensemble(ds, names, tta, merge, progress=update)
    except LesionError as e:
        clear()
        st.error(str(e))
        finish_page(stop=True)
    clear()
    member_scores = {n: score(p, all_res.classes, target)[labelled] for n, p in all_res.member_probs.items()}
    chosen = suggest_members(member_scores, y[labelled].astype(int), int(k))
    set_kept(members_name(ds.domain), chosen)
    st.session_state["cls_suggested"] = chosen
    st.rerun()
if st.session_state.get("cls_suggested") and st.session_state["cls_suggested"] == members:
    st.success(f"Members set to the suggestion: {', '.join(members)}")

st.download_button("Download predictions (CSV)", preds.to_csv(index=False).encode(),
                   file_name=f"predictions_{ds.layout}.csv", mime="text/csv")
finish_page()
