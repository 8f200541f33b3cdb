"""Where the model pages run their models (the sidebar's Compute choice): this machine (PyTorch, or ONNX Runtime on
the CPU) or a ``lesion serve`` model server. The served models' cards, the client, the page's one message when
the server is down or refuses the token, and the words saying where heatmaps are computed.

The choice itself (widgets, health check) lives in :mod:`ui.state`; the predictions go through
:func:`lesion.serving.predict` in :mod:`ui.classify`, the heatmaps through :meth:`RemoteClient.explain` in
:mod:`ui.explain` and :mod:`ui.cxr`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import streamlit as st

from lesion.card import ModelCard
from lesion.serving.client import RemoteClient, ServerError
from ui.state import Compute, compute_status, current_compute, device_label

#: Seconds one request to the model server may take (a data set's chunk of 64 images with d4 TTA on a CPU).
REQUEST_TIMEOUT_S = 600.0


def require_compute(finish_page: Callable[..., None]) -> Compute:
    """The session's Compute choice; with the model server chosen and down (or refusing the token), the page
    shows the one line saying so and ends there (the sidebar says it too)."""
    compute = current_compute()
    if compute.remote:
        status = compute_status(compute)
        if not status["ok"]:
            st.error(status["message"], icon=":material/cloud_off:")
            finish_page(stop=True)
    return compute


def served_cards() -> list[ModelCard]:
    """The cards of the models the chosen server serves ([] on this machine or when the server is down)."""
    status = compute_status()
    if not status or not status["ok"]:
        return []
    return [ModelCard.from_dict(d) for d in status["cards"]]


def served_card(name: str) -> ModelCard:
    """The served card of model ``name``.

    Raises:
        ServerError: the server does not serve it (or is down).
    """
    for card in served_cards():
        if card.name == name:
            return card
    compute = current_compute()
    raise ServerError(f"The model server at {compute.url} does not serve '{name}' (any more); pick another model.")


def client(compute: Compute | None = None) -> RemoteClient:
    """A client of the chosen server."""
    compute = compute or current_compute()
    return RemoteClient(compute.url, compute.token, timeout=REQUEST_TIMEOUT_S)


def server_device(compute: Compute | None = None) -> str:
    """The server's device (from its health check), e.g. ``cpu`` or ``cuda:0``."""
    status = compute_status(compute) or {}
    return str(status.get("device") or "?")


def heatmaps_where(compute: Compute | None = None) -> str:
    """Words for a caption: where the heatmaps are computed."""
    compute = compute or current_compute()
    if compute.remote:
        return f"the model server at {compute.url} ({server_device(compute)})"
    if compute.kind == "onnx":
        return (f"this machine with PyTorch ({device_label()}): CAMs need gradients, which ONNX Runtime files do "
                "not carry")
    return f"this machine ({device_label()})"


def needs_this_machine(what: str) -> str:
    """One line for a method the model server does not offer."""
    return f"{what} needs this machine: choose 'this machine' under Compute in the sidebar."


def wire_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only what a model reads (age as a number, sex and site as strings) and only known values: what
    :meth:`RemoteClient.explain` sends (the server refuses other fields and types)."""
    out: dict[str, Any] = {}
    for k, v in dict(meta or {}).items():
        if v is None or k not in ("age", "sex", "site"):
            continue
        if k == "age":
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(v):
                continue
        else:
            v = str(v)
        out[k] = v
    return out


def ran_on(device: str, compute: Compute | None = None) -> str:
    """Words for a result's ``device`` (:class:`PredictionResult`): ``model server http://host:port (cpu)``,
    ``this machine (cuda)``, ``this machine, ONNX Runtime (cpu)``, or the disk cache of this machine."""
    compute = compute or current_compute()
    device = str(device)
    if compute.remote:
        dev, _, url = device.partition(" at ")
        return f"model server {url or compute.url} ({dev or server_device(compute)})"
    if device == "cache":
        return "this machine (PyTorch, read from its prediction cache)"
    return f"this machine, ONNX Runtime ({device})" if compute.kind == "onnx" else f"this machine ({device})"
