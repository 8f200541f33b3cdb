"""Classification: an ensemble of classifiers with TTA over the data set; ROC, PR, confusion, calibration."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import streamlit as st

from lesion.errors import LesionError
from lesion.infer.ensemble import correlation_matrix, suggest_members
from lesion.infer.evaluate import label_vector, score
from lesion.metrics import auc_table, calibration_table, curve_table, threshold_report
from ui.charts import fit
from ui.classify import checked_target, require_classifiers, run_ensemble, threshold_control
from ui.compute import ran_on, require_compute
from ui.ensemble import ensemble_context, ensemble_controls
from ui.predfiles import predictions_control
from ui.scope import plan_and_gate, stoppable
from ui.state import keep, members_name, page_setup, require_dataset, set_kept, st_progress
from ui.tables import auc_notes, pinned
from ui.trust import model_label, show_model_notes

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

files = predictions_control(ds, "cls")
names = names + list(files)
members, tta, merge = ensemble_controls(ds, cards, names, "cls",
                                        label=lambda n: model_label(by_name[n]) if n in by_name else n)
refs = [files.get(m, m) for m in members]
target = checked_target(refs, ds.records, finish_page)
member_cards = [by_name[m] if m in by_name else files[m].card for m in members]
show_model_notes(member_cards, ds)
scope = plan_and_gate(member_cards, ds, "cls", files, members, refs, tta, "Run the ensemble",
                      "Predictions are cached per model, data set, images and TTA: a page revisited is instant.",
                      finish_page)

result = stoppable("cls", "Predicting…", lambda update: run_ensemble(ds, refs, tta, merge, progress=update,
                                                                     records=scope.records), finish_page)
st.caption(f"Ran on **{ran_on(result.device)}**, {result.ms_per_image:.1f} ms per image for the whole ensemble × TTA "
           f"({'; '.join(result.notes) if result.notes else 'no cached members'}).")

on_what = scope.words
y = label_vector(scope.records, target)
scores = {name: score(p, result.classes, target) for name, p in result.member_probs.items()}
if len(members) > 1:
    scores[f"ensemble ({merge})"] = score(result.probs, result.classes, target)
preds = result.to_frame()
preds["label"] = y
preds.insert(1, "split", [scope.split_of(i) for i in result.ids])
# an image that could not be read has no scores (the one rule: named in the run's notes, left out of every figure)
readable = np.isfinite(result.probs).all(axis=1)
y = np.where(readable, y, np.nan)  # every curve, table and threshold below leaves an unreadable image out
labelled = np.isfinite(y)
if result.errors:
    st.warning(f"{len(result.errors)} image(s) could not be read and are left out: "
               + "; ".join(f"{i}: {why}" for i, why in list(result.errors.items())[:5])
               + (" …" if len(result.errors) > 5 else ""))
if not labelled.any() or len(np.unique(y[labelled])) < 2:
    st.info(f"This data set has no usable '{target}' labels on {on_what} (both classes needed): predictions "
            "only, no ROC.")
    st.dataframe(preds, hide_index=True, width="stretch", column_config=pinned(preds.columns))
    finish_page(stop=True)

# ------------------------------------------------------------------ AUC table and curves
st.markdown(f"**Scored on {on_what}**: {int(labelled.sum())} labelled images, {int(np.nansum(y))} positive for "
            f"'{target}'.")
st.dataframe(auc_notes(auc_table(y, scores)), hide_index=True, width="stretch",
             column_config={"model": st.column_config.TextColumn("model", pinned=True), "auc": "AUC",
                            "ci_lo": "95% CI low", "ci_hi": "95% CI high", "n": "images"})

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
    thr, thr_words = threshold_control("cls", y, scores[main],
                                       context=ensemble_context(ds.fingerprint(), members, tta, merge))
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
        all_res = run_ensemble(ds, [files.get(n, n) for n in names], tta, merge, progress=update,
                               records=scope.records)
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

st.subheader("Predictions")
st.dataframe(preds, hide_index=True, width="stretch", height=260, column_config=pinned(preds.columns))
st.download_button("Download predictions (CSV)", preds.to_csv(index=False).encode(),
                   file_name=f"predictions_{ds.layout}.csv", mime="text/csv")
finish_page()
