"""Failure review: every case with its truth, ensemble probability, loss, attention agreement and metadata;
filters for false positives / negatives / low agreement; a gallery of the worst cases; tags and export."""
from __future__ import annotations

import numpy as np
import streamlit as st

from lesion.analyse.label_issues import label_issue_columns
from lesion.errors import LesionError
from lesion.explain.attention import ATTENTION, outline_panel
from lesion.explain.cam import FAST_METHODS, positive_target
from lesion.explain.overlay import compare_panel, draw_outline
from lesion.infer.evaluate import label_vector, resolve_target, score
from lesion.review import FLAGS, TAGS, build_review_table, export_tagged, filter_cases, pd_numeric
from ui.charts import image_grid
from ui.leaks import leaks_section
from ui.classify import run_ensemble
from ui.explain import (
    agreement_table,
    classifier_picker,
    empty_agreement,
    explain_image_cached,
    meta_key,
    no_classifier_message,
    segment,
    segmentation_choices,
    tag_store,
    try_load_classifier,
)
from ui.classify import classifier_cards, threshold_control
from ui.compute import heatmaps_where, ran_on, require_compute
from ui.ensemble import ensemble_context, ensemble_controls
from ui.predfiles import predictions_control
from ui.scope import plan_and_gate, stoppable
from ui.state import in_options, keep, page_setup, require_dataset, read_sample
from ui.tables import pinned
from ui.trust import model_label, show_model_notes

finish_page = page_setup()
st.title("Failure review")
st.caption("Which cases does the ensemble get wrong, and did it look at the lesion when it did? Flags: false "
           "positive / negative at the threshold, low attention agreement (lowest quantile), inconsistent "
           "attention (the thresholded heatmap splits into several regions).")

ds = require_dataset(finish_page, need_images=False)
compute = require_compute(finish_page)
choices = classifier_picker(ds.domain, key="review")
if not choices:
    no_classifier_message(ds.domain)
    finish_page(stop=True)

files = predictions_control(ds, "review")
names = list(choices) + list(files)
shipped = {c.name: c for c in classifier_cards(ds.domain)}
members, tta, merge = ensemble_controls(ds, list(shipped.values()), names, "review",
                                        label=lambda n: model_label(shipped[n]) if n in shipped else n)
if not members:
    st.warning("Choose at least one member.")
    finish_page(stop=True)
loaded = [(None, files[m].card) if m in files else try_load_classifier(choices[m]) for m in members]
if any(x is None for x in loaded):
    finish_page(stop=True)
cards = [c for _, c in loaded]
show_model_notes(cards, ds)
networks = [m for m in members if m not in files]  # a predictions file has no network: no heatmap
h1, h2 = st.columns([1, 4])
method = h1.selectbox("Heatmap", list(FAST_METHODS), key=keep("review_method", FAST_METHODS[0],
                                                               valid=in_options(list(FAST_METHODS))),
                      help="CAM method of the first network member, used for the agreement score and the gallery.",
                      disabled=not networks)
h2.caption(f"Heatmaps: **{networks[0]}**, the first network member." if networks else
           "No network among the members (predictions files only): no heatmaps, no agreement score.")
try:
    model_target, target = resolve_target(cards, "melanoma" if cards[0].target == "dx7" else None)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
explainer = choices[networks[0]] if networks else None
refs = [files[m] if m in files else choices[m] for m in members]
scope = plan_and_gate(cards, ds, "review", files, members, refs, tta, "Build the review table",
                      "Runs the ensemble (cached per data set and images) and one heatmap per computed image for the "
                      "agreement score.", finish_page, what="cases",
                      extra=f"; then one {method} heatmap per computed image for the agreement score" if explainer
                      else "")
keep_ids, on_what = None, scope.words

result = stoppable("review", "Predicting…", lambda update: run_ensemble(ds, refs, tta, merge, progress=update,
                                                                        records=scope.records), finish_page)
agreement = stoppable("review", "Heatmaps…", lambda update: agreement_table(
    ds, explainer, method, progress=update, records=scope.records) if explainer else empty_agreement(result.ids),
    finish_page, part="_maps")
st.caption(f"Predictions ran on **{ran_on(result.device)}**; heatmaps computed on **{heatmaps_where(compute)}**.")

y = label_vector(scope.records, target)
prob = score(result.probs, result.classes, target)
if result.errors:  # the one rule: an unreadable image has no score; it is named here and left out of every figure
    st.warning(f"{len(result.errors)} image(s) could not be read and are left out: "
               + "; ".join(f"{i}: {why}" for i, why in list(result.errors.items())[:5])
               + (" …" if len(result.errors) > 5 else ""))
    y = np.where(np.isfinite(prob), y, np.nan)
threshold, thr_words = threshold_control("review", y, prob,
                                         context=ensemble_context(ds.fingerprint(), members, tta, merge))
meta = ds.to_frame()
meta = meta[["id"] + [c for c in ("diagnosis", "age", "sex", "site") if c in meta.columns]]
table = build_review_table(result.ids, y, prob, threshold,
                           agreement[["id", "agreement", "n_components", "overlap", "focus"]], meta)
# only the scope's cases were computed: the held-out ones, or also the training ones, labelled in 'split'
table.insert(1, "split", [scope.split_of(i) for i in table["id"]])
# confident learning (cleanlab) on the reviewed cases' probabilities: held-out ones when a model trained here
issues = label_issue_columns(result.ids, y, prob)
table = table.merge(issues, on="id", how="left")
table["label_issue"] = table["label_issue"].astype("boolean").fillna(False).astype(bool)
scored_class = dict(zip(agreement["id"], agreement["class_index"]))  # the class whose map was scored

# ------------------------------------------------------------------ filters and sorting
f1, f2, f3 = st.columns([3, 1, 2])
kinds = f1.multiselect("Show only", list(FLAGS), key="review_kinds", format_func=lambda k: k.replace("_", " "))
any_kind = f2.radio("Match", ["any", "all"], horizontal=True, key="review_any") == "any"
sort_by = f3.selectbox("Sort by", ["loss", "agreement", "prob", "label_issue_score"], key="review_sort",
                       format_func=lambda c: "label-issue score (cleanlab)" if c == "label_issue_score" else c)
age = sex = site = None
g1, g2, g3 = st.columns(3)
ages = pd_numeric(table["age"]) if "age" in table else np.array([])
if np.isfinite(ages).any():
    lo, hi = float(np.nanmin(ages)), float(np.nanmax(ages))
    if hi > lo:
        age = g1.slider("Age", lo, hi, (lo, hi), key="review_age")
        if age == (lo, hi):
            age = None  # the full range keeps cases with no age too
if "sex" in table:
    sex = g2.multiselect("Sex", sorted(table["sex"].dropna().astype(str).unique()), key="review_sex")
if "site" in table:
    site = g3.multiselect("Site", sorted(table["site"].dropna().astype(str).unique()), key="review_site")
shown = filter_cases(table, kinds, any_kind, age=age, sex=sex, site=site)
if st.checkbox("Only likely label errors (cleanlab)", key="review_label_issues",
               help="Cases confident learning flags (cleanlab.filter.find_label_issues) from the ensemble's "
                    "probabilities. Trust it on held-out cases only: a model that trained on a wrong label learnt it."):
    shown = shown[shown["label_issue"]].reset_index(drop=True)
shown = shown.sort_values(sort_by, ascending=sort_by == "agreement", na_position="last").reset_index(drop=True)
st.markdown(f"**{len(shown)} of {len(table)} cases shown** ({on_what}; wrong, FP and FN at the {thr_words}) · "
            f"FP {int(table['false_positive'].sum())} · FN {int(table['false_negative'].sum())} · low agreement "
            f"(lowest 20% of the maps with a region) {int(table['low_agreement'].sum())} · empty map "
            f"{int(table['empty_map'].sum())} · inconsistent attention {int(table['inconsistent_attention'].sum())}")
st.dataframe(shown, hide_index=True, width="stretch", column_config={
    **{c: st.column_config.NumberColumn(format="%.3f") for c in ("prob", "loss", "agreement", "overlap", "focus",
                                                                 "label_issue_score")},
    **pinned(shown.columns)})
st.caption(f"label_issue_score: 1 − cleanlab's self-confidence label quality (rank 1 = most likely a wrong label; "
           f"{int(table['label_issue'].sum())} flagged on {on_what}). Tag a case 'label error' below to keep it.")

# ------------------------------------------------------------------ gallery
st.subheader("Worst cases")
h1, h2 = st.columns([1, 2])
n_show = int(h1.number_input("How many", 1, 24, 4, key="review_n"))
seg_method = h2.selectbox("Predicted mask", segmentation_choices(ds.domain), key="review_seg")
card0 = cards[members.index(networks[0])] if networks else cards[0]
classes0 = list(card0.classes)
# The gallery draws the map that was scored: the agreement table explains each image's predicted class.
fallback_index = positive_target(classes0)


def case_panels(rid: str) -> dict[str, np.ndarray]:
    """image | truth mask | predicted mask | heatmap | attention of one case, at the network's view."""
    rec = ds.by_id(rid)
    image, truth = read_sample(str(rec.image_path), str(rec.mask_path) if rec.mask_path else None)
    pred = segment(image, str(rec.image_path), seg_method, ds.domain)
    meta_t = meta_key(rec.meta)
    cls_index = int(scored_class.get(rid, fallback_index))
    if explainer is None:  # predictions files only: no network to draw a heatmap with
        return {"image": image, "truth": draw_outline(image, truth, box=False) if truth is not None else image,
                f"predicted ({seg_method})": compare_panel(image, pred, truth, box=True)}
    res = explain_image_cached(explainer, str(rec.image_path), image, pred, meta_t, (method,), cls_index, False,
                               mask_key=seg_method)
    cls_name = (classes0[cls_index] if len(classes0) > 1 else
                (classes0[0] if cls_index == 1 else f"not {classes0[0]}")) if classes0 else str(cls_index)
    out = {"image": image,
           "truth": draw_outline(image, truth, box=False) if truth is not None else image,
           f"predicted ({seg_method})": compare_panel(image, pred, truth, box=True),
           f"{method} ('{cls_name}', as scored)": outline_panel(res["view"], res["heats"][method])}
    if res["attention"] is not None:
        out[ATTENTION] = outline_panel(res["view"], res["attention"])
    return out


for _, row in shown.head(n_show).iterrows():
    try:
        panels = case_panels(row["id"])
    except LesionError as e:
        st.error(f"{row['id']}: {e}")
        continue
    st.markdown(f"**{row['id']}** · truth {row['truth']:.0f} · p {row['prob']:.3f} · loss {row['loss']:.3f} · "
                f"agreement {row['agreement']:.2f}"
                + "".join(f" · `{k.replace('_', ' ')}`" for k in FLAGS if row[k]))
    image_grid(list(panels.items()))

# ------------------------------------------------------------------ tags and export
st.subheader("Tags")
store = tag_store(ds)
ids = list(shown["id"]) or list(table["id"])
t1, t2, t3 = st.columns([2, 2, 3])
tag_id = t1.selectbox("Case", ids, key="review_tag_id")
tag = t2.selectbox("Tag", list(TAGS), key="review_tag")
note = t3.text_input("Note", key="review_note")
b1, b2 = st.columns(2)
if b1.button("Save tag", key="review_tag_save"):
    store.set(tag_id, tag, note)
    st.success(f"Tagged {tag_id} as '{tag}'.")
if b2.button("Remove tag", key="review_tag_remove"):
    store.remove(tag_id)
tags = store.all()
st.caption(f"{len(tags)} tagged cases, stored in lesion-lab's cache for this data set ({store.path}), "
           "not in your data folder.")
if tags:
    st.dataframe([{"id": k, **v} for k, v in tags.items()], hide_index=True, width="stretch")
panels = {}
if tags and st.checkbox("Include image panels in the ZIP", value=True, key="review_zip_panels"):
    for rid in tags:
        if rid in set(table["id"]):
            try:
                panels[rid] = case_panels(rid)
            except LesionError:
                pass
csv_bytes, zip_bytes = export_tagged(table, tags, panels)
d1, d2 = st.columns(2)
d1.download_button("Download tagged cases (CSV)", csv_bytes, file_name="tagged_cases.csv", mime="text/csv",
                   key="review_dl_csv", disabled=not tags)
d2.download_button("Download tagged cases with panels (ZIP)", zip_bytes, file_name="tagged_cases.zip",
                   mime="application/zip", key="review_dl_zip", disabled=not tags)

st.divider()
leaks_section(ds, cards, "review_leaks")
finish_page()
