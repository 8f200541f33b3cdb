"""What a page computes, said before it computes it: the images (held-out only unless the training images are
asked for), members × views, how long that takes on this machine (measured), a Stop button that keeps what is done.

Every page that scores models calls :func:`scope_choice` **before** its Run button (Classification, Failure
review, Multi-view fusion; Segmentation's owner can call it with the segmenters' cards) and passes
``scope.records`` to the computation, so a data set with a held-out split never computes its training images
unless the user asks (they are then labelled ``training``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import streamlit as st

from lesion.card import ModelCard
from lesion.infer.tta import n_views
from lesion.errors import LesionError
from ui.classify import member, member_identity, run_gate
from ui.predfiles import show_coverage
from ui.state import current_compute, in_options, keep, kept, st_progress
from ui.trust import exposure, no_training_words

HELD_OUT, WITH_TRAINING = "held-out", "all"
#: Kept-setting name of the scope choice: one choice for every page (the same numbers mean the same thing).
SCOPE_NAME = "subset"


@dataclass(frozen=True)
class Scope:
    """The images a page computes and scores.

    Attributes:
        records: the records to compute, in data-set order (held-out only by default).
        words: what the numbers are on, for captions and titles ("665 held-out images of HAM10000 …").
        training: ids among ``records`` that trained a chosen model (labelled 'training' wherever shown).
        n_total: images in the data set.
        n_held: images no chosen model trained on (``n_total`` when none trained on the data).
        held_only: True when the training images were left out (not computed).
    """

    records: list
    words: str
    training: frozenset = field(default_factory=frozenset)
    n_total: int = 0
    n_held: int = 0
    held_only: bool = False

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def split_of(self, rid: str) -> str:
        """``training`` or ``held-out`` (the word the tables show per row)."""
        return "training" if rid in self.training else "held-out"

    @property
    def not_computed(self) -> int:
        return self.n_total - len(self.records)


def scope_choice(cards: Sequence[ModelCard], ds, key: str, what: str = "images") -> Scope:
    """Say whether the chosen models trained on this data set and choose what to compute (kept for the session,
    shared by every page): the held-out images only (default) or also the training images, labelled so."""
    exp = exposure(cards, ds)
    n = len(ds)
    if not exp.any:
        return Scope(list(ds.records), f"all {n} {what} of {ds.name} ({no_training_words(cards, ds)})", frozenset(),
                     n, n)
    n_held = len(exp.held)
    training = frozenset(r.id for r in ds.records) - exp.held
    st.warning("**Training images in this data set.** " + " ".join(exp.notes)
               + " Numbers over training images are optimistic.", icon=":material/warning:")
    if n_held == 0:
        return Scope(list(ds.records), f"all {n} {what} of {ds.name}, **including {len(training)} training "
                                       f"{what}** (no held-out subset)", training, n, 0)
    labels = {HELD_OUT: f"held-out only: compute the {n_held} {what} no chosen model trained on",
              WITH_TRAINING: f"also the {len(training)} training {what} (labelled 'training'; optimistic)"}
    choice = st.radio("Compute and score", list(labels), format_func=labels.get, horizontal=True,
                      key=keep(f"{key}_subset", HELD_OUT, SCOPE_NAME, in_options(list(labels), HELD_OUT)),
                      help="Held-out images are those each model's card lists as its validation split (or that "
                           "the card's K-fold recipe rebuilds): the only images here that can test it. The "
                           "training images are not computed unless asked for. Shared by every page.")
    if choice == HELD_OUT:
        recs = [r for r in ds.records if r.id in exp.held]
        return Scope(recs, f"{n_held} held-out {what} of {ds.name} (no chosen model trained on them; the "
                           f"{len(training)} training {what} are not computed)", frozenset(), n, n_held, True)
    return Scope(list(ds.records), f"all {n} {what} of {ds.name}, **including {len(training)} training {what}** "
                                   f"(labelled 'training')", training, n, n_held)


# ------------------------------------------------------------------------------------------- time estimates
@st.cache_data(show_spinner="Measuring this machine's speed…", max_entries=64)
def _measure_ms(compute_key: tuple, ref: str, identity: tuple, paths: tuple[str, ...]) -> float:
    """Milliseconds per image and view of one model on the chosen Compute (a warm-up image, then a few)."""
    from lesion.serving.backends import predict

    compute = current_compute()
    m = [member(ref)]
    opts = dict(backend=compute.kind, cache=None, url=compute.url or None, token=compute.token, tta="none")
    predict(m, list(paths[:1]), **opts)  # warm-up: placing the model, an ONNX export
    t0 = time.perf_counter()
    predict(m, list(paths[1:]), **opts)
    return (time.perf_counter() - t0) * 1000.0 / max(1, len(paths) - 1)


def measured_ms(ref: Any, ds) -> float:
    """Measured milliseconds per image × view of model ``ref`` here (0 for a predictions file: it reads a table)."""
    from lesion.infer.members import Member

    if isinstance(ref, Member):
        return 0.0
    paths = tuple(str(r.image_path) for r in list(ds.records)[:5])
    if len(paths) < 2:
        return 0.0
    return _measure_ms(current_compute().key(), str(ref), member_identity(ref), paths)


def human_time(seconds: float) -> str:
    """``under a second`` / ``40 s`` / ``3.5 min`` / ``2.1 h``."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_seconds(n_images: int, ms_per_view: Sequence[float], tta: str) -> float:
    """Seconds for ``n_images`` × the members (their ms per image-view) × the TTA's views."""
    return n_images * n_views(tta) * float(sum(ms_per_view)) / 1000.0


def plan_caption(scope: Scope, refs: Sequence[Any], labels: Sequence[str], tta: str, ds,
                 extra: str = "") -> str:
    """One line said before Run: images × members × views, forward passes and the time it will take here."""
    ms = [measured_ms(r, ds) for r in refs]
    views = n_views(tta)
    n = len(scope.records)
    secs = estimate_seconds(n, ms, tta)
    speed = ", ".join(f"{lab} {m:.0f} ms" if m else f"{lab}: a file, no compute" for lab, m in zip(labels, ms))
    left = f"; the {scope.not_computed} training images are not computed" if scope.not_computed else ""
    return (f"**This run computes {n} images × {len(refs)} member(s) × {views} view(s) = {n * len(refs) * views:,} "
            f"forward passes: about {human_time(secs)} on this Compute** (measured per image-view: {speed}{left}; "
            f"parts already in the prediction cache are read, not computed){extra}. A run can be stopped: the "
            "parts it finished are kept in the cache.")


def plan_and_gate(cards: Sequence[ModelCard], ds, key: str, files: dict, members: Sequence[str],
                  refs: Sequence[Any], tta: str, label: str, caption: str, finish_page, what: str = "images",
                  extra: str = "") -> Scope:
    """What an ensemble page says and asks before it computes: the scope (:func:`scope_choice`), each predictions
    file's coverage of it, the plan (:func:`plan_caption`), a note when the last run was stopped, and the Run
    button (``label``; ``caption`` until pressed). Returns the scope; ends the page until Run is pressed."""
    scope = scope_choice(cards, ds, key, what=what)
    if not show_coverage(files, list(members), scope.ids, what):
        finish_page(stop=True)
    st.caption(plan_caption(scope, refs, members, tta, ds, extra=extra))
    stopped_note(key)
    run_gate(key, label, caption, finish_page, identity=ds.fingerprint())
    return scope


def stop_button(key: str, part: str = "") -> None:
    """A Stop button shown while a run computes: pressing it ends the run (Streamlit reruns the page), forgets
    that Run was pressed, and keeps the parts already computed in the cache."""
    def _stop() -> None:
        st.session_state[f"{key}_ran_on"] = set()
        st.session_state[f"{key}_stopped"] = True

    st.button("Stop", key=f"{key}_stop{part}", on_click=_stop, help="Stop computing; the finished parts stay cached.")


def stoppable(key: str, label: str, compute, finish_page, part: str = ""):
    """``compute(progress)`` under a progress bar ``label`` with a Stop button (:func:`stop_button`; ``part`` tells
    apart two stoppable steps of one page); a :class:`~lesion.errors.LesionError` becomes one error line and the
    page ends. Returns what ``compute`` returns."""
    stop_slot = st.empty()
    with stop_slot:
        stop_button(key, part)
    update, clear = st_progress(label)
    try:
        return compute(update)
    except LesionError as e:
        clear()
        stop_slot.empty()
        st.error(str(e))
        finish_page(stop=True)
    finally:
        clear()
        stop_slot.empty()


def stopped_note(key: str) -> None:
    """Say (once) that the last run was stopped."""
    if st.session_state.pop(f"{key}_stopped", False):
        st.info("Stopped. The parts computed before Stop are in the prediction cache: Run again to continue from "
                "there.")


def kept_scope_words() -> str | None:
    """The shared scope choice in words, for the sidebar's 'Settings in use'."""
    v = kept(SCOPE_NAME)
    return None if v is None else ("held-out images only" if v == HELD_OUT else "held-out + training images")
