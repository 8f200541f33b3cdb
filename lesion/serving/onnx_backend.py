"""The ``onnx`` backend: the same ensemble x TTA engine, each member run by onnxruntime on the CPU.

A member's ONNX file is exported on first use (:func:`lesion.export.export_onnx`, which checks it against
PyTorch to 1e-4 before keeping it) into the cache, named by the checkpoint's sha256, and reused afterwards: a
replaced checkpoint has another sha256, so it is never served from a stale file. The exported graph takes the
card's preprocessed input (same crop, resize, CLAHE, mean/std), so the engine's batching and TTA views stay
exactly as they are; only the forward pass changes. ONNX files carry logits only: multi-task masks and
attention maps stay with the PyTorch backend (the Explain page uses that one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.classify.classifier import as_classifier
from lesion.errors import CheckpointError
from lesion.export import META_NAME, OnnxClassifier, default_int8_path, export_onnx, quantize_onnx
from lesion.infer.members import TensorMember, register_backend
from lesion.paths import cache_dir, file_digest
from lesion.weights import state_digest


def onnx_cache_dir(root: str | Path | None = None) -> Path:
    """Where exported members are kept: ``<lesion cache>/onnx`` (``root`` overrides, for tests)."""
    d = Path(root) if root is not None else cache_dir() / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _identity(model: Any, card: ModelCard) -> str:
    """sha256 of the checkpoint file (when the card has one), else of the state (:func:`state_digest`)."""
    if card.path and Path(card.path).is_file():
        return file_digest(card.path)
    return state_digest(as_classifier(model))


def onnx_file(model: Any, card: ModelCard, int8: bool = False, calibration: Any = None,
              root: str | Path | None = None, log=None) -> Path:
    """The ONNX file of a member, exported (and quantised) on first use, then reused.

    Args:
        model, card: the loaded PyTorch member (its weights are what is exported).
        int8: the static int8 copy instead of fp32 (needs ``calibration``: a data folder, ``demo:derm`` or records).
        root: cache folder override.

    Raises:
        CheckpointError: the export does not match PyTorch, or a cached file was changed.
    """
    key = _identity(model, card)[:20]
    size = card.preprocessing.size_text.replace(" ", "")
    fp32 = onnx_cache_dir(root) / f"{card.name}-{key}-{size}.onnx"
    if not fp32.is_file():
        export_onnx((model, card), fp32, overwrite=True, log=log)
    if not int8:
        return fp32
    q = default_int8_path(fp32)
    if not q.is_file():
        if calibration is None:
            raise CheckpointError("The int8 ONNX backend needs calibration images (a data folder or demo:derm).")
        quantize_onnx(fp32, q, calibration, overwrite=True, log=log)
    return q


class OnnxMember(TensorMember):
    """An exported member: the engine's preprocessed tensors go through onnxruntime on the CPU.

    ``identity`` is the source checkpoint's (the exported graph computes the same logits to 1e-4, int8
    excepted), plus ``int8`` for the quantised copy; it has no gradients (CAMs need the PyTorch member).
    """

    kind = "onnx"

    def __init__(self, path: str | Path, card: ModelCard, identity: str, threads: int = 1):
        self.runner = OnnxClassifier(path, threads=threads)
        super().__init__(card.replace(preprocessing=self.runner.card.preprocessing), identity)
        self.path = Path(path)
        self.uses_metadata = bool(self.runner.card.uses_metadata)
        if self.uses_metadata and META_NAME not in [i.name for i in self.runner.session.get_inputs()]:
            raise CheckpointError(f"{self.path.name} lacks the metadata input its card describes.")

    @property
    def where(self) -> str:
        return "cpu (onnxruntime)"

    def forward(self, x, meta) -> np.ndarray:
        m = None
        if self.uses_metadata and meta is not None:
            m = meta.detach().cpu().numpy().astype(np.float32)
            if m.ndim == 1:
                m = np.repeat(m[None], x.shape[0], axis=0)
        return np.asarray(self.runner.run(x.detach().cpu().numpy(), m)["logits"], np.float32)


def onnx_members(models: Sequence[tuple[Any, ModelCard]], int8: bool = False, calibration: Any = None,
                 threads: int = 1, root: str | Path | None = None, log=None, **_: Any) -> list[OnnxMember]:
    """``(model, card)`` pairs -> :class:`OnnxMember` objects (the ``onnx`` backend of
    :func:`lesion.infer.engine.predict`); each file exported on first use and reused by checkpoint sha256."""
    out = []
    for model, card in models:
        path = onnx_file(model, card, int8=int8, calibration=calibration, root=root, log=log)
        identity = f"sha256:{_identity(model, card)}" + (":int8" if int8 else "")
        out.append(OnnxMember(path, card, identity, threads=threads))
    return out


register_backend("onnx", onnx_members)
