"""Segmentation: Otsu beside the trained networks on one image, then over the whole data set."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from lesion.errors import LesionError
from lesion.explain.overlay import compare_panel
from lesion.metrics import SEG_METRICS, seg_metrics, summary_table
from lesion.segment.compare import THRESHOLDS, metrics_at, paired
from lesion.segment.otsu import OtsuConfig, otsu_segment, preset
from lesion.weights import list_weights
from ui.forms import dataclass_form
from ui.state import page_setup, require_dataset, read_sample, st_progress
from ui.segment import (
    checkpoint_picker,
    dataset_counts,
    image_picker,
    network_probability,
)

finish_page = page_setup()
st.title("Segmentation")
st.caption(
    "Classical Otsu thresholding beside U-Net / LinkNet. Outlines: magenta = method, green = ground truth, "
    "yellow box = the method's bounding box."
)

ds = require_dataset(finish_page)

# ---------------------------------------------------------------- settings (sidebar)
with st.sidebar.expander("Otsu pipeline", expanded=False):
    base = preset(ds.domain)
    cfg: OtsuConfig = dataclass_form(OtsuConfig, base, key=f"otsu.{ds.domain}")
    show_steps = st.checkbox("Show intermediate images", value=False, key="otsu_steps")

shipped = [c.name for c in list_weights(task="segmentation", domain=ds.domain)]
extra = checkpoint_picker()  # user checkpoints: name -> path
available = shipped + list(extra)
models = st.sidebar.multiselect(
    "Networks", available, default=available[:2], key=f"seg_models.{ds.domain}",
    help="Shipped checkpoints for this domain (weights/) and any you add below the list.",
)
threshold = st.sidebar.select_slider("Probability threshold", options=list(THRESHOLDS), value=0.5, key="seg_thr")

methods = {"otsu": None} | {m: extra.get(m, m) for m in models}

# ---------------------------------------------------------------- one image
st.subheader("One image")
record = image_picker(ds)
try:
    image, truth = read_sample(str(record.image_path), str(record.mask_path) if record.mask_path else None)
except LesionError as e:
    st.error(f"Cannot read {record.id}: {e}")
    finish_page(stop=True)

outputs: dict[str, object] = {}
otsu = otsu_segment(image, cfg, return_steps=show_steps)
outputs["otsu"] = otsu.mask
for name in models:
    try:
        outputs[name] = network_probability(methods[name], str(record.image_path), image) > threshold
    except LesionError as e:
        st.error(f"{name}: {e}")

cols = st.columns(len(outputs) + 2)
cols[0].image(image, caption=f"{record.id} ({image.shape[1]}×{image.shape[0]})", width="stretch")
for col, (name, mask) in zip(cols[1:], outputs.items()):
    col.image(compare_panel(image, mask, truth, box=True), caption=name, width="stretch")
if truth is not None:
    cols[-1].image(compare_panel(image, truth, None, pred_color=(0, 255, 0), box=True), caption="ground truth",
                   width="stretch")
else:
    cols[-1].info("No ground-truth mask for this image.")

if truth is not None:
    table = pd.DataFrame([{"method": n, **seg_metrics(m, truth)} for n, m in outputs.items()])
    st.dataframe(table.style.format({m: "{:.3f}" for m in SEG_METRICS}), hide_index=True, width="stretch")
st.caption(f"Otsu threshold on channel '{cfg.channel}': {otsu.threshold:.1f}")

if show_steps and otsu.steps:
    st.markdown("**Otsu pipeline, step by step** (at the working size)")
    step_cols = st.columns(min(len(otsu.steps), 6))
    for i, (step, img) in enumerate(otsu.steps.items()):
        step_cols[i % len(step_cols)].image(img, caption=step, width="stretch", clamp=True)

# ---------------------------------------------------------------- the whole data set
st.divider()
st.subheader("Whole data set")
if not ds.has_masks:
    st.info("This data set has no masks, so methods cannot be scored over it.")
    finish_page(stop=True)

n_masks = sum(r.mask_path is not None for r in ds.records)
st.caption(f"{n_masks} images with masks. Each method runs once; the threshold slider then re-scores instantly.")
if st.button("Run on the whole data set", type="primary", key="seg_run_all"):
    st.session_state["seg_ran"] = True

if st.session_state.get("seg_ran"):
    frames = []
    for name, ref in methods.items():
        update, done = st_progress(f"Running {name}…")
        try:
            frames.append(dataset_counts(ds, name, ref, cfg, progress=update))
        except LesionError as e:
            st.error(f"{name}: {e}")
        done()
    if not frames:
        finish_page(stop=True)
    per_image = metrics_at(pd.concat(frames, ignore_index=True), threshold)
    errors = per_image[per_image["error"].notna()]
    if len(errors):
        st.warning(f"{errors['id'].nunique()} images could not be scored; see the 'error' column.")

    st.markdown(f"**Comparison** (mean and 95% bootstrap CI, threshold {threshold})")
    summary = summary_table(per_image, metrics=("iou", "dice", "precision", "recall", "thresholded_jaccard"))
    st.dataframe(summary, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in summary.columns if c not in ("method", "n")})

    left, right = st.columns(2)
    hist = px.histogram(per_image, x="iou", color="method", barmode="overlay", nbins=30, opacity=0.6,
                        title="Per-image IoU")
    left.plotly_chart(hist, width="stretch")

    nets = [m for m in methods if m != "otsu"]
    if nets:
        other = right.selectbox("Paired with Otsu", nets, key="seg_pair")
        pair = paired(per_image, "otsu", other)
        scatter = px.scatter(pair, x="otsu", y=other, hover_name="id", custom_data=["id"],
                             title=f"Per-image IoU: Otsu vs {other} (click a point to open it)",
                             range_x=[0, 1], range_y=[0, 1])
        scatter.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(dash="dot", color="grey"))
        event = right.plotly_chart(scatter, width="stretch", on_select="rerun", selection_mode="points",
                                   key="seg_scatter")
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        if points:
            picked = points[0].get("customdata", [None])[0] or points[0].get("hovertext")
            if picked and picked != st.session_state.get("seg_image_id"):
                st.session_state["seg_image_id"] = picked
                st.rerun()
        wins = int((pair["difference"] < 0).sum())
        right.caption(f"Otsu beats {other} on {wins} of {len(pair)} images (points below the diagonal).")

    st.markdown("**Per-image results** (click a column header to sort)")
    st.dataframe(per_image, hide_index=True, width="stretch",
                 column_config={m: st.column_config.NumberColumn(format="%.3f") for m in SEG_METRICS})
    st.download_button("Download per-image results (CSV)", per_image.to_csv(index=False).encode(),
                       file_name=f"segmentation_{ds.layout}.csv", mime="text/csv")
finish_page()
