"""Streamlit glue of the Classification page: cached model loads and ensemble predictions."""
from __future__ import annotations

import streamlit as st


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
