"""Streamlit glue of the Explain, Failure review and Upload pages: classifier pickers, cached heatmaps,
data-set agreement runs, the tag store. Computation lives in ``lesion.explain`` and ``lesion.review``."""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from lesion.errors import LesionError
from ui.classify import CLASSIFIER_TASKS, classifier_cards, load_classifier_cached

#: CAM hooks live on the shared (cached) model: one heatmap computation at a time per server process.
_CAM_LOCK = threading.Lock()
def classifier_picker(domain: str, key: str) -> dict[str, str]:
    """Shipped classifiers of ``domain`` plus any added by path in the sidebar. Returns display name -> path."""
    found = {c["name"]: c["path"] for c in classifier_cards(domain)}
    added: dict[str, str] = st.session_state.setdefault("explain_user_ckpts", {})
    with st.sidebar.expander("Add a classifier by path"):
        path = st.text_input("Checkpoint path (.safetensors with its .json card)", key=f"{key}.ckpt_path").strip()
        if st.button("Add", key=f"{key}.ckpt_add") and path:
            try:
                _, card = load_classifier_cached(path)
                if card.get("task") not in CLASSIFIER_TASKS:
                    raise LesionError(f"{path} is a '{card.get('task')}' checkpoint, not a classifier.")
                added[f"yours: {card.get('name', Path(path).stem)}"] = path
                st.success(f"Added {card.get('name')}.")
            except LesionError as e:
                st.error(str(e))
            except Exception as e:  # a user's file can fail in ways no library documents
                st.error(f"This checkpoint cannot be used: {e}")
    return found | dict(added)


def no_classifier_message(domain: str) -> None:
    st.info(
        f"No classifier checkpoints for the '{domain}' domain in `weights/` (classification or multitask). "
        "Train one with `lesion train cls …` (see the README), or add a checkpoint by path in the sidebar.",
        icon="ℹ️",
    )


def class_options(card: dict) -> dict[str, int]:
    """Display label -> class index for the CAM target (binary heads: the class and its negation)."""
    classes = list(card.get("classes") or ["positive"])
    if len(classes) == 1:
        return {classes[0]: 1, f"not {classes[0]}": 0}
    return {c: i for i, c in enumerate(classes)}


def load_model(ref: str):
    """``(model, card)`` or None after showing why it cannot be loaded."""
    try:
        return load_classifier_cached(ref)
    except LesionError as e:
        st.error(str(e))
    except Exception as e:
        st.error(f"This checkpoint cannot be used: {e}")
    return None


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=128)
def explain_image(ref: str, image_key: str, _image: np.ndarray, _mask: np.ndarray | None, meta: tuple,
                  methods: tuple[str, ...], class_index: int, aug_smooth: bool, mask_key: str = "") -> dict:
    """Heatmaps of one image at the network's input view (cached by model, image, class and methods).

    Returns dict: ``view`` (uint8 ``[S, S, 3]``), ``mask`` (bool or None), ``heats`` {method: ``[S, S]``},
    ``attention`` (``[S, S]`` or None), ``logits`` ``[K]``.
    """
    import torch

    from lesion.classify.metadata import encode_metadata
    from lesion.classify.models import Preprocessing, normalize, prepare_image
    from lesion.classify.multitask import ClassifierOutput, MultiTaskNet
    from lesion.explain.attention import attention_maps
    from lesion.explain.cam import compute_cams

    model, card = load_classifier_cached(ref)
    prep = Preprocessing.from_card(card)
    if _mask is None:
        view, mview = prepare_image(_image, prep), None
    else:
        view, mview = prepare_image(_image, prep, _mask)
    x = torch.from_numpy(normalize(view[None], prep))
    mt = isinstance(model, MultiTaskNet)
    m = torch.from_numpy(encode_metadata(dict(meta))[None]) if mt and model.cfg.use_metadata else None
    with _CAM_LOCK:
        wrapped = ClassifierOutput(model, m).eval()
        dev = next(model.parameters()).device  # the engine may have moved the shared model to the GPU
        with torch.inference_mode():
            logits = wrapped(x.to(dev)).float().cpu().numpy()[0]
        heats = compute_cams(wrapped, x, int(class_index), list(methods), aug_smooth=aug_smooth)
        att = attention_maps(model, x, m)[0] if mt else None
    return {"view": view, "mask": mview, "heats": {k: v[0] for k, v in heats.items()}, "attention": att,
            "logits": logits}


def probabilities(logits: np.ndarray, card: dict) -> dict[str, float]:
    """Class name -> probability (sigmoid for one logit, softmax otherwise)."""
    from lesion.infer.ensemble import activate

    p = activate(np.asarray(logits, dtype=np.float64)[None])[0]
    classes = list(card.get("classes") or [f"class{j}" for j in range(len(p))])
    return {c: float(v) for c, v in zip(classes, p)}


def agreement_table(ds, ref: str, method: str, progress: Callable[[int, int], None] | None = None):
    """Agreement of every image for one model and CAM method, kept for the session (Explain and Review share it)."""
    from lesion.explain.agreement import agreement_over_dataset

    key = (ds.fingerprint(), ref, method)
    store = st.session_state.setdefault("_agreement_tables", {})
    if key not in store:
        model, card = load_classifier_cached(ref)
        with _CAM_LOCK:
            store[key] = agreement_over_dataset(model, card, ds.records, method=method, progress=progress)
    return store[key]


def has_agreement_table(ds, ref: str, method: str) -> bool:
    return (ds.fingerprint(), ref, method) in st.session_state.get("_agreement_tables", {})


def segmentation_choices(domain: str) -> list[str]:
    """``otsu`` plus the shipped segmentation networks of the domain."""
    from lesion.weights import list_weights

    return ["otsu"] + [c["name"] for c in list_weights(task="segmentation", domain=domain)]


def segment(image: np.ndarray, image_key: str, method: str, domain: str) -> np.ndarray:
    """Bool lesion mask of one image by Otsu (domain preset) or a shipped network (threshold 0.5)."""
    if method == "otsu":
        from lesion.segment.otsu import otsu_segment, preset

        return otsu_segment(image, preset(domain)).mask
    from ui.segment import network_probability

    return network_probability(method, image_key, image) > 0.5


@st.cache_resource(show_spinner=False)
def _upload_dir() -> str:
    """A private temporary folder for uploads of this server process (never the app's or the data's folder)."""
    return tempfile.mkdtemp(prefix="lesion-upload-")


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def predict_upload(refs: tuple[str, ...], image_key: str, _image: np.ndarray, meta: tuple, tta: str,
                   merge: str) -> dict[str, Any]:
    """Ensemble probabilities of one uploaded image (``lesion.infer.engine.predict`` with TTA).

    The image is written to a private temporary PNG so that the engine reads it like a record carrying the
    patient's metadata.
    """
    from types import SimpleNamespace

    from PIL import Image

    from lesion.infer.engine import predict

    path = Path(_upload_dir()) / f"{image_key}.png"
    if not path.is_file():
        Image.fromarray(_image).save(path)
    rec = SimpleNamespace(id="upload", image_path=path, meta=dict(meta))
    members = [load_classifier_cached(r) for r in refs]
    with _CAM_LOCK:
        res = predict(members, [rec], tta=tta, merge=merge)
    return {"classes": list(res.classes), "probs": res.probs[0].tolist(),
            "members": {k: v[0].tolist() for k, v in res.member_probs.items()},
            "device": res.device, "ms": res.ms_per_image}


def tag_store(ds):
    """The data set's :class:`lesion.review.TagStore` (re-read on every run: another session may have written)."""
    from lesion.review import TagStore

    return TagStore.for_dataset(ds)
