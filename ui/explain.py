"""Streamlit glue of the Explain, Failure review and Upload pages: classifier pickers, cached heatmaps,
data-set agreement runs, the tag store. Computation lives in ``lesion.explain`` and ``lesion.review``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import streamlit as st

from lesion.card import ModelCard
from lesion.classify.metadata import METADATA_KEYS
from lesion.errors import LesionError
from lesion.explain.agreement import agreement_over_dataset, explain_image
from lesion.infer.engine import predict
from lesion.infer.ensemble import activate
from lesion.review import TagStore
from lesion.segment.otsu import otsu_segment
from lesion.weights import list_weights, weights_file_identity
from ui.classify import CAM_LOCK, classifier_cards, load_classifier_cached
from ui.segment import network_mask
from ui.state import otsu_config


def classifier_picker(domain: str, key: str) -> dict[str, str]:
    """Shipped classifiers of ``domain`` plus any added by path in the sidebar. Returns display name -> path."""
    found = {c.name: c.path for c in classifier_cards(domain)}
    added: dict[str, str] = st.session_state.setdefault(f"explain_user_ckpts.{domain}", {})
    with st.sidebar.expander("Add a classifier by path"):
        path = st.text_input("Checkpoint path (.safetensors with its .json card)", key=f"{key}.ckpt_path").strip()
        if st.button("Add", key=f"{key}.ckpt_add") and path:
            try:
                _, card = load_classifier_cached(path)  # refuses a checkpoint that is not a classifier
                warning = card.domain_warning(domain)
                if warning:  # refused: a skin model on radiographs (or the reverse) has nothing to say
                    raise LesionError(f"Not added: {warning} Switch the data set in the sidebar to that domain.")
                added[f"yours: {card.name}"] = path
                st.success(f"Added {card.name}.")
            except LesionError as e:
                st.error(str(e))
            except Exception as e:  # a user's file can fail in ways no library documents
                st.error(f"This checkpoint cannot be used: {e}")
    return found | dict(added)


def meta_key(meta) -> tuple:
    """A record's metadata as a hashable, ordered cache key: only the keys metadata models read (age, sex, site)."""
    return tuple(sorted((k, v) for k, v in (meta or {}).items() if k in METADATA_KEYS))


def no_classifier_message(domain: str) -> None:
    st.info(
        f"No classifier checkpoints for the '{domain}' domain in `weights/` (classification or multitask). "
        "Train one with `lesion train cls …` (see the README), or add a checkpoint by path in the sidebar.",
        icon=":material/info:",
    )


def class_options(card: ModelCard) -> dict[str, int]:
    """Display label -> class index for the CAM target (binary heads: the class and its negation)."""
    classes = list(card.classes or ["positive"])
    if len(classes) == 1:
        return {classes[0]: 1, f"not {classes[0]}": 0}
    return {c: i for i, c in enumerate(classes)}


def try_load_classifier(ref: str):
    """``(model, card)`` or None after showing why it cannot be loaded."""
    try:
        return load_classifier_cached(ref)
    except LesionError as e:
        st.error(str(e))
    except Exception as e:
        st.error(f"This checkpoint cannot be used: {e}")
    return None


def explain_image_cached(ref: str, image_key: str, _image: np.ndarray, _mask: np.ndarray | None, meta: tuple,
                         methods: tuple[str, ...], class_index: int, aug_smooth: bool, mask_key: str = "") -> dict:
    """:func:`lesion.explain.agreement.explain_image` of one image, cached by model (and its weights file's
    identity: a replaced checkpoint is recomputed), image (``image_key``), metadata, methods, class and
    reference (``mask_key``).

    Returns dict: ``view`` (uint8 ``[S, S, 3]``), ``mask`` (bool or None), ``heats`` {method: ``[S, S]``},
    ``attention`` (``[S, S]`` or None), ``logits`` ``[K]`` and the agreement parts of the first method.
    """
    return _explain_image_cached(ref, weights_file_identity(ref), image_key, _image, _mask, meta, methods,
                                 class_index, aug_smooth, mask_key)


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=128)
def _explain_image_cached(ref: str, identity: tuple, image_key: str, _image: np.ndarray, _mask: np.ndarray | None,
                          meta: tuple, methods: tuple[str, ...], class_index: int, aug_smooth: bool,
                          mask_key: str) -> dict:
    model, card = load_classifier_cached(ref)
    with CAM_LOCK:
        return explain_image(model, card, _image, dict(meta), _mask, methods, class_index, aug_smooth)


def probabilities(logits: np.ndarray, card: ModelCard) -> dict[str, float]:
    """Class name -> probability (sigmoid for one logit, softmax otherwise)."""
    p = activate(np.asarray(logits, dtype=np.float64)[None])[0]
    classes = list(card.classes or [f"class{j}" for j in range(len(p))])
    return {c: float(v) for c, v in zip(classes, p)}


def agreement_table(ds, ref: str, method: str, progress: Callable[[int, int], None] | None = None,
                    radius: int = 3):
    """Agreement of every image for one model, CAM method and opening radius (the map of each image's predicted
    class), kept for the session per data set (Explain and Review share it)."""
    key = (ds.fingerprint(), ref, weights_file_identity(ref), method, int(radius))
    store = st.session_state.setdefault("_agreement_tables", {})
    if key not in store:
        model, card = load_classifier_cached(ref)
        with CAM_LOCK:
            store[key] = agreement_over_dataset(model, card, ds.records, method=method, progress=progress,
                                                opening_radius=int(radius))
    return store[key]


def segmentation_choices(domain: str) -> list[str]:
    """``otsu`` plus the shipped segmentation networks of the domain."""
    return ["otsu"] + [c.name for c in list_weights(task="segmentation", domain=domain)]


def segment(image: np.ndarray, image_key: str, method: str, domain: str) -> np.ndarray:
    """Bool lesion mask of one image by Otsu (the session's settings) or a shipped network (its card's threshold)."""
    if method == "otsu":  # the session's Otsu settings (Segmentation page sidebar), else the domain preset
        return otsu_segment(image, otsu_config(domain)).mask
    return network_mask(method, image_key, image)


def predict_upload(refs: tuple[str, ...], image_key: str, _image: np.ndarray, meta: tuple, tta: str,
                   merge: str) -> dict[str, Any]:
    """Ensemble probabilities of one uploaded image with the patient's metadata (``lesion.infer.engine.predict``
    with TTA), straight from memory: nothing is written to disk. Cached per models (and their weights files'
    identity: a replaced checkpoint is recomputed), image, metadata, TTA and merge."""
    identities = tuple(weights_file_identity(r) for r in refs)
    return _predict_upload(tuple(refs), identities, image_key, _image, meta, tta, merge)


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def _predict_upload(refs: tuple[str, ...], identities: tuple, image_key: str, _image: np.ndarray, meta: tuple,
                    tta: str, merge: str) -> dict[str, Any]:
    members = [load_classifier_cached(r) for r in refs]
    with CAM_LOCK:
        res = predict(members, [(_image, dict(meta))], tta=tta, merge=merge)
    return {"classes": list(res.classes), "probs": res.probs[0].tolist(),
            "members": {k: v[0].tolist() for k, v in res.member_probs.items()},
            "device": res.device, "ms": res.ms_per_image}


def tag_store(ds) -> TagStore:
    """The data set's :class:`lesion.review.TagStore` (re-read on every run: another session may have written)."""
    return TagStore.for_dataset(ds)
