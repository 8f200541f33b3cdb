"""The one front door for models: :func:`load_model` loads any checkpoint by name or path.

Like ``timm.create_model(..., pretrained_cfg=…)`` and smp's ``from_pretrained``, the card says what to build:
:data:`BUILDERS` maps the card's ``task`` to the function that rebuilds an untrained network of the right
shape, and the weights are then loaded strictly (a mismatch names the keys, never a raw traceback).

* ``segmentation`` -> the smp network (logits ``[B, 1, H, W]``); wrap it in
  :class:`lesion.segment.models.SegModelSegmenter` for the image-in, probability-out API;
* ``classification`` / ``multitask`` (plain, multi-label chest X-ray, and the multi-task attention model)
  -> a :class:`lesion.classify.classifier.Classifier`: ``forward(x, meta=None) -> ClassifierOutput``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from lesion.card import ModelCard
from lesion.classify import classifier
from lesion.classify.imported import build_imported
from lesion.errors import CheckpointError
from lesion.segment import models as seg_models
from lesion.weights import (WEIGHT_SUFFIXES, load_strict, read_state_file, resolve_weights, verify_weights,
                            weights_sha256)

#: card task -> builder of an untrained network from the card.
BUILDERS: dict[str, Callable[[ModelCard], Any]] = {
    "segmentation": seg_models.build_from_card,
    "classification": classifier.build_from_card,
    "multitask": classifier.build_from_card,
}

#: The tasks a classifier page / engine / exporter accepts.
CLASSIFIER_TASKS = ("classification", "multitask")


def _check_task(card: ModelCard, task: str | Iterable[str] | None) -> None:
    if task is None:
        return
    wanted = (task,) if isinstance(task, str) else tuple(task)
    if card.task not in wanted:
        raise CheckpointError(
            f"'{card.name}' is a {card.task} model; this needs {' or '.join(wanted)}."
        )


def _check_outputs(card: ModelCard) -> None:
    """A classifier's card must name one class per output of the network it describes (``model.num_classes``);
    otherwise every per-class column, metric and merge would be shifted or cut."""
    if card.task not in CLASSIFIER_TASKS or not card.classes:
        return
    k = dict(card.model or {}).get("num_classes")
    if isinstance(k, int) and k != len(card.classes):
        raise CheckpointError(
            f"The card of '{card.name}' lists {len(card.classes)} classes ({', '.join(card.classes[:6])}"
            f"{', …' if len(card.classes) > 6 else ''}) but its network has {k} outputs; fix 'classes' in its .json "
            "card.")


def read_model_card(name_or_path: str | Path, task: str | Iterable[str] | None = None) -> ModelCard:
    """The card of a checkpoint (no weights read); ``task`` refuses other kinds, and a classifier card whose
    classes do not match its network's outputs is refused."""
    _, card = resolve_weights(name_or_path)
    _check_task(card, task)
    _check_outputs(card)
    return card


def load_model(
    name_or_path: str | Path,
    device: Any = None,
    task: str | Iterable[str] | None = None,
    seg_config: "seg_models.SegModelConfig | None" = None,
    verify: bool = True,
) -> tuple[Any, ModelCard]:
    """Load a shipped or saved model: ``(network in eval mode on device, card)``.

    Args:
        name_or_path: a bare name in the weights folder (``"derm_unet_efficientnet_lite0"``) or a path with or
            without suffix; the card ``NAME.json`` lies next to the weights.
        device: ``None``/``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:N"`` or a ``torch.device``;
            None keeps the model on the CPU.
        task: refuse any other card task (checked on the card, before the weights are read).
        seg_config: a user's own smp checkpoint (``.pth``/``.safetensors`` without a card): the
            :class:`~lesion.segment.models.SegModelConfig` that builds it. With a card next to the file it
            overrides the card's model section.
        verify: check the weights file against the card's ``provenance.sha256`` before use (hashed once per
            process and file version); False loads a user's own edited checkpoint. A card without a sha256 is
            never checked.

    The network carries ``weights_sha256``, the sha256 of the file it was loaded from: the prediction cache
    keys on it (content, not path or mtime).

    Raises:
        CheckpointError: unknown name, missing/corrupt file or card, another task than ``task``, weights that
            do not match the card's sha256 (``verify``), weights that do not fit the model the card describes, or a
            classifier card whose classes are not one per network output.
    """
    path = Path(name_or_path)
    if seg_config is not None:
        _check_task(ModelCard(name=path.stem, task="segmentation"), task)
        fields = seg_models.cfg_to_card(seg_config)
        if path.suffix in WEIGHT_SUFFIXES and not path.with_suffix(".json").exists():
            wpath, card = path, ModelCard(name=path.stem, task="segmentation", path=str(path), **fields)
        else:
            wpath, card = resolve_weights(name_or_path)
            _check_task(card, "segmentation")
            card = card.replace(**fields)
    else:
        wpath, card = resolve_weights(name_or_path)
        _check_task(card, task)
    _check_outputs(card)
    digest = verify_weights(wpath, card) if verify else weights_sha256(wpath)
    if card.model.get("imported"):  # lesion import: a timm / torchvision / smp state dict, ONNX or TorchScript
        net = build_imported(card, wpath)
        if card.task in CLASSIFIER_TASKS:
            net.num_classes = len(card.classes) or 1
            net = classifier.Classifier(net)
    else:
        net = BUILDERS[card.task](card)
        what = f"weights '{card.name}' ({card.arch}{'/' + card.encoder if card.encoder and card.encoder != card.arch else ''})"
        load_strict(net, read_state_file(wpath), what=what)
    net.weights_sha256 = digest
    if device is not None:
        net.to(seg_models.torch_device(device))
    return net.eval(), card


def load_segmenter(name_or_path: str | Path, device: Any = None,
                   seg_config: "seg_models.SegModelConfig | None" = None,
                   verify: bool = True) -> "seg_models.SegModelSegmenter":
    """:func:`load_model` for a segmentation checkpoint, as an image -> probability callable."""
    net, card = load_model(name_or_path, device=device, task="segmentation", seg_config=seg_config, verify=verify)
    return seg_models.SegModelSegmenter(net, card, device=device)
