"""The ``onnx`` backend: the same ensemble x TTA engine, each member run by onnxruntime on the CPU.

A member's ONNX file is exported on first use (:func:`lesion.export.export_onnx`, which checks it against
PyTorch to 1e-4 before keeping it) into the cache, named by the checkpoint's sha256, and reused afterwards: a
replaced checkpoint has another sha256, so it is never served from a stale file. The exported graph takes the
card's preprocessed input (same crop, resize, CLAHE, mean/std), so the engine's batching and TTA views stay
exactly as they are; only the forward pass changes. ONNX files carry logits only: multi-task masks and
attention maps stay with the PyTorch backend (the Explain page uses that one).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lesion.card import ModelCard
from lesion.classify.classifier import Classifier, ClassifierOutput, as_classifier
from lesion.errors import CheckpointError
from lesion.export import META_NAME, OnnxClassifier, default_int8_path, export_onnx, quantize_onnx, read_card
from lesion.paths import cache_dir, file_digest


def onnx_cache_dir(root: str | Path | None = None) -> Path:
    """Where exported members are kept: ``<lesion cache>/onnx`` (``root`` overrides, for tests)."""
    d = Path(root) if root is not None else cache_dir() / "onnx"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _identity(model: Any, card: ModelCard) -> str:
    """sha256 of the checkpoint (the card's, checked against the file when there is one), else of the state."""
    if card.path and Path(card.path).is_file():
        return file_digest(card.path)
    h = hashlib.sha256()
    for k, v in as_classifier(model).state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
    size = card.preprocessing.size
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


class OnnxMember(Classifier):
    """An exported member behind the classifier contract: ``forward(x, meta) -> ClassifierOutput(logits)``.

    Inputs are the engine's preprocessed tensors; the forward pass runs in onnxruntime on the CPU.
    """

    def __init__(self, path: str | Path, threads: int = 1):
        torch.nn.Module.__init__(self)  # no network inside: the weights live in the ONNX graph
        self.runner = OnnxClassifier(path, threads=threads)
        card = self.runner.card
        self.has_mask = False
        self.uses_metadata = card.uses_metadata
        self.meta_dim = int(card.model.get("meta_dim", 0)) if self.uses_metadata else 0
        self.num_classes = len(card.classes) or 1

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> ClassifierOutput:
        m = None
        if self.uses_metadata and meta is not None:
            m = meta.detach().cpu().numpy().astype(np.float32)
            if m.ndim == 1:
                m = np.repeat(m[None], x.shape[0], axis=0)
        out = self.runner.run(x.detach().cpu().numpy(), m)
        return ClassifierOutput(torch.from_numpy(out["logits"]))

    def feature_layer(self):  # pragma: no cover - CAMs need the PyTorch backend
        raise CheckpointError("CAM methods need the PyTorch backend: an ONNX member has no layers to hook.")


def onnx_members(models: Sequence[tuple[Any, ModelCard]], int8: bool = False, calibration: Any = None,
                 threads: int = 1, root: str | Path | None = None, log=None) -> list[tuple[OnnxMember, ModelCard]]:
    """``(model, card)`` pairs -> ``(OnnxMember, card)`` pairs for :func:`lesion.infer.engine.predict`."""
    out = []
    for model, card in models:
        path = onnx_file(model, card, int8=int8, calibration=calibration, root=root, log=log)
        member = OnnxMember(path, threads=threads)
        if member.uses_metadata and META_NAME not in [i.name for i in member.runner.session.get_inputs()]:
            raise CheckpointError(f"{path.name} lacks the metadata input its card describes.")
        out.append((member, card.replace(preprocessing=read_card(path).preprocessing)))
    return out
