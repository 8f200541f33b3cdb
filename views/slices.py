"""Slices: where a model fails. Per-group AUC (bootstrap CI), sensitivity / specificity at the threshold in use and
calibration error by metadata and image-derived columns (and pairs); the worst-group gap; a slice finder with
Benjamini–Hochberg correction; and a model diff of two members on the same images."""
from __future__ import annotations

import numpy as np
import streamlit as st

from lesion.analyse.diff import diff_models, per_image, slice_differences
from lesion.analyse.image_features import DESCRIPTIONS
from lesion.analyse.slices import (PAIR, SliceConfig, analysis_frame, find_slices, group_columns, make_groups,
                                   parse_by, worst_gaps)
from lesion.errors import LesionError
from lesion.infer.evaluate import label_vector
from lesion.metrics import auc_text
from ui.analyse import forest_figure, image_columns, member_scores, slice_rows, styled_slices
from ui.charts import image_grid
from ui.tables import pinned
from ui.classify import classifier_cards, run_gate, threshold_control
from ui.ensemble import ensemble_context, ensemble_controls
from ui.compute import ran_on, require_compute
from ui.state import page_setup, read_sample, require_dataset
from ui.scope import plan_caption, scope_choice, stoppable, stopped_note
from ui.trust import model_label, show_model_notes

finish_page = page_setup()
st.title("Slices")
st.caption("Where does a model fail? Each group of images (a metadata column, an image-derived estimate, or a "
           "pair) gets its n, positives, AUC with a 95% bootstrap CI, sensitivity / specificity at the threshold in "
           "use and calibration error. Groups below the minimum count are greyed and never ranked. The slice "
           "finder tests each group against the rest and corrects for the number of groups (Benjamini–Hochberg).")

ds = require_dataset(finish_page)
require_compute(finish_page)

# ------------------------------------------------------------------ members: checkpoints and predictions files
cards = classifier_cards(ds.domain)
by_name = {c.name: c for c in cards}
models, tta, merge = ensemble_controls(ds, cards, list(by_name), "slices", label=lambda n: model_label(by_name[n]),
                                       title="Models (the session's ensemble)")
files_text = st.text_area("…and/or predictions files (one path per line)", key="slices_files", height=80,
                          help="CSV or parquet with an id column and a probability column, e.g. out-of-fold "
                               "predictions of a model trained elsewhere. Each file is one more member: the slices "
                               "then score the mean of the ensemble's and the files' probabilities.")
files = [f.strip() for f in files_text.splitlines() if f.strip()]
if not models and not files:
    st.info("Choose a model or give a predictions file.")
    finish_page(stop=True)
target = "tb" if ds.domain == "cxr" else "melanoma"
chosen_cards = [by_name[m] for m in models]
if chosen_cards and chosen_cards[0].target not in (None, "dx7"):
    target = chosen_cards[0].target
show_model_notes(chosen_cards, ds)
scope = scope_choice(chosen_cards, ds, "slices")
scoped = [r.id for r in scope.records]

# ------------------------------------------------------------------ columns
frame = ds.to_frame()
use_images = st.checkbox("Add image-derived columns (estimates and heuristics: skin tone by ITA, brightness, "
                         "dark corners, hair, ink, ruler)", key="slices_img")
if use_images:
    frame = analysis_frame(ds, image_columns(ds.content_fingerprint(), ds, scope.records))
frame = frame.set_index("id").loc[scoped].reset_index()  # the images in scope, in their order
available = group_columns(frame)
d1, d2, d3 = st.columns([3, 3, 1])
default_cols = [c for c in ("age", "sex", "site", "dx_type", "view") if c in available] or available[:3]
cols = d1.multiselect("Group by", available, default=default_cols, key="slices_cols")
pair_options = [f"{a}{PAIR}{b}" for i, a in enumerate(cols) for b in cols[i + 1:]]
pairs = d2.multiselect("…and pairs", pair_options, key="slices_pairs")
min_n = int(d3.number_input("Min. n", 5, 1000, 30, key="slices_min_n",
                            help="Smaller groups are shown greyed, with no AUC, and never ranked or tested."))
if use_images:
    st.caption(" · ".join(f"`{c}`: {DESCRIPTIONS[c]}" for c in available if c in DESCRIPTIONS))
if not cols:
    st.info("Choose at least one column to group by.")
    finish_page(stop=True)

if models:
    st.caption(plan_caption(scope, models, models, tta, ds,
                            extra=f"; {len(files)} predictions file(s) read, not computed" if files else ""))
else:
    st.caption(f"Predictions files only: {len(scope.records)} images ({scope.words}) read from them, nothing computed.")
stopped_note("slices")
run_gate("slices", "Compute slices", "Scores the images in scope with each member (cached), then the groups.",
         finish_page, identity=ds.fingerprint())

scores, ensemble, notes, device = stoppable("slices", "Predicting…", lambda update: member_scores(
    ds, models, files, tta, target, progress=update, records=scope.records, merge=merge), finish_page)
st.caption(f"Ran on **{ran_on(device) if models else device}**. " + " ".join(notes))
on_what = scope.words
ids = scoped
y = label_vector(scope.records, target)
if not np.isfinite(y).any():
    st.error(f"No '{target}' labels among the scored images.")
    finish_page(stop=True)
file_scores = [v for k, v in scores.items() if k not in models]
if ensemble is not None and not file_scores:
    s, scored_as = ensemble, (f"{models[0]}" if len(models) == 1 else f"the ensemble ({merge})") + f", TTA {tta}"
elif ensemble is None:
    s, scored_as = np.mean(np.stack(file_scores), axis=0), "the mean of the predictions files"
else:
    s = np.mean(np.stack([ensemble, *file_scores]), axis=0)
    scored_as = f"the mean of the ensemble ({merge}, TTA {tta}) and {len(file_scores)} predictions file(s)"
threshold, thr_words = threshold_control("slices", y, s, context=ensemble_context(ds.fingerprint(), models, tta, merge)
                                         if models and not file_scores else None)
try:
    by = parse_by(list(cols) + [p.replace(PAIR, "*") for p in pairs], available)
    groups = make_groups(frame, sorted({c for k in by for c in k}))
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
cfg = SliceConfig(min_n=min_n, n_boot=500)
n_lab = int(np.isfinite(y).sum())
what = (f"{scored_as} on {on_what}; {n_lab} labelled for '{target}'; {thr_words}; "
        f"groups under {min_n} images (or 5 of a class) not scored")

tab_slices, tab_finder, tab_diff = st.tabs(["Slices", "Slice finder", "Model diff"])
with tab_slices:
    table = slice_rows(y, s, groups, by, threshold, min_n)
    st.plotly_chart(forest_figure(table, f"AUC per group: {what}"), width="stretch", key="slices_forest")
    st.dataframe(styled_slices(table), hide_index=True, width="stretch", column_config=pinned(table.columns))
    st.caption(f"{int(table['too_small'].sum())} of {len(table)} groups are too small to carry an AUC (greyed). "
               f"Sensitivity / specificity at the threshold in use; ECE: expected calibration error (10 equal-width "
               f"bins). Data: {what}.")
    gaps = worst_gaps(y, s, groups, by, cfg)
    st.markdown("**Worst-group gap** (AUC of the rest − AUC of the worst group; 95% bootstrap CI)")
    if gaps.empty:
        st.info("No column has two groups large enough to compare.")
    else:
        st.dataframe(gaps, hide_index=True, width="stretch", column_config=pinned(gaps.columns))
        st.caption("The worst group is picked on the same images, so the gap leans high; a CI that holds 0 says "
                   "the gap may be noise.")
    st.download_button("Download slices (CSV)", table.to_csv(index=False).encode(), file_name="slices.csv",
                       mime="text/csv", key="slices_dl")

with tab_finder:
    metric = st.radio("Compare", ["auc", "error"], horizontal=True, key="slices_metric",
                      format_func={"auc": "AUC (DeLong z-test, group vs rest)",
                                   "error": "error rate at the threshold (Fisher's exact test)"}.get)
    found = find_slices(y, s, groups, by, threshold, metric, cfg)
    st.dataframe(found, hide_index=True, width="stretch", column_config=pinned(found.columns, extra={
        c: st.column_config.NumberColumn(format="%.3g") for c in ("in_group", "rest", "diff", "p", "q")}))
    st.caption(f"{len(found)} groups tested ({int(found['significant'].sum()) if len(found) else 0} with BH q < "
               f"0.05). Groups too small are not tested. Data: {what}.")

with tab_diff:
    names = list(scores)
    if len(names) < 2:
        st.info("Choose two members (two models, two predictions files, or one of each) to compare them.")
    else:
        e1, e2 = st.columns(2)
        a_name = e1.selectbox("Model A", names, index=0, key="diff_a")
        b_name = e2.selectbox("Model B", names, index=1, key="diff_b")
        sa, sb = scores[a_name], scores[b_name]
        ta, _ = threshold_control("diff_a", y, sa, container=e1)
        tb, _ = threshold_control("diff_b", y, sb, container=e2)
        try:
            d = diff_models(y, sa, sb, ta, tb, n_boot=1000)
        except LesionError as e:
            st.error(str(e))
        else:
            m1, m2, m3, m4 = st.columns(4)
            m1.metric(f"AUC A ({a_name})", auc_text(d.auc_a), help=f"95% CI {d.ci_a[0]:.3f}–{d.ci_a[1]:.3f}")
            m2.metric(f"AUC B ({b_name})", auc_text(d.auc_b), help=f"95% CI {d.ci_b[0]:.3f}–{d.ci_b[1]:.3f}")
            m3.metric("ΔAUC (B − A)", f"{d.delta_auc:+.3f}", help="paired bootstrap 95% CI")
            m4.metric("DeLong p", f"{d.p_delong:.3g}")
            st.caption(f"ΔAUC 95% CI {d.ci[0]:+.3f} to {d.ci[1]:+.3f} (paired bootstrap over the same {d.n} images, "
                       f"{d.positives} positive). McNemar at the thresholds in use: A right / B wrong "
                       f"{d.mcnemar.a_right_b_wrong}, A wrong / B right {d.mcnemar.a_wrong_b_right}, p = "
                       f"{d.mcnemar.p:.3g} ({'exact binomial' if d.mcnemar.exact else 'chi-square'}). Data: {on_what}.")
            table_d = per_image(ids, y, sa, sb, ta, tb)
            outcome = st.radio("Gallery", ["A right, B wrong", "A wrong, B right"], horizontal=True, key="diff_gal")
            picked = table_d[table_d["outcome"] == outcome].head(6)
            st.caption(f"{int((table_d['outcome'] == outcome).sum())} images '{outcome}'; the 6 with the largest "
                       "probability gap are shown.")
            gallery = []
            for row in picked.itertuples(index=False):
                rec = ds.by_id(row.id)
                try:
                    img, _ = read_sample(str(rec.image_path), None)
                except LesionError:
                    continue
                gallery.append((f"{row.id} · y={row.label} · A {row.p_a:.2f} · B {row.p_b:.2f}", img))
            image_grid(gallery)
            st.dataframe(table_d, hide_index=True, width="stretch", column_config=pinned(table_d.columns))
            st.markdown("**Where they differ most** (paired DeLong per group, BH-corrected)")
            differ = slice_differences(y, sa, sb, groups, by, cfg)
            st.dataframe(differ, hide_index=True, width="stretch", column_config=pinned(differ.columns))
finish_page()
