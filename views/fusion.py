"""Multi-view fusion: group images into cases by an id column and fuse per-view predictions (mean, max, log-mean,
out-of-fold logistic stacker); per-view vs fused ROC with bootstrap CIs on the cases with several views."""
from __future__ import annotations

import streamlit as st

from lesion.errors import LesionError
from ui.state import page_setup, require_dataset, require_domain

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
from ui.classify import checked_target, require_classifiers  # noqa: E402
from ui.compute import ran_on, require_compute  # noqa: E402
from ui.fusion import fusion_roc_figure, run_fusion  # noqa: E402
from ui.ensemble import ensemble_controls  # noqa: E402
from ui.predfiles import predictions_control  # noqa: E402
from ui.scope import plan_and_gate, stoppable  # noqa: E402
from ui.state import in_options, keep  # noqa: E402
from ui.tables import auc_notes, pinned  # noqa: E402
from ui.trust import model_label, show_model_notes  # noqa: E402

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
st.caption(f"Counts of the whole data set ({len(ds)} images); what is computed and scored (held-out images when a "
           "chosen model trained here) is said below.")
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
files = predictions_control(ds, "fus")
names = names + list(files)
members, tta, merge = ensemble_controls(ds, cards, names, "fus", title="Models (the session's ensemble, per view)",
                                        label=lambda n: model_label(by_name[n]) if n in by_name else n)
refs = [files.get(m, m) for m in members]
target = checked_target(refs, ds.records, finish_page, what="model")
member_cards = [by_name[m] if m in by_name else files[m].card for m in members]
show_model_notes(member_cards, ds)
scope = plan_and_gate(member_cards, ds, "fus", files, members, refs, tta, "Run fusion",
                      "Predictions are cached per model, data set, images and TTA (shared with the Classification "
                      "page).", finish_page)

keep_ids, on_what = None, scope.words
result, report = stoppable("fus", "Predicting…", lambda update: run_fusion(
    ds, refs, tta, target, column, progress=update, merge=merge, records=scope.records), finish_page)
scored = Cases.from_keys(case_keys(scope.records, column))
st.markdown(f"**Computed: {len(scope.records)} images in {len(scored)} cases** ({int(scored.multi.sum())} with two or "
            f"more views, {int(scored.n_views[scored.multi].sum())} images) — {on_what}."
            + (f" The other {scope.not_computed} images trained a chosen model and are not computed." if
               scope.not_computed else ""))
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
    n_cases = int(report.auc["n"].iloc[-1])
    n_imgs = int(scored.n_views[scored.multi].sum())
    right.markdown(f"**AUC on the multi-view cases: {n_cases} labelled cases ({n_imgs} images) of the "
                   f"{'held-out ' if scope.held_only else ''}images computed**")
    auc = auc_notes(auc)
    right.dataframe(auc, hide_index=True, width="stretch", column_config={
        "method": st.column_config.TextColumn("method", pinned=True),
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
if "label" in table:  # say why a case has no label rather than show a bare None
    views = table["views"] if "views" in table else None
    why = []
    for i, lab in enumerate(table["label"]):
        if lab is not None and lab == lab:
            why.append("")
            continue
        ids = [v for v in str(views.iloc[i]).split(", ") if v] if views is not None else []
        why.append("training images (not scored)" if ids and all(scope.split_of(v) == "training" for v in ids)
                   else f"no '{target}' label in the data")
    table.insert(table.columns.get_loc("label") + 1, "label_note", why)
st.dataframe(table, hide_index=True, width="stretch", column_config=pinned(table.columns))
st.download_button("Download per-case scores (CSV)", table.to_csv(index=False).encode(),
                   file_name=f"fusion_{ds.layout}_{column}.csv", mime="text/csv", key="fus_download")
finish_page()
