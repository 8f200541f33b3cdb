"""Upload: your own image through the classifiers (ensemble with TTA), per-class probabilities, the chosen
class's heatmap and attention mask, and the segmentation beside them."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import streamlit as st

from lesion.classify.metadata import SEX_VOCAB, SITE_VOCAB
from lesion.data.upload import decode_upload, upload_extensions
from lesion.errors import LesionError
from lesion.explain.attention import ATTENTION, outline_panel
from lesion.explain.cam import FAST_METHODS
from lesion.explain.overlay import compare_panel
from lesion.infer.tta import DEFAULT_TTA, TTA_NAMES
from lesion.preprocess import geometry
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
from ui.state import current_dataset, in_options, keep, kept_members, members_name, page_setup, set_kept
from ui.trust import default_models, follows_dataset, image_kind, model_label, synthetic_notes, upload_domain_warning
from ui.uploads import clear_session_uploads, save_upload

DOMAINS = {"derm": "dermoscopy", "cxr": "chest X-ray"}

finish_page = page_setup()
st.title("Upload")
st.caption("Analyse an image of your own. It is kept in a folder of this session only (under lesion-lab's cache), "
           "replaced by your next upload and deleted when the session ends.")

ds = current_dataset()
compute = require_compute(finish_page)
#: What the upload is judged against: the uploaded image itself (a real image, never the sidebar's data set).
upload_data = SimpleNamespace(synthetic=False, name="your upload")

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
kind = image_kind(image)
if st.session_state.get("_upload_kind_for") != key:  # a new image: its type is judged from the image itself
    st.session_state["_upload_kind_for"] = key
    set_kept("upload_domain", kind)
    st.session_state.pop("upload_domain", None)
c0, c00 = st.columns([1, 3])
domain = c0.radio("Image type", list(DOMAINS), format_func=DOMAINS.get, horizontal=True,
                  key=keep("upload_domain", kind, valid=in_options(list(DOMAINS))),
                  help="Judged from the image (grey like a radiograph: chest X-ray; colour: dermoscopy); change it "
                       "if the guess is wrong. It decides which models are offered.")
c00.caption(f"Image type judged from the image itself ({'grey, like a radiograph' if kind == 'cxr' else 'colour'}): "
            f"**{DOMAINS[kind]}**" + ("" if domain == kind else f"; you chose **{DOMAINS[domain]}**")
            + f". Models of the **{DOMAINS[domain]}** domain are offered; the sidebar's data set plays no part here.")
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
upload_default = default_models(list(shipped.values()), upload_data)
members = c1.multiselect("Classifiers", names, format_func=lambda n: model_label(shipped[n]) if n in shipped else n,
                         key=kept_members("upload_members", domain, names, upload_default,
                                          follow=follows_dataset(members_name(domain), upload_data,
                                                                 list(shipped.values()), upload_default)))
tta = c2.selectbox("TTA", TTA_NAMES, key=keep("upload_tta", DEFAULT_TTA, "tta", in_options(TTA_NAMES, DEFAULT_TTA)))
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
for note in synthetic_notes(cards, upload_data):  # judged against the upload (a real image), not the sidebar
    st.warning(note, icon=":material/warning:")

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
seg_options = segmentation_choices(domain)
if domain == "cxr":  # the lung fields come from the lung network; Otsu thresholds a radiograph's bones and air
    nets = [m for m in seg_options if m != "otsu"]
    seg_options = sorted(nets, key=lambda m: (0 if "unet" in m else 1, m)) + ["otsu"]
seg_method = st.selectbox("Segmentation", seg_options, key=keep(f"upload_seg.{domain}", seg_options[0],
                                                               valid=in_options(seg_options)))
try:
    mask = segment(image, key, seg_method, domain)
    res = explain_image_cached(choices[members[0]], key, image, mask, meta, (method,), options[label], False,
                               mask_key=seg_method)
except LesionError as e:
    st.error(str(e))
    finish_page(stop=True)


def crop_box(img: np.ndarray, prep) -> np.ndarray:
    """The image with the network's centre crop (:func:`lesion.preprocess.geometry`) drawn in yellow, when the
    model crops."""
    out = img.copy()
    if prep.resize != "crop":
        return out
    y0, x0, ch, cw = geometry(out.shape[:2], prep).crop
    t = max(2, min(ch, cw) // 150)
    for sl in ((slice(y0, y0 + t), slice(x0, x0 + cw)), (slice(y0 + ch - t, y0 + ch), slice(x0, x0 + cw)),
               (slice(y0, y0 + ch), slice(x0, x0 + t)), (slice(y0, y0 + ch), slice(x0 + cw - t, x0 + cw))):
        out[sl] = (255, 220, 0)
    return out


full = crop_box(compare_panel(image, mask, None, box=True), card.preprocessing)
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
              f"{card.preprocessing.size_text} px.")
finish_page()
