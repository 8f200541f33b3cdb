"""The one ensemble of the session: members, TTA and merge rule, chosen once and used by every page that scores it
(Classification, Failure review, Slices, Multi-view fusion, Upload), listed in the sidebar's "Settings in use".

Each page draws the same three widgets (:func:`ensemble_controls`), all bound to the same kept settings
(``members.<domain>``, ``tta``, ``merge``), so a change on one page is the choice on all of them; the decision
threshold belongs to that ensemble **and** the data set it was chosen on (:func:`ensemble_context`): the sidebar
shows it only while both are the ones in use, and every page recomputes it, never carries it over.
"""
from __future__ import annotations

from typing import Callable, Sequence

import streamlit as st

from lesion.infer.ensemble import MERGE_MODES
from lesion.infer.tta import DEFAULT_TTA, TTA_NAMES
from ui.state import SOURCE_KEY, in_options, keep, kept, kept_members, members_name
from ui.trust import default_models, follows_dataset

DEFAULT_MERGE = "mean_prob"
MERGE_HELP = "Mean of logits, mean of probabilities, log-mean (geometric) or rank average."
TTA_HELP = "none, horizontal / vertical flips, or the 8 views of the d4 group (flips + 90° rotations)."


def ensemble_controls(ds, cards: Sequence, options: Sequence[str], key: str,
                      label: Callable[[str], str] = str, title: str = "Ensemble members",
                      merge: bool = True, domain: str | None = None) -> tuple[list[str], str, str]:
    """Members, TTA and merge widgets bound to the session's one ensemble; returns ``(members, tta, merge)``.

    ``cards``: the shipped cards offered (for the default: one fast model that did not train on synthetic images
    only, on real data); ``options``: every name the page offers (shipped, added by path, predictions files)."""
    domain = domain or ds.domain
    default = default_models(list(cards), ds)
    c1, c2, c3 = st.columns([3, 1, 1])
    members = c1.multiselect(
        title, list(options), format_func=label,
        key=kept_members(f"{key}_members", domain, list(options), default,
                         follow=follows_dataset(members_name(domain), ds, list(cards), default)),
        help="One ensemble for the session: the same members, TTA and merge rule are used on the Classification, "
             "Failure review, Slices, Multi-view fusion and Upload pages (sidebar: Settings in use).")
    tta = c2.selectbox("TTA", TTA_NAMES, key=keep(f"{key}_tta", DEFAULT_TTA, "tta", in_options(TTA_NAMES, DEFAULT_TTA)),
                       help=TTA_HELP)
    rule = DEFAULT_MERGE
    if merge:
        rule = c3.selectbox("Merge", MERGE_MODES, key=keep(f"{key}_merge", DEFAULT_MERGE, "merge",
                                                          in_options(MERGE_MODES, DEFAULT_MERGE)), help=MERGE_HELP)
    else:
        rule = kept_merge()
        c3.caption(f"Merge: **{rule}** (the session's rule)")
    return list(members), tta, rule


def kept_merge() -> str:
    """The session's merge rule (the one chosen on any page)."""
    v = kept("merge", DEFAULT_MERGE)
    return v if v in MERGE_MODES else DEFAULT_MERGE


def kept_tta() -> str:
    v = kept("tta", DEFAULT_TTA)
    return v if v in TTA_NAMES else DEFAULT_TTA


def ensemble_context(fingerprint: str, members: Sequence[str], tta: str, merge: str) -> tuple:
    """What a threshold belongs to: the data set (fingerprint and source), the members, TTA, merge and the
    scope (held-out only or also training images)."""
    return (str(fingerprint), str(st.session_state.get(SOURCE_KEY, "")), tuple(members), str(tta), str(merge),
            str(kept("subset", "held-out")))


def current_context(ds) -> tuple | None:
    """:func:`ensemble_context` of the settings in use now (None without a data set or members)."""
    if ds is None:
        return None
    members = kept(members_name(ds.domain))
    if not members:
        return None
    return ensemble_context(ds.fingerprint(), members, kept_tta(), kept_merge())
