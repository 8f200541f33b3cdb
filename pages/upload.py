"""Upload: your own image through the classifiers (ensemble with TTA), per-class probabilities, the chosen
class's heatmap and attention mask, and the segmentation beside them."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from lesion.classify.metadata import SEX_VOCAB, SITE_VOCAB
from lesion.data.upload import decode_upload, upload_extensions
from lesion.errors import LesionError
from lesion.explain.attention import ATTENTION, outline_panel
from lesion.explain.cam import FAST_METHODS
from lesion.explain.overlay import compare_panel
from lesion.infer.tta import TTA_NAMES
from ui.classify import classifier_cards
from ui.compute import heatmaps_where, ran_on, require_compute
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
from ui.state import current_dataset, in_options, keep, kept_members, page_setup
from ui.trust import default_models, model_label, show_model_notes, upload_domain_warning
from ui.uploads import clear_session_uploads, save_upload

DOMAINS = {"derm": "dermoscopy", "cxr": "chest X-ray"}

finish_page = page_setup()
st.title("Upload")
st.caption("Analyse an image of your own. It is kept in a folder of this session only (under lesion-lab's cache), "
           "replaced by your next upload and deleted when the session ends.")

ds = current_dataset()
compute = require_compute(finish_page)
c0, c00 = st.columns([1, 3])
domain = c0.radio("Image type", list(DOMAINS), format_func=DOMAINS.get, horizontal=True,
                  key=keep("upload_domain", ds.domain if ds is not None else "derm", valid=in_options(list(DOMAINS))),
                  help="Which models to use: dermoscopy classifiers or chest X-ray classifiers.")
c00.caption(f"Models of the **{DOMAINS[domain]}** domain are offered.")

exts = upload_extensions()
file = st.file_uploader("Image", type=exts, key="upload_file",
                        help="PNG, JPEG, BMP, TIFF (8/16-bit, grey, RGBA)" + (", DICOM (.dcm)" if "dcm" in exts
                                                                               else "; DICOM needs pydicom"))
if file is not None:
    name, data = file.name, file.getvalue()
elif "upload_test_file" in st.session_state:  # AppTest cannot drive st.file_uploader
    name, data = st.session_state["upload_test_file"]
else:
    st.info("Upload an image to start.")
    finish_page(stop=True)

key = hashlib.sha1(data).hexdigest()[:16]
if st.session_state.get("_upload_saved") != key:
    try:
        save_upload(name, data)  # this session's folder, created again when missing
        st.session_state["_upload_saved"] = key
    except OSError as e:
        st.error(f"Cannot store the upload in this session's folder: {e.strerror or e}.")
        finish_page(stop=True)
try:
    decoded = decode_upload(data, name)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)
image = decoded.image
for note in decoded.notes:
    st.info(f"{name}: {note}.")
if st.button("Remove my upload from the server", key="upload_remove"):
    clear_session_uploads()
    st.session_state.pop("_upload_saved", None)
    st.session_state.pop("upload_test_file", None)
    st.success("Removed. (The image stays in this browser tab until you clear the uploader.)")

look = upload_domain_warning(image, domain)
if look:
    st.warning(look, icon=":material/warning:")

choices = classifier_picker(domain, key="upload")
if not choices:
    st.image(image, caption=f"{name} ({image.shape[1]}×{image.shape[0]})", width=320)
    no_classifier_message(domain)
    finish_page(stop=True)

shipped = {c.name: c for c in classifier_cards(domain)}
c1, c2, c3 = st.columns([3, 1, 1])
names = list(choices)
members = c1.multiselect("Classifiers", names, format_func=lambda n: model_label(shipped[n]) if n in shipped else n,
                         key=kept_members("upload_members", domain, names, default_models(list(shipped.values()), ds)))
tta = c2.selectbox("TTA", TTA_NAMES, key=keep("upload_tta", "d4", "tta", in_options(TTA_NAMES, "d4")))
method = c3.selectbox("Heatmap", list(FAST_METHODS), key=keep("upload_method", FAST_METHODS[0],
                                                               valid=in_options(list(FAST_METHODS))))
if not members:
    st.warning("Choose at least one classifier.")
    finish_page(stop=True)
loaded = [try_load_classifier(choices[m]) for m in members]
if any(x is None for x in loaded):
    finish_page(stop=True)
cards = [c for _, c in loaded]
refused = [w for w in (c.domain_warning(domain) for c in cards) if w]
if refused:
    for w in refused:
        st.error(w)
    finish_page(stop=True)
if ds is not None:
    show_model_notes(cards, ds)

users = [c.name for c in cards if c.uses_metadata]
m1, m2, m3 = st.columns(3)
no_meta = not users
age = m1.number_input("Age (optional, 0 = unknown)", 0, 120, key=keep("upload_age", 0, valid=int), disabled=no_meta)
sex = m2.selectbox("Sex", list(SEX_VOCAB), key=keep("upload_sex", "unknown", valid=in_options(list(SEX_VOCAB))),
                   disabled=no_meta)
site = m3.selectbox("Site", list(SITE_VOCAB), key=keep("upload_site", "unknown", valid=in_options(list(SITE_VOCAB))),
                    disabled=no_meta)
if no_meta:
    st.caption("Age, sex and site are off: none of the chosen classifiers reads patient metadata "
               "(only multi-task models trained with metadata do).")
else:
    others = [c.name for c in cards if not c.uses_metadata]
    st.caption(f"Age, sex and site are read by {', '.join(users)}"
               + (f"; {', '.join(others)} ignore{'s' if len(others) == 1 else ''} them." if others else "."))
meta = meta_key({"age": age or None, "sex": sex, "site": site} if not no_meta else {})
try:
    pred = predict_upload(tuple(choices[m] for m in members), key, image, meta, tta, "mean_prob")
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)

rows = [{"class": c, "ensemble": p, **{m: pred["members"][m][j] for m in pred["members"]}}
        for j, (c, p) in enumerate(zip(pred["classes"], pred["probs"]))]
st.markdown(f"**Probabilities** ({len(members)} model(s) × TTA '{tta}', ran on {ran_on(pred['device'])}, "
            f"{pred['ms']:.0f} ms)"
            + (" · **the image does not look like the models' domain (see above)**" if look else ""))
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

card = cards[0]
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


def crop_box(img: np.ndarray, square: bool) -> np.ndarray:
    """The image with the network's centre-crop square drawn in yellow (3 px), when the model crops."""
    out = img.copy()
    if not square:
        return out
    h, w = out.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    t = max(2, s // 150)
    for sl in ((slice(y0, y0 + t), slice(x0, x0 + s)), (slice(y0 + s - t, y0 + s), slice(x0, x0 + s)),
               (slice(y0, y0 + s), slice(x0, x0 + t)), (slice(y0, y0 + s), slice(x0 + s - t, x0 + s))):
        out[sl] = (255, 220, 0)
    return out


full = crop_box(compare_panel(image, mask, None, box=True), card.preprocessing.center_crop)
st.markdown("**The whole image** and what the network sees")
left, right = st.columns([2, 3])
left.image(full, width="stretch",
           caption=f"{name} ({image.shape[1]}×{image.shape[0]}) · segmentation ({seg_method})"
                   + (" · yellow: the centre crop the network sees" if card.preprocessing.center_crop else ""))
panels = {"network view": res["view"], method: outline_panel(res["view"], res["heats"][method], truth=res["mask"])}
if res["attention"] is not None:
    panels[ATTENTION] = outline_panel(res["view"], res["attention"], truth=res["mask"])
cols = right.columns(len(panels))
for col, (cap, img) in zip(cols, panels.items()):
    col.image(img, caption=cap, width="stretch")
right.caption(f"Heatmap computed on {heatmaps_where(compute)}; segmentation on this machine. "
              f"Red outline + green box: the thresholded heatmap; cyan: the segmentation. The network view is "
              f"the {'centre crop' if card.preprocessing.center_crop else 'whole image'} resized to "
              f"{card.preprocessing.size} px.")
finish_page()
