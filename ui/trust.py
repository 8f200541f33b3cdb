"""What data a number is on: which images of the data set trained the chosen models, the held-out subset that
the pages score by default, synthetic-only and other-domain models, and the words that say so.

The split itself comes from the model's card through :func:`lesion.train.heldout.held_out`; this module only
decides whether the data set in the sidebar is one the card says the model trained on, and draws the choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import streamlit as st

from lesion.card import ModelCard
from lesion.errors import DataError
from lesion.train.heldout import held_out
from ui.state import SOURCE_KEY, in_options, keep

HELD_OUT, ALL_IMAGES = "held-out", "all"
SYNTHETIC_TAG = "trained on synthetic images only"


def trains_on(card: ModelCard, ds, source: str | None = None) -> bool:
    """True when the card lists ``ds`` among the data sets the model was trained (and validated) on.

    The data set's name must match a trained-on source's name; a synthetic source counts only when its spec is
    the one in use (``demo:derm``): a model trained on other generated images (another seed) never saw these.
    """
    source = source if source is not None else st.session_state.get(SOURCE_KEY, "")
    for d in card.trained_on:
        if d.name != ds.name:
            continue
        if d.synthetic or ds.synthetic:  # generated sets share a name; only the same spec is the same images
            if d.source == source:
                return True
            continue
        return True
    return False


@st.cache_data(show_spinner="Finding the images each model trained on…", max_entries=64)
def _held_ids(card_key: str, ds_key: str, _card: ModelCard, _ds) -> tuple[frozenset[str] | None, str]:
    """``(ids the model never trained on, how)``; ``None`` ids when the card records no split for the data."""
    try:
        h = held_out(_card, _ds)
    except DataError as e:
        return None, str(e)
    how = h.how + ("" if h.matches_card else " (the rebuilt split does not match the card's counts)")
    return frozenset(r.id for r in h.records), how


@dataclass
class Exposure:
    """What the chosen models saw of a data set.

    Attributes:
        trained: model name -> number of this data set's images it trained on (only models that did).
        held: ids of the images that no chosen model trained on (all ids when none trained on the data).
        notes: one line per model that trained on the data (split, counts) or whose split is unknown.
        unknown: models that trained on this data set but whose card records no split (all images suspect).
    """

    trained: dict[str, int] = field(default_factory=dict)
    held: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.trained or self.unknown)


def exposure(cards: Sequence[ModelCard], ds) -> Exposure:
    """Which images of ``ds`` the models of ``cards`` trained on (from each card's split)."""
    all_ids = frozenset(r.id for r in ds.records)
    held = all_ids
    out = Exposure(held=held)
    for card in cards:
        if not trains_on(card, ds):
            continue
        ids, how = _held_ids(f"{card.name}|{card.path}|{card.sha256}", ds.fingerprint(), card, ds)
        if ids is None:
            out.unknown.append(card.name)
            out.notes.append(f"'{card.name}' was trained on {ds.name} but its card records no split ({how}): any "
                             "image here may have trained it.")
            held = frozenset()
            continue
        n = len(all_ids - ids)
        out.trained[card.name] = n
        out.notes.append(f"'{card.name}' trained on {n} of these {len(all_ids)} images; {len(ids & all_ids)} were "
                         f"held out ({how}).")
        held = held & ids
    out.held = held
    return out


def subset_choice(cards: Sequence[ModelCard], ds, key: str, what: str = "images") -> tuple[frozenset[str] | None, str]:
    """Say beside the numbers when the chosen models trained on this data set, and offer the held-out subset.

    Returns:
        ``(ids to score, words)``: ``ids`` None = every image; ``words`` says what data the numbers are on, for
        captions and figure titles ("37 held-out images of Demo dermoscopy", "all 200 images of PH2").
    """
    exp = exposure(cards, ds)
    n = len(ds)
    if not exp.any:
        return None, f"all {n} {what} of {ds.name} ({no_training_words(cards, ds)})"
    n_held = len(exp.held)
    trained = max(exp.trained.values(), default=n)
    st.warning("**Training images in this data set.** " + " ".join(exp.notes)
               + (" Numbers over all images include images the model learnt from and are optimistic."),
               icon=":material/warning:")
    if n_held == 0:
        return None, f"all {n} {what} of {ds.name}, **including training images** (no held-out subset)"
    labels = {HELD_OUT: f"held-out only ({n_held} {what} no chosen model trained on)",
              ALL_IMAGES: f"all {n} {what} ({trained} of them trained a model: optimistic)"}
    choice = st.radio("Score on", list(labels), format_func=labels.get, horizontal=True,
                      key=keep(f"{key}_subset", HELD_OUT, valid=in_options(list(labels), HELD_OUT)),
                      help="Held-out images are those each model's card lists as its validation split (or that "
                           "the card's K-fold recipe rebuilds): the only images here that can test it.")
    if choice == HELD_OUT:
        return exp.held, f"{n_held} held-out {what} of {ds.name} (no chosen model trained on them)"
    return None, f"all {n} {what} of {ds.name}, **including {trained} training images**"


def training_unknown(card: ModelCard) -> bool:
    """True when the card cannot say what the model trained on: an imported model or a predictions file
    (``extra["training_data_unknown"]``), or a card that names no training data at all."""
    extra = dict(getattr(card, "extra", None) or {})
    return bool(extra.get("training_data_unknown")) or not card.trained_on


def no_training_words(cards: Sequence[ModelCard], ds) -> str:
    """Words for data that no card lists as training data: "none trained the model(s)" only when every card
    names its training data; else which models' training data are unknown (they may include these images)."""
    unknown = [c.name for c in cards if training_unknown(c)]
    if not unknown:
        return f"none trained the model{'s' if len(cards) > 1 else ''}"
    named = len(cards) - len(unknown)
    return (f"training data of {', '.join(unknown)} unknown: {'it' if len(unknown) == 1 else 'they'} may have "
            "trained on these images" + (f"; the other {named} did not" if named else ""))


def mask_labels(y: np.ndarray, ids: Sequence[str], keep_ids: frozenset[str] | None) -> np.ndarray:
    """``y`` (``[N]`` or ``[N, K]``) with the rows of images outside ``keep_ids`` set to NaN (left out of every
    metric, which drop unlabelled images); unchanged when ``keep_ids`` is None."""
    y = np.asarray(y, dtype=np.float64).copy()
    if keep_ids is None:
        return y
    outside = np.array([i not in keep_ids for i in ids], dtype=bool)
    y[outside] = np.nan
    return y


def model_label(card: ModelCard, ds=None) -> str:
    """A model's name for pickers: tagged when it was trained on synthetic images only."""
    return f"{card.name} ({SYNTHETIC_TAG})" if card.synthetic_only else card.name


#: Members an ensemble starts with: one fast model, so a first run on a real data set takes minutes on a
#: 2-core CPU (more members are the user's choice, with the time said before Run).
DEFAULT_MEMBERS = 1


def default_models(cards: Sequence[ModelCard], ds, k: int = DEFAULT_MEMBERS) -> list[str]:
    """Up to ``k`` model names to start with, the cheapest first (fewest input pixels): on real data, models
    trained only on synthetic images never are (unless there is nothing else)."""
    real = [c for c in cards if not (c.synthetic_only and not getattr(ds, "synthetic", False))]
    pool = list(real or list(cards))
    pool.sort(key=lambda c: _pixels(c))
    return [c.name for c in pool[:k]]


def _pixels(card: ModelCard) -> int:
    try:
        h, w = card.preprocessing.hw
        return int(h) * int(w)
    except (AttributeError, TypeError, ValueError):
        return 1 << 30


def follows_dataset(name: str, ds, cards: Sequence[ModelCard], default: Sequence[str]):
    """A ``valid`` for :func:`ui.state.keep` / :func:`ui.state.kept_members` that makes a kept model choice follow
    the data set in use: a choice made on another data set keeps no model trained on synthetic images only when
    the data are real (they were the demo's default, not a choice for these data); nothing left = ``default``."""
    from ui.state import kept, set_kept

    source = st.session_state.get(SOURCE_KEY, "")
    where_key = f"{name}.chosen_on"
    synthetic = {c.name for c in cards if c.synthetic_only}

    def check(value):
        single = not isinstance(value, (list, tuple))
        chosen = [value] if single and value is not None else list(value or [])
        if kept(where_key) != source and not getattr(ds, "synthetic", False):
            chosen = [m for m in chosen if m not in synthetic]
        set_kept(where_key, source)
        if not single and value == [] and chosen == []:
            return []  # the user emptied the choice: the page asks for a member
        chosen = chosen or list(default)
        return (chosen[0] if chosen else None) if single else chosen

    return check


def synthetic_notes(cards: Sequence[ModelCard], ds) -> list[str]:
    """One line per chosen model trained only on synthetic images, when the data are real."""
    if getattr(ds, "synthetic", False):
        return []
    return [f"'{c.name}' was trained on synthetic images only: its outputs on real {ds.name} images are not "
            "evidence of anything clinical." for c in cards if c.synthetic_only]


def domain_notes(cards: Sequence[ModelCard], domain: str) -> list[str]:
    """:meth:`ModelCard.domain_warning` of every card that has one for images of ``domain``."""
    return [w for w in (c.domain_warning(domain) for c in cards) if w]


def show_model_notes(cards: Sequence[ModelCard], ds) -> None:
    """Warn about chosen models of another image domain or trained on synthetic images only (real data)."""
    for note in domain_notes(cards, ds.domain) + synthetic_notes(cards, ds):
        st.warning(note, icon=":material/warning:")


def grey_fraction(image: np.ndarray) -> float:
    """Share of pixels whose colour channels differ by under 8 grey levels (1.0 for a radiograph)."""
    im = np.asarray(image)
    if im.ndim == 2 or im.shape[-1] == 1:
        return 1.0
    spread = im[..., :3].max(axis=-1).astype(np.int16) - im[..., :3].min(axis=-1).astype(np.int16)
    return float((spread < 8).mean())


def image_kind(image: np.ndarray) -> str:
    """``cxr`` for a grey image (a radiograph: :func:`grey_fraction` > 0.98), else ``derm``."""
    return "cxr" if grey_fraction(image) > 0.98 else "derm"


def upload_domain_warning(image: np.ndarray, domain: str) -> str | None:
    """One line when an uploaded image does not look like the chosen domain: a grey image (a radiograph?)
    for dermoscopy models, a colour photograph for chest X-ray models; else None."""
    g = grey_fraction(image)
    if domain == "derm" and g > 0.98:
        return ("This image is grey, like a radiograph, but the models chosen are dermoscopy classifiers: their "
                "outputs on it mean nothing. Choose 'chest X-ray' as the image type if it is one.")
    if domain == "cxr" and g < 0.5:
        return ("This image is in colour, unlike a radiograph, but the models chosen are chest X-ray classifiers: "
                "their outputs on it mean nothing. Choose 'dermoscopy' as the image type if it is a skin image.")
    return None
