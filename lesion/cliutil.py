"""What every ``lesion …`` command shares: the one-line-error argument parser and the JSON summary line.

* :class:`OneLineParser`: ``argparse.ArgumentParser`` whose errors (a word where a number goes, an unknown
  choice, a missing option) are **one line** ``prog: error: message (see prog --help)`` on stderr with **exit
  code 2**, instead of the whole usage block followed by the message: the same shape as the
  :class:`~lesion.errors.LesionError` lines that :mod:`lesion.cli` prints.
* :func:`json_line`: the JSON object a command prints as its last stdout line, with NaN and infinities written as
  ``null`` (``NaN`` is not JSON; an undefined score, such as a one-class AUC, is NaN in :mod:`lesion.metrics`).
"""
from __future__ import annotations

import argparse
import json
import math
import typing
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors (``prog: error: message``) and exit code 2."""

    def error(self, message: str) -> "typing.NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def finite_or_none(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists and tuples walked) with every non-finite float replaced by None."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_line(obj: Any) -> str:
    """``obj`` as one line of strict JSON (:func:`finite_or_none` first; a numpy scalar becomes its Python value,
    anything else JSON lacks its ``str``)."""

    def default(v: Any) -> Any:
        item = getattr(v, "item", None)
        return finite_or_none(item()) if callable(item) else str(v)

    return json.dumps(finite_or_none(obj), default=default, allow_nan=False)
