"""Streamlit glue of the model pages: cached model loads and ensemble predictions on the chosen backend (this
machine's PyTorch, ONNX Runtime, or the model server, each through the disk cache; :func:`run_ensemble`)."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import streamlit as st

from lesion.card import ModelCard
from lesion.errors import DataError, LesionError
from lesion.infer.chunks import parts, predict_parts
from lesion.infer.evaluate import metadata_warnings, resolve_target
from lesion.infer.members import Member
from lesion.metrics import sensitivity_threshold, youden_threshold
from lesion.serving.backends import predict
from lesion.paths import user_models_dir
from lesion.weights import list_weights, weights_file_identity
from lesion.zoo import CLASSIFIER_TASKS, load_model
from ui.compute import served_card, served_cards
from ui.state import THRESHOLD_MODES, current_compute, in_options, keep, kept, set_kept

#: The cached classifiers are shared by every session of this server process: a Grad-CAM computation hooks
#: the shared model (and an upload's prediction may move it to the GPU), so one at a time.
CAM_LOCK = threading.Lock()


def is_findings_model(card: ModelCard) -> bool:
    """A multi-label chest X-ray model (one sigmoid per finding): it lives on the Chest X-ray page only."""
    return card.multilabel and len(card.classes) > 1


def available_cards(domain: str | None = None) -> list[ModelCard]:
    """The cards of the models the chosen Compute can run: ``weights/`` (or ``$LESION_WEIGHTS_DIR``) on this
    machine, the server's cards (:meth:`RemoteClient.cards`) with the model server; of ``domain`` when given."""
    if current_compute().remote:
        cards = served_cards()
    else:  # the shipped checkpoints, then the user's imported models (`lesion import`, the Models page's form)
        cards = list_weights()
        shipped = {c.name for c in cards}
        cards += [c for c in list_weights(weights_dir=user_models_dir()) if c.name not in shipped]
    return [c for c in cards if domain is None or c.domain == domain]


def classifier_cards(domain: str) -> list[ModelCard]:
    """Single-target classifier / multi-task cards of a domain (shipped, or served by the chosen server): the
    models the Classification, Multi-view fusion, Explain, Failure review and Upload pages offer."""
    return [c for c in available_cards(domain) if c.task in CLASSIFIER_TASKS and not is_findings_model(c)]


def no_models_where(domain: str) -> str:
    """Where a page looked for models, for its 'no models' message."""
    compute = current_compute()
    if compute.remote:
        served = ", ".join(c.name for c in served_cards()) or "nothing"
        return f"on the model server at {compute.url} (it serves {served})"
    return "in `weights/`"


def require_classifiers(domain: str, finish_page) -> list[ModelCard]:
    """:func:`classifier_cards`, or a message (and the page stops) when the domain has none."""
    cards = classifier_cards(domain)
    if not cards:
        st.info(f"No classifier checkpoints for the '{domain}' domain {no_models_where(domain)}. Train one with "
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


def member(ref: str) -> tuple[Any, ModelCard]:
    """``(model, card)`` of one model on the chosen Compute: loaded here (PyTorch, ONNX Runtime), or ``(None, the
    server's card)`` with the model server (nothing is loaded on this machine).

    Raises:
        CheckpointError / ServerError: one readable line.
    """
    if current_compute().remote:
        return None, served_card(str(ref))
    return load_classifier_cached(ref)


def member_identity(ref: str) -> tuple:
    """What changes when the weights of ``ref`` change: the local file's identity, or the served card's sha256."""
    if current_compute().remote:
        return ("served", served_card(str(ref)).sha256)
    return weights_file_identity(ref)


def run_ensemble(ds, names: list, tta: str, merge: str, progress=None, records=None):
    """Ensemble predictions over the data set on the sidebar's Compute choice, through the one entry point
    (:func:`lesion.serving.backends.predict`) with the disk cache around every member, whatever the backend:
    the cache is keyed by each member's identity (the checkpoint's sha256; a served member adds the server's
    address), so one backend's numbers are never shown for another's weights. ``result.device`` says where
    the models ran (``cpu at http://host:port`` for a server).

    ``names``: model names / paths, or member objects (a predictions file's
    :class:`~lesion.infer.predictions.PredictionsMember`). ``records``: the images to compute (default: all of
    ``ds``), e.g. the held-out ones only (:func:`ui.scope.scope_choice`); they are predicted in cached parts
    (:mod:`lesion.infer.chunks`), so a run stopped half-way keeps the parts it finished."""
    compute = current_compute()
    members = [resolve_member(n) for n in names]
    recs = list(ds.records if records is None else records)
    multilabel = any(getattr(c, "multilabel", False) for c in (member_card(m) for m in members))

    def one(part, sub):
        return predict(members, part, tta=tta, merge=merge, progress=sub, backend=compute.kind, cache=True,
                       url=compute.url or None, token=compute.token)

    return predict_parts(one, parts(recs, ds.fingerprint()), merge, multilabel, progress)


def resolve_member(ref: Any):
    """A member object as it is (a predictions file), else :func:`member` of a model name / path."""
    return ref if isinstance(ref, Member) else member(ref)


def member_card(m: Any) -> ModelCard:
    """The card of a member object or of a ``(model, card)`` pair."""
    return m[1] if isinstance(m, tuple) else m.card


def metadata_notes(members: list[tuple[Any, ModelCard]], records) -> list[str]:
    """:func:`lesion.infer.evaluate.metadata_warnings` (a member served remotely, without its model here, is
    judged by its card)."""
    return metadata_warnings(members, records)


def checked_target(members: list[str], records, finish_page, what: str = "member") -> str:
    """The target the chosen models predict, after the page has said what is wrong (no member, members of
    different targets: the page ends there) and warned about missing metadata."""
    if not members:
        st.warning(f"Choose at least one {what}.")
        finish_page(stop=True)
    try:
        loaded = [resolve_member(m) for m in members]
        _, target = resolve_target([member_card(m) for m in loaded], None)
    except LesionError as e:
        st.error(str(e))
        finish_page(stop=True)
    pairs = [(m, m.card) if isinstance(m, Member) else m for m in loaded]
    for note in metadata_notes(pairs, records):
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


def threshold_control(prefix: str, y: np.ndarray | None, s: np.ndarray | None, container=None,
                      context: tuple | None = None) -> tuple[float, str]:
    """The decision-threshold widgets (rule: Youden, chosen sensitivity or a fixed value), kept for the session
    and shared by the pages; returns ``(threshold, words saying which rule gave it)``.

    The rule is the session's; the threshold itself is recomputed here on every run from ``y`` / ``s`` and kept
    (for the sidebar) together with ``context`` (:func:`ui.ensemble.ensemble_context`: data set, members, TTA,
    merge, scope), so the sidebar never shows one data set's threshold beside another's.

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
    set_kept("thr_used", {"value": thr, "context": context, "words": words})
    box.caption(f"In use: **{words}**.")
    return thr, words


def threshold_by_rule(y: np.ndarray | None, s: np.ndarray | None) -> tuple[float, str]:
    """The session's threshold rule (kept ``thr_mode``, ``thr_value``, ``thr_sens``) applied to ``y`` / ``s``,
    without widgets and without changing the threshold kept for the ensemble: ``(threshold, words)``."""
    mode = kept("thr_mode", "youden")
    mode = mode if mode in THRESHOLD_MODES else "youden"
    fixed = float(kept("thr_value", 0.5))
    if mode == "fixed":
        return fixed, f"fixed threshold {fixed:.2f}"
    try:
        if y is None or s is None:
            raise DataError("no labels")
        if mode == "youden":
            r = youden_threshold(y, s)
            return float(r["threshold"]), f"Youden threshold {r['threshold']:.3f} (chosen on these images)"
        want = float(kept("thr_sens", 0.9))
        r = sensitivity_threshold(y, s, want)
        return float(r["threshold"]), f"threshold {r['threshold']:.3f} for sensitivity ≥ {want:.2f} (chosen on these images)"
    except DataError:
        return fixed, f"fixed threshold {fixed:.2f} ({THRESHOLD_MODES[mode]} needs labels of both classes here)"
