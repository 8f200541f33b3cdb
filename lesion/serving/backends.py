"""The ways to build ensemble members, and the one entry point over them.

Importing this module registers the ``onnx`` backend (:mod:`lesion.serving.onnx_backend`: each member
exported to ONNX on first use, run by onnxruntime on the CPU) and the ``remote`` backend
(:mod:`lesion.serving.client`: a model on a ``lesion serve`` server) beside ``torch`` (this process, CPU or
CUDA). :func:`predict` **is** :func:`lesion.infer.engine.predict`: the same function, members and merge
whichever backend built the members::

    predict([(model, card)], data, tta="d4", backend="onnx", cache=True)
    predict([card], data, backend="remote", url="http://127.0.0.1:8000", token=…)
"""
from __future__ import annotations

from lesion.infer.engine import predict
from lesion.infer.members import backend_names
from lesion.infer.results import PredictionResult
from lesion.serving.onnx_backend import OnnxMember, onnx_members  # noqa: F401  (registers onnx, before remote)
from lesion.serving.client import RemoteClient, RemoteMember, remote_members  # noqa: F401  (registers remote)

#: The registered backends: ``torch``, ``onnx``, ``remote``.
BACKENDS: tuple[str, ...] = backend_names()

__all__ = ["BACKENDS", "PredictionResult", "RemoteClient", "predict"]
