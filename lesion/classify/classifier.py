"""One forward contract for every classifier: ``Classifier(x, meta=None) -> ClassifierOutput``.

A timm network returns a logit tensor; the multi-task network returns a dict with its mask and takes
metadata. :class:`Classifier` wraps either, so the engine, the trainers, the exporter and the explainers call
one thing and never ask which class a model is (the way pytorch-grad-cam and smp hide heads behind one
``forward``). Its ``state_dict`` is the wrapped network's own (timm / lesion keys, no ``net.`` prefix), so
checkpoints are unchanged and stay loadable by plain timm.

Rebuilding from a card (:func:`build_from_card`) is what :func:`lesion.zoo.load_model` calls for the
``classification`` and ``multitask`` tasks.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from lesion.card import ModelCard
from lesion.classify.models import ClsModelConfig, create_classifier
from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet
from lesion.errors import ConfigError


class ClassifierOutput(NamedTuple):
    """What every classifier returns."""

    logits: torch.Tensor  # [B, K] before sigmoid / softmax
    mask_logits: torch.Tensor | None = None  # [B, 1, H, W] lesion-mask logits at the input size (multi-task)
    attention: torch.Tensor | None = None  # [B, 1, h, w] the mask's sigmoid at the classifier's resolution


def _strip_net_prefix(module, state_dict, prefix, local_metadata):
    """state_dict hook: ``<prefix>net.x`` -> ``<prefix>x`` (the checkpoint holds the network's own keys)."""
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        state_dict[prefix + key[len(prefix) + 4:]] = state_dict.pop(key)
    return state_dict


def _add_net_prefix(state_dict, prefix, *args, **kwargs):
    """load_state_dict pre-hook: the inverse of :func:`_strip_net_prefix`."""
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "net.")]:
        state_dict[prefix + "net." + key[len(prefix):]] = state_dict.pop(key)


class Classifier(nn.Module):
    """A classifier network behind the one contract.

    Attributes:
        net: the wrapped network (a timm model or :class:`MultiTaskNet`).
        has_mask: the model predicts a lesion mask (and an attention map) besides its logits.
        uses_metadata: the model takes an encoded metadata vector ``[B, meta_dim]``.
        meta_dim: length of that vector (0 when unused).
        num_classes: K.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.has_mask = isinstance(net, MultiTaskNet)
        self.uses_metadata = self.has_mask and bool(net.cfg.use_metadata)
        self.meta_dim = int(net.cfg.meta_dim) if self.uses_metadata else 0
        self.num_classes = int(net.cfg.num_classes) if self.has_mask else int(getattr(net, "num_classes", 1) or 1)
        self._register_state_dict_hook(_strip_net_prefix)
        self._register_load_state_dict_pre_hook(_add_net_prefix)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> ClassifierOutput:
        """``x`` normalised ``[B, C, H, W]``; ``meta`` ``[B, meta_dim]`` or ``[meta_dim]`` (ignored by models without
        metadata; None = all unknown)."""
        if not self.has_mask:
            return ClassifierOutput(self.net(x))
        if meta is not None and self.uses_metadata:
            meta = meta.to(x.device)
            if meta.dim() == 1 or meta.shape[0] == 1:
                meta = meta.reshape(1, -1).expand(x.shape[0], -1)
        out = self.net(x, meta if self.uses_metadata else None)
        return ClassifierOutput(out["logits"], out["mask_logits"], out["attention"])

    def unknown_metadata(self, batch: int, device=None) -> torch.Tensor:
        """``[batch, meta_dim]`` all-unknown metadata (age missing, sex and site unknown)."""
        if not self.uses_metadata:
            raise ConfigError("This model takes no metadata.")
        return self.net.unknown_metadata(batch, device)

    @property
    def output_bias(self) -> torch.Tensor | None:
        """Bias of the final logit (set to the class prior's log-odds before training)."""
        if self.has_mask:
            return self.net.output_bias
        head = self.net.get_classifier() if hasattr(self.net, "get_classifier") else None
        return getattr(head, "bias", None)

    def feature_layer(self) -> nn.Module | None:
        """The last spatial feature stage for CAM methods (None: let the caller search the network).

        Multi-task: the encoder's last feature stage (what the classifier and the mask decoder see);
        a timm EfficientNet: ``bn2`` (conv_head + BN + activation).
        """
        if self.has_mask:
            info = self.net.encoder.feature_info
            names = info.module_name() if hasattr(info, "module_name") else [i["module"] for i in info]
            return submodule(self.net.encoder, names[-1])
        if hasattr(self.net, "conv_head") and hasattr(self.net, "bn2"):
            return self.net.bn2
        return None

    def logits_module(self, meta: torch.Tensor | None = None) -> "LogitsOnly":
        """An ``nn.Module`` ``x -> logits [B, K]`` with ``meta`` bound (for Grad-CAM, TTA and ONNX tracing)."""
        return LogitsOnly(self, meta).eval()


def submodule(module: nn.Module, name: str) -> nn.Module | None:
    """``module.get_submodule(name)``, also with dots spelled as underscores (timm's feature names); None if absent."""
    for candidate in (name, name.replace(".", "_")):
        try:
            return module.get_submodule(candidate)
        except AttributeError:
            continue
    return None


class LogitsOnly(nn.Module):
    """``forward(x) -> logits`` of a :class:`Classifier` with a fixed metadata vector (default: all unknown)."""

    def __init__(self, classifier: Classifier, meta: torch.Tensor | None = None):
        super().__init__()
        self.classifier = classifier
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x, self.meta).logits


def model_config(card: ModelCard) -> dict[str, Any]:
    """The card's ``model`` section as constructor kwargs (tuples stored as JSON lists restored)."""
    m = dict(card.model)
    for k in ("mean", "std", "decoder_channels"):
        if k in m and isinstance(m[k], list):
            m[k] = tuple(m[k])
    return m


def create_model(cfg: ClsModelConfig | MultiTaskConfig) -> Classifier:
    """A new (untrained, or ImageNet-initialised per ``cfg.init``) classifier behind the contract."""
    if isinstance(cfg, MultiTaskConfig):
        return Classifier(MultiTaskNet(cfg))
    if isinstance(cfg, ClsModelConfig):
        return Classifier(create_classifier(cfg))
    raise ConfigError(f"Not a classifier config: {type(cfg).__name__}.")


def config_from_card(card: ModelCard) -> ClsModelConfig | MultiTaskConfig:
    """The constructor config a card describes, with ``init='random'`` (the checkpoint holds every weight).

    The network comes from ``card.model``; the config's input fields (size, mean, std) from
    ``card.preprocessing``, the one place a card keeps them.
    """
    kw = model_config(card)
    kw["init"] = "random"
    prep = card.preprocessing
    kw.update(size=prep.size, mean=prep.mean, std=prep.std)
    try:
        if card.task == "classification":
            return ClsModelConfig(**kw)
        if card.task == "multitask":
            return MultiTaskConfig(**kw)
    except TypeError as e:
        raise ConfigError(f"Card '{card.name}' has a model section that does not build: {e}") from e
    raise ConfigError(f"Card '{card.name}' has task '{card.task}', not 'classification' or 'multitask'.")


def build_from_card(card: ModelCard) -> Classifier:
    """An untrained :class:`Classifier` of the shape the card describes."""
    return create_model(config_from_card(card))


def as_classifier(model: nn.Module | Classifier | LogitsOnly) -> Classifier:
    """``model`` behind the contract: a Classifier as is, the Classifier of a logits-only view, a raw timm /
    multi-task network wrapped."""
    if isinstance(model, LogitsOnly):
        return model.classifier
    return model if isinstance(model, Classifier) else Classifier(model)
