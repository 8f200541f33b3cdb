"""One inference interface, several backends: ``torch`` (this process, CPU or CUDA), ``onnx`` (onnxruntime on
the CPU, from exported files built on first use) and ``remote`` (a ``lesion serve`` model server).

:func:`predict` takes the ``(model, card)`` pairs the engine takes and returns the same
:class:`~lesion.infer.engine.PredictionResult` whichever backend ran it.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from lesion.card import ModelCard
from lesion.errors import ConfigError, unknown_option
from lesion.infer.engine import PredictionResult
from lesion.infer.engine import predict as torch_predict
from lesion.serving.client import RemoteClient
from lesion.serving.onnx_backend import onnx_members

BACKENDS: tuple[str, ...] = ("torch", "onnx", "remote")


def predict(
    models: Sequence[tuple[Any, ModelCard]],
    data: Any,
    tta: str = "d4",
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    backend: str = "torch",
    url: str | None = None,
    token: str | None = None,
    int8: bool = False,
    calibration: Any = None,
) -> PredictionResult:
    """Ensemble x TTA prediction on the chosen backend.

    Args:
        models: ``(model, card)`` pairs (``remote`` needs only the cards; the model may be None).
        backend: ``torch`` | ``onnx`` | ``remote``.
        url, token: the server of the ``remote`` backend.
        int8, calibration: the ``onnx`` backend's static int8 files (calibration data: folder or ``demo:derm``).
        Other arguments: as :func:`lesion.infer.engine.predict`.
    """
    if backend not in BACKENDS:
        raise unknown_option("backend", backend, BACKENDS)
    if backend == "torch":
        return torch_predict(models, data, tta=tta, merge=merge, tta_merge=tta_merge, batch_size=batch_size,
                             device=device, progress=progress)
    if backend == "onnx":
        members = onnx_members(models, int8=int8, calibration=calibration)
        return torch_predict(members, data, tta=tta, merge=merge, tta_merge=tta_merge, batch_size=batch_size,
                             device="cpu", progress=progress)
    if not url:
        raise ConfigError("The remote backend needs the server's URL (e.g. http://127.0.0.1:8000; LESION_BACKEND).")
    return RemoteClient(url, token).predict([c for _, c in models], data, tta=tta, merge=merge,
                                            tta_merge=tta_merge, progress=progress)


__all__ = ["BACKENDS", "PredictionResult", "RemoteClient", "predict"]
