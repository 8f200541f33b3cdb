"""Multi-view fusion: group images into cases by an id column and fuse per-view predictions (mean, max, log-mean,
out-of-fold logistic stacker); per-view vs fused ROC with bootstrap CIs on the cases with several views."""
from __future__ import annotations

import streamlit as st

from lesion.errors import LesionError
from lesion.infer.tta import TTA_NAMES
from ui.state import page_setup, require_dataset, require_domain, st_progress

finish_page = page_setup()
st.title("Multi-view fusion")
st.caption("A case may have several images: two views of one lesion, the same lesion over time. Group the images "
           "into cases by an id column, fuse the per-view predictions (mean, max, log-mean, a logistic-regression "
           "stacker fitted out of fold) and compare per-view and fused ROC on the cases with two or more views.")

ds = require_dataset(finish_page)

require_domain(ds, "derm", "This page fuses dermoscopy classifiers over several views of one lesion; the data set "
               "in the sidebar is chest X-rays (findings are read per film on the **Chest X-ray** page). Pick a "
               "dermoscopy folder in the sidebar (e.g. HAM10000, grouped by lesion_id), or use the built-in demo set.",
               "Use the demo dermoscopy set", "fus_use_demo", finish_page)


from lesion.infer.fusion import ONE_VIEW, Cases, case_columns, case_keys  # noqa: E402
from ui.classify import checked_target, require_classifiers, run_gate  # noqa: E402
from ui.fusion import fusion_roc_figure, run_fusion  # noqa: E402

# ------------------------------------------------------------------ cases
columns = case_columns(ds.records)
c1, c2 = st.columns([2, 2])
if columns:
    picked = c1.selectbox("Case id column", columns, key="fus_case",
                          help="Columns whose values group two or more images (lesion_id: views of one lesion; "
                               "patient_id / group: all images of a patient).")
else:
    picked = None
    c1.info("No column of this data set groups several images (no lesion_id or patient id with repeats).")
typed = c2.text_input("…or type a column name", key="fus_case_custom",
                      help="Any metadata column of the data set, or 'group'.").strip()
column = typed or picked
if column is None:
    st.warning("Fusion needs cases with two or more images. HAM10000 groups images by lesion_id; the demo "
               "dermoscopy set has 1–2 views per lesion.")
    finish_page(stop=True)

try:
    cases = Cases.from_keys(case_keys(ds.records, column))
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Cases", len(cases))
m2.metric("Cases with 1 view", int((~cases.multi).sum()))
m3.metric("Cases with ≥ 2 views", int(cases.multi.sum()))
m4.metric("Images in multi-view cases", int(cases.n_views[cases.multi].sum()))
if not cases.multi.any():
    st.error(f"Every case under '{column}' has one image ({len(cases)} cases): nothing to fuse. Pick a column that "
             f"groups several images of one case{': ' + ', '.join(columns) if columns else ''}.")
    finish_page(stop=True)
if not ds.has_labels:
    st.info("This data set has no labels: the page fuses the scores per case, but cannot draw ROC curves or "
            "fit the stacker.")

# ------------------------------------------------------------------ models
cards = require_classifiers(ds.domain, finish_page)
names = [c.name for c in cards]
if "fus_members" not in st.session_state:
    st.session_state["fus_members"] = names[:1]
c1, c2 = st.columns([3, 1])
members = c1.multiselect("Models (mean-probability ensemble per view)", names, key="fus_members")
tta = c2.selectbox("TTA", TTA_NAMES, index=TTA_NAMES.index("d4"), key="fus_tta",
                   help="none, horizontal / vertical flips, or the 8 views of the d4 group (flips + 90° rotations).")
target = checked_target(members, ds.records, finish_page, what="model")
run_gate("fus", "Run fusion", "Predictions are cached per model, data set and TTA (shared with the Classification page).",
         finish_page)

update, clear = st_progress("Predicting…")
try:
    result, report = run_fusion(ds, members, tta, target, column, progress=update)
except LesionError as e:
    clear()
    st.error(str(e))
    finish_page(stop=True)
clear()
st.caption(f"Ran on **{result.device}**, {result.ms_per_image:.1f} ms per image "
           f"({'; '.join(result.notes) if result.notes else 'no cached models'}).")
for note in report.notes:
    (st.warning if "disagree" in note or "skipped" in note else st.caption)(note)

# ------------------------------------------------------------------ per-view vs fused
if report.auc.empty:
    st.info(f"No usable '{target}' labels on the multi-view cases: fused scores only, no ROC.")
else:
    left, right = st.columns([3, 2])
    try:
        left.plotly_chart(fusion_roc_figure(report, f"Per-view vs fused ROC: {target}, cases by {column}"), width="stretch")
    except LesionError as e:
        left.error(str(e))
    auc = report.auc.copy()
    for col, ok in (("≥ per view", report.passes()), ("≥ one view", report.passes(ONE_VIEW))):
        auc[col] = auc["method"].map(ok)
    right.dataframe(auc, hide_index=True, width="stretch")
    right.caption("Per view: every image of the multi-view cases scored alone, with its own label. One random "
                  "view: each case scored by one of its views (mean over 50 draws), the like-for-like baseline. "
                  "Fused: one score per case, labelled positive when any of its views is. 95% CIs: stratified "
                  "bootstrap (the per-view CI treats views of a case as independent).")

st.subheader("Per case")
table = report.cases.copy()
table.insert(0, "multi_view", table["n_views"] >= 2)
st.dataframe(table, hide_index=True, width="stretch")
st.download_button("Download per-case scores (CSV)", table.to_csv(index=False).encode(),
                   file_name=f"fusion_{ds.layout}_{column}.csv", mime="text/csv", key="fus_download")
finish_page()
