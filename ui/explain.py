"""Streamlit glue of the Explain, Failure review and Upload pages: classifier pickers, cached heatmaps,
data-set agreement runs, the tag store. Computation lives in ``lesion.explain`` and ``lesion.review``."""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from lesion.card import ModelCard
from lesion.classify.metadata import METADATA_KEYS
from lesion.classify.models import prepare_image
from lesion.data.io import read_image, read_mask
from lesion.errors import LesionError
from lesion.explain.agreement import agreement_over_dataset, agreement_score, explain_batch, explain_image
from lesion.infer.ensemble import activate
from lesion.review import TagStore
from lesion.segment.otsu import otsu_segment
from lesion.serving.backends import predict
from lesion.weights import list_weights
from ui.classify import CAM_LOCK, classifier_cards, load_classifier_cached, member, member_identity
from ui.compute import client, needs_this_machine, served_card, wire_meta
from ui.segment import network_mask
from ui.state import current_compute, otsu_config

#: The agreement parts :func:`lesion.explain.agreement.agreement_score` returns (one column each).
AGREEMENT_COLUMNS = ["n_components", "compactness", "spread", "focus", "overlap", "cam_attention_iou",
                     "cam_attention_corr", "agreement"]


def classifier_picker(domain: str, key: str) -> dict[str, str]:
    """Shipped classifiers of ``domain`` plus any added by path in the sidebar. Returns display name -> path."""
    if current_compute().remote:  # the server runs only the models it serves, named, never a path
        st.sidebar.caption(needs_this_machine("Adding a classifier by path"))
        return {c.name: c.name for c in classifier_cards(domain)}
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
    """``(model, card)`` or None after showing why it cannot be loaded (with the model server: ``(None, the served
    card)``; nothing is loaded here)."""
    try:
        return member(ref)
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
    compute = current_compute()
    return _explain_image_cached(compute.key(), ref, member_identity(ref), image_key, _image, _mask, meta, methods,
                                 class_index, bool(aug_smooth) and not compute.remote, mask_key)


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=128)
def _explain_image_cached(compute_key: tuple, ref: str, identity: tuple, image_key: str, _image: np.ndarray,
                          _mask: np.ndarray | None, meta: tuple, methods: tuple[str, ...], class_index: int,
                          aug_smooth: bool, mask_key: str) -> dict:
    if compute_key[0] == "remote":
        return explain_remote(ref, _image, _mask, dict(meta), methods, class_index)
    model, card = load_classifier_cached(ref)
    with CAM_LOCK:
        return explain_image(model, card, _image, dict(meta), _mask, methods, class_index, aug_smooth)


def explain_remote(name: str, image: np.ndarray, mask: np.ndarray | None, meta: dict | None,
                   methods: tuple[str, ...] | list[str], class_index: int | None, opening_radius: int = 3) -> dict:
    """:func:`lesion.explain.agreement.explain_image`'s dict with the maps computed by the model server
    (:meth:`RemoteClient.explain`): the network view and the reference are cut here with the served card's
    preprocessing (the same crop and size as the server's), and the agreement is scored here on those maps.

    Raises:
        ServerError: the server is down, refuses the token or the request (one line).
    """
    card = served_card(name)
    methods = list(methods)
    out = client().explain(name, image, wire_meta(meta), methods or ["gradcam"], class_index)
    if mask is None:
        view, ref = prepare_image(image, card.preprocessing), None
    else:
        view, ref = prepare_image(image, card.preprocessing, mask)
    heats = {m: np.asarray(out["heats"][m], np.float32) for m in methods}
    att = out["attention"]
    res = {"view": view, "mask": ref, "heats": heats, "heat": heats[methods[0]] if methods else None,
           "attention": None if att is None else np.asarray(att, np.float32),
           "logits": np.asarray(out["logits"], np.float64).ravel(), "class_index": int(out["class_index"])}
    if methods:
        res.update(agreement_score(res["heat"], res["attention"], ref, opening_radius))
    return res


def probabilities(logits: np.ndarray, card: ModelCard) -> dict[str, float]:
    """Class name -> probability (sigmoid for one logit, softmax otherwise)."""
    p = activate(np.asarray(logits, dtype=np.float64)[None])[0]
    classes = list(card.classes or [f"class{j}" for j in range(len(p))])
    return {c: float(v) for c, v in zip(classes, p)}


def agreement_table(ds, ref: str, method: str, progress: Callable[[int, int], None] | None = None,
                    radius: int = 3, records=None):
    """Agreement of the images ``records`` (default: all of ``ds``; pages pass the held-out ones,
    :func:`ui.scope.scope_choice`) for one model, CAM method and opening radius (the map of each image's predicted
    class), kept for the session per data set in parts (Explain and Review share them): a run stopped half-way
    keeps the parts it finished."""
    import pandas as pd

    from lesion.infer.chunks import parts

    compute = current_compute()
    base = (compute.key(), ds.fingerprint(), ref, member_identity(ref), method, int(radius))
    store = st.session_state.setdefault("_agreement_tables", {})
    recs = list(ds.records if records is None else records)
    chunks = parts(recs, ds.fingerprint())
    total, done, out = len(recs), 0, []
    for part in chunks:
        key = base + (tuple(r.id for r in part.records),)
        offset = done

        def sub(d: int, _t: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + d, total)

        if key not in store:
            if compute.remote:
                store[key] = remote_agreement(list(part.records), ref, method, sub, int(radius))
            else:
                model, card = load_classifier_cached(ref)
                with CAM_LOCK:
                    store[key] = agreement_over_dataset(model, card, list(part.records), method=method, progress=sub,
                                                        opening_radius=int(radius))
        out.append(store[key])
        done += len(part)
        if progress is not None:
            progress(done, total)
    if not out:
        return pd.DataFrame(columns=["id", "logit", "class_index", *AGREEMENT_COLUMNS, "error"])
    return pd.concat(out, ignore_index=True) if len(out) > 1 else out[0]


def remote_agreement(records, name: str, method: str, progress: Callable[[int, int], None] | None = None,
                     radius: int = 3):
    """:func:`lesion.explain.agreement.agreement_over_dataset` with each image's map computed by the model server
    (one request per image; the masks, when present, are the references). Same columns; an unreadable image
    gets NaN and its ``error``.

    Raises:
        ServerError: the server is down or refuses a request.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    total = len(records)
    for i, r in enumerate(records):
        try:
            image = read_image(r.image_path)
            mask = read_mask(r.mask_path, image.shape[:2]) if r.mask_path else None
        except LesionError as e:
            rows.append({"id": r.id, "error": str(e), **{c: float("nan") for c in AGREEMENT_COLUMNS}})
        else:
            o = explain_remote(name, image, mask, dict(r.meta or {}), (method,), None, radius)
            rows.append({"id": r.id, "logit": float(o["logits"].max()), "class_index": o["class_index"],
                         **{c: o[c] for c in AGREEMENT_COLUMNS}, "error": None})
        if progress is not None:
            progress(i + 1, total)
    return pd.DataFrame(rows)


def empty_agreement(ids):
    """The agreement table of members without a network (predictions files): one row per id, all NaN."""
    import pandas as pd

    return pd.DataFrame({"id": list(ids), "logit": np.nan, "class_index": -1,
                         **{c: np.nan for c in AGREEMENT_COLUMNS}, "error": None})


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
    compute = current_compute()
    identities = tuple(member_identity(r) for r in refs)
    return _predict_upload(compute.key(), tuple(refs), identities, image_key, _image, meta, tta, merge)


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def _predict_upload(compute_key: tuple, refs: tuple[str, ...], identities: tuple, image_key: str,
                    _image: np.ndarray, meta: tuple, tta: str, merge: str) -> dict[str, Any]:
    compute = current_compute()  # the one compute_key names (this session's choice)
    members = [member(r) for r in refs]
    with CAM_LOCK if compute.kind == "torch" else nullcontext():  # the engine may move a shared model to the GPU
        res = predict(members, [(_image, dict(meta))], tta=tta, merge=merge, backend=compute.kind,
                              url=compute.url or None, token=compute.token)
    return {"classes": list(res.classes), "probs": res.probs[0].tolist(),
            "members": {k: v[0].tolist() for k, v in res.member_probs.items()},
            "device": res.device, "ms": res.ms_per_image}


def tag_store(ds) -> TagStore:
    """The data set's :class:`lesion.review.TagStore` (re-read on every run: another session may have written)."""
    return TagStore.for_dataset(ds)


# ------------------------------------------------------------------------------------------- timing
@st.cache_data(show_spinner="Measuring how long one heatmap takes here…", max_entries=32)
def _measure_cam_ms(ref: str, identity: tuple, method: str, paths: tuple[str, ...]) -> float:
    model, card = load_classifier_cached(ref)
    images = [read_image(p) for p in paths]
    with CAM_LOCK:
        explain_batch(model, card, images[:1], None, None, (method,))  # warm-up: hooks, the first pass
        t0 = time.perf_counter()
        explain_batch(model, card, images[1:], None, None, (method,))
    return (time.perf_counter() - t0) * 1000.0 / max(1, len(images) - 1)


#: Methods not timed before Run: one Score-CAM map is one forward pass per activation channel (minutes per image
#: on a CPU), so measuring it would itself be a long computation nobody asked for, with no Stop.
UNTIMED = ("scorecam",)


def measured_cam_ms(ref: str, method: str, records: Sequence[Any]) -> float:
    """Measured milliseconds of one ``method`` map (forward + backward) of model ``ref`` on this machine, on the
    first images of ``records`` (0 with fewer than two or when they cannot be read; NaN for :data:`UNTIMED`)."""
    if method in UNTIMED:
        return float("nan")
    paths = tuple(str(r.image_path) for r in list(records)[:3])
    if len(paths) < 2:
        return 0.0
    try:
        return _measure_cam_ms(str(ref), member_identity(ref), method, paths)
    except LesionError:
        return 0.0
