"""Streamlit glue of the Classification page: cached model loads and ensemble predictions."""
from __future__ import annotations

import streamlit as st


CLASSIFIER_TASKS = ("classification", "multitask")


def is_findings_model(card: dict) -> bool:
    """A multi-label chest X-ray model (one sigmoid per finding): it lives on the Chest X-ray page only."""
    return bool(card.get("multilabel")) and len(card.get("classes") or ()) > 1


def classifier_cards(domain: str) -> list[dict]:
    """Shipped single-target classifier / multi-task cards of a domain (``weights/`` or ``$LESION_WEIGHTS_DIR``):
    the models the Classification, Multi-view fusion, Explain, Failure review and Upload pages offer."""
    from lesion.weights import list_weights

    return [c for c in list_weights(domain=domain) if c.get("task") in CLASSIFIER_TASKS and not is_findings_model(c)]


@st.cache_resource(show_spinner="Loading classifier…", max_entries=16)
def load_classifier_cached(name_or_path: str):
    """``(model, card)`` shared by all sessions; models are only read (eval mode), never mutated."""
    from lesion.classify.models import load_classifier

    return load_classifier(name_or_path)


def run_ensemble(ds, names: list[str], tta: str, merge: str, progress=None):
    """Ensemble predictions over the data set; each member's output is cached on disk per data set."""
    from lesion.infer.cache import cached_predict

    members = [load_classifier_cached(n) for n in names]
    return cached_predict(members, ds, tta=tta, merge=merge, progress=progress)


def checked_target(members: list[str], records, finish_page, what: str = "member") -> str:
    """The target the chosen models predict, after the page has said what is wrong (no member, members of
    different targets: the page ends there) and warned about missing metadata."""
    from lesion.errors import LesionError
    from lesion.infer.evaluate import metadata_warnings, resolve_target

    if not members:
        st.warning(f"Choose at least one {what}.")
        finish_page(stop=True)
    try:
        _, target = resolve_target([load_classifier_cached(m)[1] for m in members], None)
    except LesionError as e:
        st.error(str(e))
        finish_page(stop=True)
    for note in metadata_warnings([load_classifier_cached(m) for m in members], records):
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
