"""Widgets generated from a frozen dataclass config: one widget per field, the field's comment as help.

Pages build configs (Otsu pipeline, training recipes) through this instead of hand-writing a widget per field,
so a field added to a config appears in the UI with no page change.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping

import streamlit as st

from ui.state import in_options, keep


def _choices_for(cls: type, f: dataclasses.Field, choices: Mapping[str, typing.Sequence] | None):
    if choices and f.name in choices:
        return list(choices[f.name])
    if "choices" in f.metadata:
        return list(f.metadata["choices"])
    hint = typing.get_type_hints(cls).get(f.name)
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    return None


def dataclass_form(
    cls: type,
    default: Any,
    key: str,
    choices: Mapping[str, typing.Sequence] | None = None,
    skip: typing.Iterable[str] = (),
    container=None,
) -> Any:
    """Render one widget per field of ``cls`` starting from ``default``; return a new instance.

    Args:
        cls: a dataclass type.
        default: the instance giving starting values (e.g. a preset).
        key: widget-key prefix, also the name under which each field's value is kept for the session
            (``<key>.<field>``); change it when ``default`` changes so widgets start from the new preset.
        choices: per-field option lists for string fields (otherwise taken from ``Literal`` hints or
            ``field(metadata={"choices": …})``).
        skip: fields kept at their default value with no widget.
        container: where to draw (default: the main area).
    """
    box = container or st
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if f.name in skip or not f.init:
            values[f.name] = value
            continue
        label = f.name.replace("_", " ")
        help_text = f.metadata.get("help")
        wkey = f"{key}.{f.name}"
        opts = _choices_for(cls, f, choices)
        # Kept for the session (ui.state.keep): the value survives page changes, and other pages read it.
        if isinstance(value, bool):
            values[f.name] = box.checkbox(label, key=keep(wkey, value), help=help_text)
        elif opts is not None:
            values[f.name] = box.selectbox(label, opts, key=keep(wkey, value, valid=in_options(opts, value)),
                                           help=help_text)
        elif isinstance(value, int):
            values[f.name] = int(box.number_input(label, step=1, key=keep(wkey, value, valid=int), help=help_text))
        elif isinstance(value, float):
            values[f.name] = float(box.number_input(label, key=keep(wkey, value, valid=float), help=help_text,
                                                    format="%.3f"))
        elif isinstance(value, str):
            values[f.name] = box.text_input(label, key=keep(wkey, value), help=help_text)
        else:  # tuples and other structured fields stay as the preset has them
            values[f.name] = value
    return cls(**values)
