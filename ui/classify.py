"""Streamlit glue of the Classification page: cached model loads and ensemble predictions."""
from __future__ import annotations

import threading

import streamlit as st

from lesion.card import ModelCard
from lesion.errors import LesionError
from lesion.infer.cache import cached_predict
from lesion.infer.evaluate import metadata_warnings, resolve_target
from lesion.weights import list_weights
from lesion.zoo import CLASSIFIER_TASKS, load_model

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


@st.cache_resource(show_spinner="Loading classifier…", max_entries=16)
def load_classifier_cached(name_or_path: str):
    """``(Classifier, ModelCard)`` shared by all sessions; models are only read (eval mode), never mutated.

    Raises:
        CheckpointError: not a classifier checkpoint (refused on its card, before the weights are read).
    """
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


def run_gate(key: str, label: str, caption: str, finish_page) -> None:
    """A primary button that, once pressed, keeps the page's results on every rerun (``<key>_ran`` in the
    session); until then the page shows ``caption`` and ends."""
    if st.button(label, type="primary", key=f"{key}_run"):
        st.session_state[f"{key}_ran"] = True
    if not st.session_state.get(f"{key}_ran"):
        st.caption(caption)
        finish_page(stop=True)
