"""Upload: your own image through the classifiers (ensemble with TTA), per-class probabilities, the chosen
class's heatmap and attention mask, and the segmentation beside them."""
from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from lesion.classify.metadata import SEX_VOCAB, SITE_VOCAB
from lesion.data.upload import decode_upload, upload_extensions
from lesion.errors import LesionError
from lesion.explain.attention import ATTENTION, outline_panel
from lesion.explain.cam import FAST_METHODS
from lesion.explain.overlay import compare_panel
from lesion.infer.tta import TTA_NAMES
from ui.explain import (
    class_options,
    classifier_picker,
    explain_image_cached,
    meta_key,
    no_classifier_message,
    predict_upload,
    segment,
    segmentation_choices,
    try_load_classifier,
)
from ui.state import current_dataset, page_setup

finish_page = page_setup()
st.title("Upload")
st.caption("Analyse an image of your own. It stays in this server's memory; nothing is written to disk. "
           "Models are those of the domain chosen in the sidebar.")

ds = current_dataset()
domain = ds.domain if ds is not None else "derm"
st.caption(f"Domain: **{domain}** (switch the data set in the sidebar to use the other domain's models).")

file = st.file_uploader("Image", type=upload_extensions(), key="upload_file",
                        help="PNG, JPEG, BMP, TIFF (8/16-bit, grey, RGBA)" + (", DICOM" if "dcm" in upload_extensions()
                                                                               else "; DICOM needs pydicom"))
m1, m2, m3 = st.columns(3)
age = m1.number_input("Age (optional, 0 = unknown)", 0, 120, 0, key="upload_age")
sex = m2.selectbox("Sex", list(SEX_VOCAB), index=SEX_VOCAB.index("unknown"), key="upload_sex")
site = m3.selectbox("Site", list(SITE_VOCAB), index=SITE_VOCAB.index("unknown"), key="upload_site")

if file is not None:
    name, data = file.name, file.getvalue()
elif "upload_test_file" in st.session_state:  # AppTest cannot drive st.file_uploader
    name, data = st.session_state["upload_test_file"]
else:
    st.info("Upload an image to start.")
    finish_page(stop=True)

try:
    decoded = decode_upload(data, name)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
image = decoded.image
key = hashlib.sha1(data).hexdigest()[:16]
for note in decoded.notes:
    st.info(f"{name}: {note}.")

choices = classifier_picker(domain, key="upload")
if not choices:
    st.image(image, caption=f"{name} ({image.shape[1]}×{image.shape[0]})", width=320)
    no_classifier_message(domain)
    finish_page(stop=True)

c1, c2, c3 = st.columns([3, 1, 1])
names = list(choices)
members = c1.multiselect("Classifiers", names, default=names[: min(3, len(names))], key="upload_members")
tta = c2.selectbox("TTA", TTA_NAMES, index=TTA_NAMES.index("d4"), key="upload_tta")
method = c3.selectbox("Heatmap", list(FAST_METHODS), key="upload_method")
if not members:
    st.warning("Choose at least one classifier.")
    finish_page(stop=True)
loaded = [try_load_classifier(choices[m]) for m in members]
if any(x is None for x in loaded):
    finish_page(stop=True)
meta = meta_key({"age": age or None, "sex": sex, "site": site})
try:
    pred = predict_upload(tuple(choices[m] for m in members), key, image, meta, tta, "mean_prob")
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

rows = [{"class": c, "ensemble": p, **{m: pred["members"][m][j] for m in pred["members"]}}
        for j, (c, p) in enumerate(zip(pred["classes"], pred["probs"]))]
st.markdown(f"**Probabilities** ({len(members)} model(s) × TTA '{tta}', {pred['device']}, {pred['ms']:.0f} ms)")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

card = loaded[0][1]
options = class_options(card)
label = st.radio("Explain class", list(options), horizontal=True, key="upload_class",
                 help=f"Heatmap of the first classifier ({members[0]}).")
seg_method = st.selectbox("Segmentation", segmentation_choices(domain), key="upload_seg")
try:
    mask = segment(image, key, seg_method, domain)
    res = explain_image_cached(choices[members[0]], key, image, mask, meta, (method,), options[label], False,
                        mask_key=seg_method)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
panels = {"image": res["view"], method: outline_panel(res["view"], res["heats"][method], truth=res["mask"])}
if res["attention"] is not None:
    panels[ATTENTION] = outline_panel(res["view"], res["attention"], truth=res["mask"])
panels[f"segmentation ({seg_method})"] = compare_panel(res["view"], res["mask"], None, box=True)
cols = st.columns(len(panels))
for col, (cap, img) in zip(cols, panels.items()):
    col.image(img, caption=cap, width="stretch")
st.caption("Red outline + green box: the Otsu-binarised heatmap; cyan: the segmentation. Shown at the "
           "network's input view (centre crop, resized).")
finish_page()
