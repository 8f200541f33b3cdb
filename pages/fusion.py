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


from lesion.infer.fusion import MIN_AUC_CASES, ONE_VIEW, Cases, case_columns, case_keys, is_label_column  # noqa: E402
from ui.classify import checked_target, require_classifiers, run_gate  # noqa: E402
from ui.compute import ran_on, require_compute  # noqa: E402
from ui.fusion import fusion_roc_figure, run_fusion  # noqa: E402
from ui.state import in_options, keep, kept_members  # noqa: E402
from ui.trust import default_models, model_label, show_model_notes, subset_choice  # noqa: E402

# ------------------------------------------------------------------ cases
columns = case_columns(ds.records)
c1, c2 = st.columns([2, 2])
if columns:
    picked = c1.selectbox("Case id column", columns, key=keep("fus_case", columns[0], f"fus_case.{ds.fingerprint()}",
                                                              in_options(columns)),
                          help="Id columns whose values group two or more images (lesion_id: views of one lesion; "
                               "patient_id / group: all images of a patient). Label and diagnosis columns are "
                               "never offered.")
else:
    picked = None
    c1.info("This data set has no id column that repeats (no lesion_id, patient or case id shared by several "
            "images): each image is its own case, so there is nothing to fuse.")
typed = c2.text_input("…or type a column name", key="fus_case_custom",
                      help="Any id column of the data set, or 'group'.").strip()
if typed and is_label_column(typed):
    st.error(f"'{typed}' holds labels or image properties, not case ids: grouping by it would fuse different "
             "lesions that share a diagnosis. Pick an id column" + (f": {', '.join(columns)}." if columns else "."))
    finish_page(stop=True)
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
if 0 < cases.multi.sum() < MIN_AUC_CASES:
    st.warning(f"Only {int(cases.multi.sum())} cases have two or more views: too few for an AUC (at least "
               f"{MIN_AUC_CASES} labelled multi-view cases are needed). The page fuses the scores per case only.")
if not cases.multi.any():
    st.error(f"Every case under '{column}' has one image ({len(cases)} cases): nothing to fuse. Pick a column that "
             f"groups several images of one case{': ' + ', '.join(columns) if columns else ''}.")
    finish_page(stop=True)
if not ds.has_labels:
    st.info("This data set has no labels: the page fuses the scores per case, but cannot draw ROC curves or "
            "fit the stacker.")

# ------------------------------------------------------------------ models
require_compute(finish_page)
cards = require_classifiers(ds.domain, finish_page)
by_name = {c.name: c for c in cards}
names = list(by_name)
c1, c2 = st.columns([3, 1])
members = c1.multiselect("Models (mean-probability ensemble per view)", names,
                         format_func=lambda n: model_label(by_name[n]),
                         key=kept_members("fus_members", ds.domain, names, default_models(cards, ds)),
                         help="The same models are chosen on the Classification, Failure review and Upload pages.")
tta = c2.selectbox("TTA", TTA_NAMES, key=keep("fus_tta", "d4", "tta", in_options(TTA_NAMES, "d4")),
                   help="none, horizontal / vertical flips, or the 8 views of the d4 group (flips + 90° rotations).")
target = checked_target(members, ds.records, finish_page, what="model")
show_model_notes([by_name[m] for m in members], ds)
run_gate("fus", "Run fusion", "Predictions are cached per model, data set and TTA (shared with the Classification page).",
         finish_page, identity=ds.fingerprint())

keep_ids, on_what = subset_choice([by_name[m] for m in members], ds, "fus")
update, clear = st_progress("Predicting…")
try:
    result, report = run_fusion(ds, members, tta, target, column, progress=update, keep=keep_ids)
except LesionError as e:
    clear()
    st.error(str(e))
    finish_page(stop=True)
clear()
st.caption(f"Ran on **{ran_on(result.device)}**, {result.ms_per_image:.1f} ms per image "
           f"({'; '.join(result.notes) if result.notes else 'no cached models'}).")
for note in report.notes:
    (st.warning if "disagree" in note or "skipped" in note else st.caption)(note)

# ------------------------------------------------------------------ per-view vs fused
if report.no_auc:
    st.warning(report.no_auc)
elif report.auc.empty:
    st.info(f"No usable '{target}' labels on the multi-view cases ({on_what}): fused scores only, no ROC.")
else:
    left, right = st.columns([1, 1])
    try:
        left.plotly_chart(fusion_roc_figure(report, f"Per-view vs fused ROC: {target}, cases by {column} "
                                                    f"({int(report.auc['n'].iloc[-1])} multi-view cases)"),
                          width="stretch")
    except LesionError as e:
        left.error(str(e))
    auc = report.auc.copy()
    for col, ok in (("≥ per view", report.passes()), ("≥ one view", report.passes(ONE_VIEW))):
        auc[col] = auc["method"].map(ok)
    right.markdown(f"**AUC on {on_what}**")
    right.dataframe(auc, hide_index=True, width="stretch", column_config={
        "auc": st.column_config.NumberColumn("AUC", format="%.3f"),
        "ci_lo": st.column_config.NumberColumn("CI low", format="%.3f"),
        "ci_hi": st.column_config.NumberColumn("CI high", format="%.3f"),
        "positives": st.column_config.NumberColumn("pos."), "level": st.column_config.TextColumn("level")})
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
