"""Embedding map: one member's penultimate features over the data set, laid out in 2-D by UMAP (or PCA), points
coloured by label, error at the threshold in use, probability, a metadata / image-derived column or the
label-issue score; a lasso, box or click (or a pick by id, or an image's nearest neighbours) opens the images."""
from __future__ import annotations

import numpy as np
import streamlit as st

from lesion.analyse.embedding import PROJECTIONS, embed_records, nearest_neighbours, no_features_reason
from lesion.analyse.image_features import DESCRIPTIONS
from lesion.analyse.slices import analysis_frame
from lesion.device import pick_device
from lesion.errors import LesionError
from lesion.infer.chunks import PART_SIZE
from lesion.infer.engine import auto_batch_size
from lesion.infer.evaluate import label_vector, resolve_target, score
from lesion.infer.members import build_members
from ui.analyse import image_columns
from ui.classify import CAM_LOCK, classifier_cards, run_ensemble, run_gate, threshold_control
from ui.compute import needs_this_machine, ran_on, require_compute
from ui.embedding import (BASE_COLOURS, CONTINUOUS, NEGATIVE, POSITIVE, category_colours, colour_columns,
                          group_frame, label_issues_cached, map_figure, map_frame, projection_cached, selected_rows)
from ui.ensemble import ensemble_context
from ui.explain import classifier_picker, no_classifier_message, try_load_classifier
from ui.predfiles import predictions_control
from ui.scope import estimate_seconds, human_time, measured_ms, plan_caption, scope_choice, stoppable, stopped_note
from ui.state import in_options, keep, kept, members_name, page_setup, read_sample, require_dataset
from ui.tables import pinned
from ui.trust import default_models, model_label, show_model_notes

finish_page = page_setup()
st.title("Embedding map")
st.caption("How does a model see the data set? Each image's penultimate features (the pooled layer before the "
           "classifier head) laid out in 2-D: images the model finds alike sit together. Colour the points by "
           "truth, error at the threshold in use, probability, a metadata or image-derived column, or the "
           "label-issue score; lasso, box-select or click points to open those images below. Features are cached "
           "by image content and checkpoint, so a second visit is instant.")

ds = require_dataset(finish_page)
compute = require_compute(finish_page)

# ------------------------------------------------------------------ the member: features need a PyTorch network
choices = classifier_picker(ds.domain, key="embedding")
files = predictions_control(ds, "embedding")
names = list(choices) + list(files)
if not names:
    no_classifier_message(ds.domain)
    finish_page(stop=True)
shipped = {c.name: c for c in classifier_cards(ds.domain)}
ensemble = [m for m in (kept(members_name(ds.domain)) or []) if m in names]  # the other pages' first member
first = (ensemble or default_models([shipped[n] for n in choices if n in shipped], ds, k=1) or names)[0]
name = st.selectbox("Member", names, format_func=lambda n: model_label(shipped[n]) if n in shipped else n,
                    key=keep("embedding_member", first, valid=in_options(names, first)),
                    help="The network whose features are mapped: a shipped checkpoint or one added by path (an "
                         "imported PyTorch model). A predictions file has probabilities only, no features.")
if name in files:
    st.info(no_features_reason(files[name]), icon=":material/info:")
    finish_page(stop=True)
if compute.remote:
    st.info(needs_this_machine("The embedding map (a model server returns probabilities, not features)"),
            icon=":material/info:")
    finish_page(stop=True)
loaded = try_load_classifier(choices[name])
if loaded is None:
    finish_page(stop=True)
card = loaded[1]
net = build_members([loaded], backend="torch")[0]
reason = no_features_reason(net)
if reason:
    st.info(reason, icon=":material/info:")
    finish_page(stop=True)
show_model_notes([card], ds)
try:
    _, target = resolve_target([card], "melanoma" if card.target == "dx7" else None)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

# ------------------------------------------------------------------ what is computed, the map's settings
scope = scope_choice([card], ds, "embedding")
p1, p2, p3 = st.columns([2, 1, 1])
method = p1.radio("Projection", list(PROJECTIONS), format_func=PROJECTIONS.get, horizontal=True,
                  key=keep("embedding_proj", "pca", valid=in_options(list(PROJECTIONS), "pca")),
                  help="PCA (the default: instant) is linear: its axes are the two directions of largest variance. "
                       "UMAP keeps neighbourhoods (clusters), not distances between them; its first use in a process "
                       "compiles (numba), about half a minute to a minute on two CPU cores. Both read the features' "
                       "directions (cosine).")
n_neighbors = int(p2.number_input("UMAP neighbours", 2, 200, 15, key="embedding_nn", disabled=method != "umap",
                                  help="Larger: more global structure; smaller: finer local clusters."))
min_dist = float(p3.slider("UMAP min_dist", 0.0, 0.99, 0.1, 0.01, key="embedding_min_dist",
                           disabled=method != "umap", help="How tightly UMAP packs close points together."))
n_run = len(scope.records)
feat_s = estimate_seconds(n_run, [measured_ms(choices[name], ds)], "none")
umap_words = ("; UMAP's first use in this process compiles for about a minute (numba), then takes seconds"
              if method == "umap" else "; PCA is instant")
st.caption(plan_caption(scope, [choices[name]], [name], "none", ds,
                        extra=f"; then **{n_run} images × {name}'s penultimate features**: one more pass per "
                              f"image, about {human_time(feat_s)} (PyTorch on {pick_device('auto')}; cached by "
                              f"image content and checkpoint){umap_words}"))
stopped_note("embedding")
run_gate("embedding", "Compute the map", "Predicts every image (cached), then reads its features and lays them "
         "out in 2-D.", finish_page, identity=ds.fingerprint())

# ------------------------------------------------------------------ predictions, features, the map
result = stoppable("embedding", "Predicting…", lambda update: run_ensemble(
    ds, [choices[name]], "none", "mean_prob", progress=update, records=scope.records), finish_page)
if result.errors:  # an unreadable image has no score and no features: named here, left off the map
    st.warning(f"{len(result.errors)} image(s) could not be read and are left off the map: "
               + "; ".join(f"{i}: {why}" for i, why in list(result.errors.items())[:5])
               + (" …" if len(result.errors) > 5 else ""))
records = [r for r in scope.records if r.id not in result.errors]
prob_of = dict(zip(result.ids, np.asarray(score(result.probs, result.classes, target), dtype=np.float64)))
device = pick_device("auto")


def features(update):
    """In parts of PART_SIZE images, each cached on disk by itself: a Stop keeps the parts done, and the lock on the
    shared network is held one part at a time, so other sessions' heatmaps are not held up for the whole pass."""
    out = []
    for start in range(0, len(records), PART_SIZE):
        part = records[start:start + PART_SIZE]
        with CAM_LOCK:  # the cached network is shared by every session: placing it is one at a time
            out.append(embed_records(net, part, batch_size=auto_batch_size(device, "none"), device=device,
                                     progress=lambda d, _t, base=start: update(base + d, len(records))))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


feats = stoppable("embedding", "Reading features…", features, finish_page, part="_feat")
ids = [r.id for r in records]
y = label_vector(records, target)
prob = np.array([prob_of.get(i, np.nan) for i in ids], dtype=np.float64)
try:
    proj = projection_cached((net.identity, str(net.prep), ds.content_fingerprint(), tuple(ids)), method, n_neighbors,
                             min_dist, feats)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

# ------------------------------------------------------------------ colour by
meta = ds.to_frame()
meta = meta[meta["id"].isin(set(ids))].reset_index(drop=True)
use_images = st.checkbox("Add image-derived columns to colour by (estimates and heuristics: skin tone by ITA, "
                         "brightness, dark corners, hair, ink, ruler; lung-field intensity on X-rays)",
                         key="embedding_img")
if use_images:
    meta = analysis_frame(ds, image_columns(ds.content_fingerprint(), ds, records))
    meta = meta[meta["id"].isin(set(ids))].reset_index(drop=True)
extra_cols = [c for c in colour_columns(meta) if c not in BASE_COLOURS]
c1, c2 = st.columns([1, 2])
colour = c1.selectbox("Colour by", list(BASE_COLOURS) + extra_cols, key="embedding_colour",
                      format_func=lambda c: BASE_COLOURS.get(c, f"{c} (estimate)" if c in DESCRIPTIONS else c))
with c2:
    threshold, thr_words = threshold_control("embedding", y, prob,
                                             context=ensemble_context(ds.fingerprint(), [name], "none", "mean_prob"))
issues = label_issues_cached(tuple(ids), y, prob).astype({"label_issue_score": float})
frame = map_frame(ids, proj.xy, y, prob, threshold, target, scope.training,
                  extra=group_frame(meta, extra_cols).merge(issues[["id", "label_issue_score"]], on="id", how="left"))
n_lab = int(np.isfinite(y).sum())
scope_words = scope.words.replace("**", "")
colour_words = {
    "label": f"colour: truth for '{target}' ({n_lab} of {len(ids)} labelled)",
    "outcome": f"colour: outcome at the {thr_words} ('{target}' positive when p ≥ {threshold:.3f})",
    "prob": f"colour: {name}'s probability of '{target}' (no TTA)",
    "label_issue_score": ("colour: label-issue score, 1 − cleanlab self-confidence of the labels given these "
                          f"{len(ids)} images' probabilities ({int(issues['label_issue'].sum()) if len(issues) else 0} "
                          "flagged; trust it on held-out images only)"),
    "split": "colour: held-out / training by the card's split",
}.get(colour, f"colour: {colour}" + (f" ({DESCRIPTIONS[colour]})" if colour in DESCRIPTIONS else ""))
if colour == "label_issue_score" and not len(issues):
    st.info("No label-issue scores here: they need labelled images of both classes.")
colours = category_colours(frame[colour].astype(str), fixed={target: POSITIVE, f"not {target}": NEGATIVE}) \
    if colour not in CONTINUOUS else None
shape_words = "; × = training image" if (frame["split"] == "training").any() else ""
title = (f"{proj.words}: {len(ids)} images ({scope_words}), {feats.shape[1]}-d penultimate features of {name}; "
         f"{colour_words}{shape_words}")

# ------------------------------------------------------------------ selection
PICK = {"chart": "the chart (lasso, box or click)", "ids": "image ids",
        "neighbours": "nearest neighbours of an image (feature space)"}
pick_by = st.radio("Select images by", list(PICK), format_func=PICK.get, horizontal=True, key="embedding_pick_by")
picked: list[int] = []
similarity: dict[int, float] = {}
if pick_by == "ids":
    chosen = st.multiselect("Images", ids, key="embedding_ids")
    picked = sorted(ids.index(i) for i in chosen)
elif pick_by == "neighbours":
    n1, n2 = st.columns([3, 1])
    anchor = n1.selectbox("Image", ids, key="embedding_anchor")
    k = int(n2.number_input("Neighbours", 1, 100, 8, key="embedding_k"))
    rows, sims = nearest_neighbours(feats, ids.index(anchor), k)
    picked = [int(r) for r in rows]
    similarity = {int(r): float(s) for r, s in zip(rows, sims)}
fig, trace_rows = map_figure(frame, colour, title, colours, highlight=picked if pick_by != "chart" else (),
                             colour_title=BASE_COLOURS.get(colour, colour))
event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key="embedding_map",
                        width="stretch")
if pick_by == "chart":
    picked = selected_rows(getattr(getattr(event, "selection", None), "points", None) if event else None,
                           trace_rows)
st.caption(f"Data: {scope_words}; {len(ids)} images mapped ({n_lab} labelled for '{target}'); predictions and "
           f"features of {name} ran on **{ran_on(result.device)}** / PyTorch {device}. The map is fit on these "
           f"{len(ids)} images' features; the threshold ({thr_words}) and the label-issue scores are chosen on "
           "them too." + (" UMAP keeps neighbourhoods: the distances between far clusters mean little."
                          if method == "umap" else ""))

# ------------------------------------------------------------------ the selected images
shown = frame[frame["row"].isin(picked).to_numpy()].copy()
if similarity:
    shown.insert(2, "similarity", [similarity.get(int(r), np.nan) for r in shown["row"]])
    shown = shown.sort_values("similarity", ascending=False)
st.subheader(f"Selected: {len(shown)} of {len(ids)} images")
if shown.empty:
    st.caption("Lasso or box-select points on the map (toolbar, top right) or click one; or pick by id or by "
               "nearest neighbours above.")
else:
    if pick_by == "neighbours":
        st.caption(f"The {len(shown) - 1} images closest to **{anchor}** in {name}'s feature space (cosine "
                   f"similarity of the penultimate features, not of the 2-D map).")
    n_show = int(st.number_input("Thumbnails", 1, 60, 12, key="embedding_n_show"))
    per_row = 6
    rows_shown = list(shown.head(n_show).itertuples(index=False))
    for start in range(0, len(rows_shown), per_row):
        cols = st.columns(per_row)
        for col, row in zip(cols, rows_shown[start:start + per_row]):
            rec = ds.by_id(row.id)
            try:
                img, _ = read_sample(str(rec.image_path), None)
            except LesionError as e:
                col.caption(f"{row.id}: {e}")
                continue
            col.image(img, caption=f"{row.id} · {row.label} · p {row.prob:.2f} · {row.split}", width="stretch")
    table = shown.drop(columns=["row", "truth"])
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        **{c: st.column_config.NumberColumn(format="%.3f") for c in ("prob", "label_issue_score", "similarity", "x",
                                                                     "y") if c in table.columns},
        **pinned(table.columns)})
    st.download_button("Download the selected images (CSV)", table.to_csv(index=False).encode(),
                       file_name="embedding_selection.csv", mime="text/csv", key="embedding_dl_sel")
st.download_button("Download the whole map (CSV: id, x, y, label, probability, outcome, columns)",
                   frame.drop(columns=["row"]).to_csv(index=False).encode(), file_name="embedding_map.csv",
                   mime="text/csv", key="embedding_dl_map")
finish_page()
