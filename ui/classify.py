"""Streamlit glue of the Classification page: cached model loads and ensemble predictions."""
from __future__ import annotations

import threading

import numpy as np
import streamlit as st

from lesion.card import ModelCard
from lesion.errors import DataError, LesionError
from lesion.infer.cache import cached_predict
from lesion.infer.evaluate import metadata_warnings, resolve_target
from lesion.metrics import sensitivity_threshold, youden_threshold
from lesion.weights import list_weights, weights_file_identity
from lesion.zoo import CLASSIFIER_TASKS, load_model
from ui.state import THRESHOLD_MODES, in_options, keep, kept, set_kept

#: The cached classifiers are shared by every session of this server process: a Grad-CAM computation hooks
#: the shared model (and an upload's prediction may move it to the GPU), so one at a time.
CAM_LOCK = threading.Lock()


def is_findings_model(card: ModelCard) -> bool:
    """A multi-label chest X-ray model (one sigmoid per finding): it lives on the Chest X-ray page only."""
    return card.multilabel and len(card.classes) > 1


def classifier_cards(domain: str) -> list[ModelCard]:
    """Shipped single-target classifier / multi-task cards of a domain (``weights/`` or ``$LESION_WEIGHTS_DIR``):
    the models the Classification, Multi-view fusion, Explain, Failure review and Upload pages offer."""
    return [c for c in list_weights(domain=domain) if c.task in CLASSIFIER_TASKS and not is_findings_model(c)]


def require_classifiers(domain: str, finish_page) -> list[ModelCard]:
    """:func:`classifier_cards`, or a message (and the page stops) when the domain has none."""
    cards = classifier_cards(domain)
    if not cards:
        st.info(f"No classifier checkpoints for the '{domain}' domain in `weights/`. Train one with "
                "`lesion train cls …` (see the README).")
        finish_page(stop=True)
    return cards


def load_classifier_cached(name_or_path: str):
    """``(Classifier, ModelCard)`` shared by all sessions; models are only read (eval mode), never mutated.

    Cached per name **and** file identity (:func:`lesion.weights.weights_file_identity`: size, mtime, ctime and
    inode of the weights file and the card's sha256, read on every rerun without reading the weights), so a
    checkpoint replaced while the app runs is loaded (and verified) again.

    Raises:
        CheckpointError: not a classifier checkpoint (refused on its card, before the weights are read), or
            weights that do not match their card's sha256.
    """
    return _load_classifier(str(name_or_path), weights_file_identity(name_or_path))


@st.cache_resource(show_spinner="Loading classifier…", max_entries=16)
def _load_classifier(name_or_path: str, identity: tuple):
    return load_model(name_or_path, task=CLASSIFIER_TASKS)


def run_ensemble(ds, names: list[str], tta: str, merge: str, progress=None):
    """Ensemble predictions over the data set; each member's output is cached on disk per data set."""
    members = [load_classifier_cached(n) for n in names]
    return cached_predict(members, ds, tta=tta, merge=merge, progress=progress)


def checked_target(members: list[str], records, finish_page, what: str = "member") -> str:
    """The target the chosen models predict, after the page has said what is wrong (no member, members of
    different targets: the page ends there) and warned about missing metadata."""
    if not members:
        st.warning(f"Choose at least one {what}.")
        finish_page(stop=True)
    loaded = [load_classifier_cached(m) for m in members]
    try:
        _, target = resolve_target([card for _, card in loaded], None)
    except LesionError as e:
        st.error(str(e))
        finish_page(stop=True)
    for note in metadata_warnings(loaded, records):
        st.warning(note)
    return target


def run_gate(key: str, label: str, caption: str, finish_page, identity: str = "") -> None:
    """A primary button that, once pressed, keeps the page's results on every rerun **for this data set**
    (``identity``: the data set's fingerprint); until then, and on any other data set, the page shows
    ``caption`` and ends, so a newly chosen folder never starts a long computation by itself."""
    ran: set = st.session_state.setdefault(f"{key}_ran_on", set())
    if st.button(label, type="primary", key=f"{key}_run"):
        ran.add(identity)
    if identity not in ran:
        st.caption(caption)
        finish_page(stop=True)


def threshold_control(prefix: str, y: np.ndarray | None, s: np.ndarray | None, container=None) -> tuple[float, str]:
    """The decision-threshold widgets (rule: Youden, chosen sensitivity or a fixed value), kept for the session
    and shared by the pages; returns ``(threshold, words saying which rule gave it)``.

    Youden and chosen-sensitivity thresholds are computed on ``y`` / ``s`` (labels ``[N]`` with NaN for
    unlabelled, scores ``[N]``); without both classes the fixed value is used and the words say so.
    """
    box = container or st
    mode = box.radio("Decision threshold", list(THRESHOLD_MODES), format_func=THRESHOLD_MODES.get, horizontal=True,
                     key=keep(f"{prefix}_thr_mode", "youden", "thr_mode", in_options(list(THRESHOLD_MODES))),
                     help="Youden: the threshold with the largest sensitivity + specificity − 1; chosen sensitivity: "
                          "the highest threshold that catches at least that share of the positives. Both are chosen "
                          "on the images shown, so the rates at them are optimistic for new images.")
    fixed = None
    if mode == "fixed":
        fixed = float(box.slider("Threshold", 0.0, 1.0, step=0.01, key=keep(f"{prefix}_thr", 0.5, "thr_value")))
    elif mode == "sensitivity":
        want = float(box.slider("Wanted sensitivity", 0.05, 1.0, step=0.05, key=keep(f"{prefix}_sens", 0.9, "thr_sens")))
    thr, words = fixed, f"fixed threshold {fixed:.2f}" if fixed is not None else ""
    if mode != "fixed":
        try:
            if y is None or s is None:
                raise DataError("no labels")
            if mode == "youden":
                r = youden_threshold(y, s)
                words = (f"Youden threshold {r['threshold']:.3f} (sensitivity {r['sensitivity']:.3f}, specificity "
                         f"{r['specificity']:.3f}, chosen on these images)")
            else:
                r = sensitivity_threshold(y, s, want)
                words = (f"threshold {r['threshold']:.3f} for sensitivity ≥ {want:.2f} (reached {r['sensitivity']:.3f}, "
                         f"specificity {r['specificity']:.3f}, chosen on these images)")
            thr = float(r["threshold"])
        except DataError:
            thr = float(kept("thr_value", 0.5))
            words = f"fixed threshold {thr:.2f} ({THRESHOLD_MODES[mode]} needs labels of both classes here)"
    set_kept("thr_used", thr)
    box.caption(f"In use: **{words}**.")
    return thr, words
