"""Shortcut audit: over a data set (or a seeded sample of it), each image's CAM mass outside the lesion (dermoscopy)
or outside the lung fields (X-ray), crossed with correctness: does attention outside the lesion predict errors?"""
from __future__ import annotations

import numpy as np
import streamlit as st

from lesion.analyse.shortcuts import (MIN_CLASS, NO_MASK, References, judge, region_words, sample_records,
                                      shortcut_verdict, verdict_meaning)
from lesion.errors import LesionError
from lesion.explain.cam import methods_for
from lesion.explain.overlay import draw_outline, heatmap_overlay
from lesion.infer.evaluate import label_vector
from lesion.segment.lungs import default_lung_model, lung_model_names
from ui.classify import require_classifiers, run_gate, threshold_control
from ui.compute import heatmaps_where, needs_this_machine, require_compute
from ui.explain import explain_image_cached, measured_cam_ms, meta_key, try_load_classifier
from ui.scope import human_time, scope_choice, stoppable, stopped_note
from ui.shortcuts import audit_table, clicked_id, lung_fields, measured_lung_ms, scatter_figure
from ui.state import in_options, keep, kept, members_name, page_setup, read_sample, require_dataset
from ui.trust import default_models, model_label, show_model_notes

finish_page = page_setup()
st.title("Shortcut audit")
st.caption("Does the model look outside the lesion (dermoscopy) or outside the lung fields (chest X-ray) when it is "
           "wrong? Each audited image gets the CAM of its predicted class at the network's view and the share of "
           "that map's mass outside the mask; the ROC-AUC of that share for 'the prediction is wrong' (95% bootstrap "
           "CI) says whether attention outside predicts errors. Values are cached by image and mask content, "
           "checkpoint and method.")

ds = require_dataset(finish_page)
compute = require_compute(finish_page)
if compute.remote:
    st.info(needs_this_machine("The shortcut audit (one heatmap per image, measured against its mask here)"))
    finish_page(stop=True)
region = region_words(ds.domain)

# ------------------------------------------------------------------ member, CAM method
cards = require_classifiers(ds.domain, finish_page)
by_name = {c.name: c for c in cards}
names = list(by_name)
first_kept = next((m for m in (kept(members_name(ds.domain)) or []) if m in by_name), None)
default = first_kept or default_models(cards, ds, 1)[0]
c1, c2 = st.columns([3, 2])
name = c1.selectbox("Model", names, format_func=lambda n: model_label(by_name[n]),
                    key=keep("shortcuts_model", default, valid=in_options(names, default)),
                    help="One member: its CAM is measured. Starts with the first model chosen on the other pages.")
loaded = try_load_classifier(name)
if loaded is None:
    finish_page(stop=True)
model, card = loaded
show_model_notes([card], ds)
differentiable = getattr(getattr(model, "net", model), "differentiable", True)
offered = list(methods_for(differentiable))
method = c2.selectbox("Heatmap", offered, key=keep("shortcuts_method" if differentiable else "shortcuts_method.nograd",
                                                   offered[0], valid=in_options(offered)),
                      help="The map of each image's predicted class. A member without gradients (an imported ONNX "
                           "or TorchScript network) gets occlusion sensitivity only.")
if method == "scorecam":
    st.warning("Score-CAM runs one forward pass per channel of the target layer: minutes per image on a CPU.")
target = "melanoma" if card.target in (None, "dx7") else card.target
if card.target == "dx7":
    st.caption("A seven-class head: its 'mel' probability is judged for melanoma.")

# ------------------------------------------------------------------ which images
scope = scope_choice([card], ds, "shortcuts")
y_scope = label_vector(scope.records, target)
labelled = [r for r, v in zip(scope.records, y_scope) if np.isfinite(v)]
if not labelled:
    st.info(f"None of the {len(scope.records)} images in scope has a '{target}' label: correctness cannot be judged "
            "here. Choose a labelled data set in the sidebar.")
    finish_page(stop=True)
s1, s2, s3 = st.columns([2, 1, 1])
sample_on = s1.checkbox("Sample images", key=keep("shortcuts_sample_on", len(labelled) > 500),
                        help="A seeded draw without replacement from the labelled images in scope, kept in data-set "
                             "order; the same seed gives the same images.")
n_sample = int(s2.number_input("N", 2, max(2, len(labelled)), key=keep("shortcuts_n", min(200, len(labelled)),
                                                                       valid=lambda v: min(max(2, int(v or 2)),
                                                                                           max(2, len(labelled)))),
                               disabled=not sample_on))
seed = int(s3.number_input("Seed", 0, 2**31 - 1, key=keep("shortcuts_seed", 0, valid=lambda v: int(v or 0)),
                           disabled=not sample_on))
records = sample_records(labelled, n_sample if sample_on else None, seed)
unlabelled = len(scope.records) - len(labelled)
on_what = (f"a seeded sample of {len(records)} (seed {seed}) of the {len(labelled)} labelled images in scope"
           if sample_on and len(records) < len(labelled) else f"the {len(labelled)} labelled images in scope")
on_what += f" — {scope.words}" + (f"; {unlabelled} unlabelled images not audited" if unlabelled else "")

# ------------------------------------------------------------------ the masks
lungs = None
if ds.domain == "cxr" and any(r.mask_path is None for r in records):
    lung_names = lung_model_names()
    none_word = "none: leave radiographs without a lung mask out"
    options = lung_names + [none_word]
    best = default_lung_model(lung_names) or none_word
    chosen = st.selectbox("Lung fields for radiographs without a lung mask", options,
                          key=keep("shortcuts_lungs", best, valid=in_options(options, best)),
                          help="The mask a CAM is measured against: the data set's lung mask when the image has one, "
                               "else the lung fields this network predicts (cached by image content and network).")
    lungs = lung_fields(chosen) if chosen != none_word else None
refs = References(ds.domain, lungs)
counts = refs.counts(records)
left_out = counts.get(NO_MASK, 0)
n_cam = len(records) - left_out
n_lung = counts.get(lungs.source, 0) if lungs is not None else 0
mask_words = ", ".join(f"{n} {src}" + (" (left out: nothing to measure against)" if src == NO_MASK else "")
                       for src, n in counts.items())
st.caption(f"Masks: {mask_words}.")
if n_cam == 0:
    st.warning(f"None of the {len(records)} images has a mask of {region}: there is nothing to measure a heatmap "
               "against. Use a data set with masks" + (", or choose a lung network above." if ds.domain == "cxr"
                                                        else "."))
    finish_page(stop=True)

# ------------------------------------------------------------------ the plan, said before Run
measurable = [r for r in records if refs.source(r) != NO_MASK]
cam_ms = measured_cam_ms(name, method, measurable)
lung_ms = measured_lung_ms(lungs.ref, [r for r in measurable if r.mask_path is None]) if n_lung else 0.0
secs = (n_cam * cam_ms + n_lung * lung_ms) / 1000.0
timed = (f"about {human_time(secs)} on this machine** (measured: {cam_ms:.0f} ms per heatmap" if np.isfinite(cam_ms)
         else f"not timed before Run** ({method} runs one forward pass per channel: minutes per image on a CPU")
st.caption(f"**This run computes {n_cam} images × 1 member × 1 {method} pass = {n_cam:,} heatmap passes"
           + (f", plus {n_lung} lung masks by {lungs.name}" if n_lung else "")
           + f": {timed}"
           + (f", {lung_ms:.0f} ms per lung mask" if n_lung else "") + "; images already in the cache are read, "
           f"not computed). On {on_what}." + (f" {left_out} images without a mask are left out." if left_out else "")
           + " A run can be stopped: what it finished stays cached.")
stopped_note("shortcuts")
run_gate("shortcuts", "Run the audit", f"Computes one {method} map per image with a mask and its share outside "
         f"{region}.", finish_page, identity=ds.fingerprint())
table = stoppable("shortcuts", "Heatmaps…", lambda update: audit_table(ds, name, method, records, refs, update),
                  finish_page)
st.caption(f"Heatmaps computed on **{heatmaps_where(compute)}**.")

# ------------------------------------------------------------------ correctness at the threshold in use
y = label_vector(records, target)
errors = table[table["error"].astype(str) != ""]
if len(errors):
    st.warning(f"{len(errors)} image(s) or masks could not be read and are left out: "
               + "; ".join(f"{i}: {e}" for i, e in zip(errors["id"][:5], errors["error"][:5]))
               + (" …" if len(errors) > 5 else ""))
prob = table["prob"].to_numpy(dtype=np.float64)
has_value = table["has_mask"].to_numpy(bool) & np.isfinite(prob)
# No ensemble context: this threshold is chosen on the audited images (a sample, those with masks) by the CAM pass's
# probabilities, so the sidebar never shows it as the session ensemble's threshold.
threshold, thr_words = threshold_control("shortcuts", np.where(has_value, y, np.nan), prob)
judged = judge(table, y, threshold).assign(split=lambda t: [scope.split_of(i) for i in t["id"]])
rows = judged[judged["judged"]].reset_index(drop=True)
wrong = ~rows["correct"].astype(bool).to_numpy()
v = shortcut_verdict(rows["outside"].to_numpy(dtype=np.float64), wrong, np.ones(len(rows), bool), n_boot=1000)
what = (f"{name}, {method} map of the predicted class (column class_index; a one-logit head: p ≥ 0.5), probability "
        f"of the same single forward pass; on {on_what}; wrong = on the wrong side of the {thr_words}")

# ------------------------------------------------------------------ the verdict
st.subheader("Does attention outside predict errors?")
st.caption(f"Data: {what}. Audited: **{v['n']}** images with a value ({v['n_wrong']} wrong, {v['n'] - v['n_wrong']} "
           f"right); left out: {left_out} without a mask, {v['n_empty_map']} all-zero maps (no share to measure)"
           + (f", {len(errors)} unreadable" if len(errors) else "") + ".")
if v["note"]:
    note = v["note"][:1].upper() + v["note"][1:]
    st.info(f"**Inconclusive: no AUROC on this group.** {note}. Audit more images (turn off the sample or raise N). "
            f"(Inconclusive: {verdict_meaning('inconclusive', ds.domain)})")
else:
    lo, hi = v["ci"]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("AUROC of outside mass for 'wrong'", f"{v['auc']:.3f}",
              help="0.5 = the share outside says nothing about errors; above 0.5: wrong predictions look outside more.")
    m2.metric("95% CI", f"{lo:.3f}–{hi:.3f}", help="bootstrap over images (1000 resamples)")
    m3.metric("images (wrong)", f"{v['n']} ({v['n_wrong']})")
    m4.metric("mean outside: wrong / right", f"{v['mean_outside_wrong']:.2f} / {v['mean_outside_right']:.2f}")
    box = {"supports": st.success, "contradicts": st.warning}.get(v["verdict"], st.info)
    meaning = verdict_meaning(v["verdict"], ds.domain)
    box(f"**{v['verdict'].capitalize()}** (claim: {v['claim']}). {meaning[0].upper()}{meaning[1:]}")
st.caption(f"The AUROC needs at least {MIN_CLASS} wrong and {MIN_CLASS} right predictions."
           + (" The threshold is chosen on these images, so the error count at it is optimistic for new images."
              if "chosen on these images" in thr_words else ""))

# ------------------------------------------------------------------ table and scatter
KEY_COLUMNS = ["id", "outside_mass", "correct", "probability", "label", "loss", "mask_source", "split", "class_index"]
shown = rows.rename(columns={"outside": "outside_mass", "prob": "probability"})[KEY_COLUMNS].sort_values(
    "outside_mass", ascending=False, na_position="last").reset_index(drop=True)
left, right = st.columns([3, 2])
with left:
    st.markdown(f"**Per image** ({len(shown)} judged, {v['n']} with a share; highest outside mass first; click a "
                "header to sort)")
    st.dataframe(shown, hide_index=True, width="stretch", key="shortcuts_table", column_config={
        **{c: st.column_config.NumberColumn(format="%.3f") for c in ("outside_mass", "probability", "loss")},
        "id": st.column_config.Column(pinned=True)})
    st.download_button("Download the audit (CSV)", shown.to_csv(index=False).encode(), file_name="shortcut_audit.csv",
                       mime="text/csv", key="shortcuts_dl")
with right:
    axis = st.radio("Against", ["prob", "loss"], horizontal=True, key="shortcuts_axis",
                    format_func={"prob": "probability", "loss": "loss"}.get)
    plotted = rows.dropna(subset=["outside"])
    fig = scatter_figure(plotted, axis, f"Outside mass vs {'probability' if axis == 'prob' else 'loss'}: "
                                        f"{len(plotted)} images, {int((~plotted['correct'].astype(bool)).sum())} "
                                        f"wrong ({name}, {method}); click a point to open it")
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="shortcuts_scatter")
    st.caption(f"Data: {what}. Points with no share (all-zero maps) are not drawn.")
    picked = clicked_id(event)
    if picked and picked != st.session_state.get("shortcuts_last_click"):  # a new click, not the one still selected
        st.session_state["shortcuts_last_click"] = st.session_state["shortcuts_image_id"] = picked

# ------------------------------------------------------------------ one image: its CAM and mask
st.subheader("One image")
ids = list(shown["id"])
if not ids:
    st.info("No audited image to show.")
    finish_page(stop=True)
wanted = st.session_state.get("shortcuts_image_id")
rid = st.selectbox("Image (highest outside mass first; or click a point)", ids,
                   index=ids.index(wanted) if wanted in ids else 0, key=f"shortcuts_pick.{wanted}")
st.session_state["shortcuts_image_id"] = rid
row = shown.loc[shown["id"] == rid].iloc[0]
rec = ds.by_id(rid)
try:
    image, _ = read_sample(str(rec.image_path), None)
    mask = refs.mask(rec, image)
    res = explain_image_cached(name, str(rec.image_path), image, mask, meta_key(rec.meta), (method,),
                               int(row["class_index"]), False, mask_key=f"{row['mask_source']}|{refs.key(rec)}")
except LesionError as e:
    st.error(f"{rid}: {e}")
    finish_page(stop=True)
view, ref_mask, heat = res["view"], res["mask"], res["heats"][method]
outline = (0, 255, 255)
p1, p2, p3 = st.columns(3)
p1.image(view, width="stretch", caption=f"{rid} at the network's view")
p2.image(draw_outline(heatmap_overlay(view, heat), ref_mask, color=outline, box=False), width="stretch",
         caption=f"{method} (class {int(row['class_index'])}) · cyan: {row['mask_source']}")
p3.image(draw_outline(view, ref_mask, color=outline, box=False), width="stretch",
         caption=f"mask: {row['mask_source']}" + (f" ({lungs.name})" if lungs is not None
                                                  and row["mask_source"] == lungs.source else ""))
st.markdown(f"**{rid}** · label {row['label']:.0f} · p {row['probability']:.3f} · "
            f"{'right' if row['correct'] else 'wrong'} at the {thr_words} · outside mass **{row['outside_mass']:.2f}**"
            f" · {row['split']}")
finish_page()
