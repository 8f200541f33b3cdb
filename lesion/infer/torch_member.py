"""The PyTorch member: a :class:`~lesion.classify.classifier.Classifier` on the CPU or CUDA (backend ``torch``)."""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.classify.classifier import Classifier, as_classifier
from lesion.infer.members import Member, TensorMember, register_backend
from lesion.weights import state_digest


class TorchMember(TensorMember):
    """A PyTorch classifier (:class:`~lesion.classify.classifier.Classifier` contract) on the CPU or CUDA.

    On CUDA it runs in ``channels_last`` under ``torch.autocast`` (bf16 where supported, else fp16); on the CPU
    in fp32. ``module`` is the network (for CAMs); ``identity`` the sha256 its loader verified
    (``model.weights_sha256``), else the sha256 of its state (:func:`lesion.weights.state_digest`).
    """

    kind = "torch"
    gradients = True
    features = True
    #: bf16 (or fp16) autocast and channels_last on CUDA; False = plain fp32 (the naive reference path).
    mixed_precision = True

    def __init__(self, model: Any, card: ModelCard, name: str | None = None):
        self.module: Classifier = as_classifier(model)
        digest = getattr(model, "weights_sha256", None) or getattr(self.module, "weights_sha256", None)
        identity = f"sha256:{digest}" if isinstance(digest, str) and digest else f"state:{state_digest(self.module)}"
        super().__init__(card, identity, name)
        self.uses_metadata = bool(self.module.uses_metadata)
        # an imported ONNX / TorchScript network runs outside autograd's view of its layers: no CAMs, no features
        opaque = not getattr(getattr(self.module, "net", self.module), "differentiable", True)
        self.gradients = self.features = not opaque

    def place(self, device: str) -> None:
        import torch

        self.module.eval()
        self.module.to(device)
        if device.startswith("cuda") and self.mixed_precision:
            self.module.to(memory_format=torch.channels_last)
        self.device = device

    def forward(self, x, meta) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.device.startswith("cuda") and self.mixed_precision:
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                ctx = torch.autocast("cuda", dtype=dtype)
            else:
                x = x.to(self.device)
                ctx = contextlib.nullcontext()
            with ctx:
                out = self.module(x, meta.to(x.device) if meta is not None else None).logits
        return out.float().cpu().numpy()

    def embed(self, x):
        """Penultimate (pooled) features ``[n, F]`` of preprocessed inputs (timm's ``forward_features`` +
        ``forward_head(pre_logits=True)``)."""
        import torch

        net = getattr(self.module, "net", self.module)
        enc = getattr(net, "encoder", net)
        with torch.inference_mode():
            f = enc.forward_features(x.to(self.device)) if hasattr(enc, "forward_features") else enc(x)[-1]
            if hasattr(enc, "forward_head"):
                f = enc.forward_head(f, pre_logits=True)
            elif f.ndim == 4:
                f = f.mean(dim=(2, 3))
        return f.float().cpu().numpy()


def torch_members(pairs: Sequence[tuple[Any, ModelCard]], **_: Any) -> list[Member]:
    """``(model, card)`` pairs -> :class:`TorchMember` objects (the ``torch`` backend)."""
    return [TorchMember(model, card) for model, card in pairs]


register_backend("torch", torch_members)
