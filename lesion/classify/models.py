"""Image classifiers: a timm factory, targets, the shared preprocessing, and rebuilding a model from its card.

Heads:
    * binary (``num_classes=1``): one logit, ``sigmoid`` gives P(positive) where positive is *malignant*
      (``target='malignant'``) or *melanoma* (``target='melanoma'``, melanoma vs rest);
    * multi-class (``num_classes=7``, ``target='dx7'``): HAM10000's seven diagnoses :data:`HAM7`, softmax.

Preprocessing is part of the model (STYLE habit 4): :class:`Preprocessing` travels in the card and is applied by
the one implementation, :mod:`lesion.preprocess` (:func:`prepare_image` and :func:`normalize` here are its old
names, kept as thin wrappers).

torch and timm are imported inside the functions (importing this module stays cheap).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from lesion.card import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from lesion.data.labels import HAM7, MELANOMA_DX, TARGETS, Target, classes_for_target, make_targets, record_label
from lesion.errors import CheckpointError, ConfigError, unknown_option
from lesion.preprocess import apply_clahe, center_crop_box, prepare, prepare_mask, to_input
from lesion.weights import LITE_MEAN, LITE_STD, port_efficientnet_lite

__all__ = [  # the label rules live in lesion.data.labels; re-exported here for the classifier's users
    "HAM7", "MELANOMA_DX", "TARGETS", "Target", "classes_for_target", "make_targets", "record_label",
    "IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "LITE_PORTS", "INITS", "Preprocessing",
    "ClsModelConfig", "apply_clahe", "center_crop_square", "check_arch", "create_classifier", "load_lite_port",
    "normalize", "prepare_image",
]

INITS: tuple[str, ...] = ("imagenet-lite-port", "random")
#: Architectures whose ImageNet weights can be ported offline (lesion.weights.port_efficientnet_lite).
LITE_PORTS: dict[str, int] = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2}


@dataclass(frozen=True)
class ClsModelConfig:
    """A plain timm classifier."""

    arch: str = "efficientnet_lite0"  # any timm model name (timm.list_models())
    num_classes: int = 1  # 1 = binary logit, 7 = HAM7 softmax
    in_chans: int = 3  # input channels (RGB)
    # The input the model is trained for. Preprocessing, not architecture: a card stores them in ``preprocessing``
    # only (never in ``model``), and :func:`lesion.classify.classifier.config_from_card` fills them from there.
    size: int | tuple[int, int] = 224  # S or (H, W), pixels
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    init: str = "random"  # 'imagenet-lite-port' (efficientnet_lite0/1/2 only, offline port) or 'random'
    drop_rate: float = 0.0  # dropout before the classifier


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """Central ``min(H, W)`` square of ``image [H, W, ...]`` (:func:`lesion.preprocess.center_crop_box`)."""
    top, left, ch, cw = center_crop_box(image.shape[:2], (1, 1))
    return image[top : top + ch, left : left + cw]


def prepare_image(image: np.ndarray, prep: Preprocessing, mask: np.ndarray | None = None):
    """:func:`lesion.preprocess.prepare` (and :func:`~lesion.preprocess.prepare_mask` for ``mask``).

    Returns:
        uint8 ``[H, W, channels]`` (not yet scaled), or ``(image, mask bool [H, W])`` when a mask is given.
    """
    img = prepare(image, prep)
    return img if mask is None else (img, prepare_mask(mask, prep))


def normalize(images_uint8: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """:func:`lesion.preprocess.to_input`: ``[..., H, W, C]`` uint8 -> float32 ``[..., C, H, W]`` (scale, mean/std).

    A letterboxed batch needs the content sizes: use :func:`lesion.preprocess.prepare_batch` for those.
    """
    return to_input(images_uint8, prep)


# -------------------------------------------------------------------------------------------------------
# Factory
# -------------------------------------------------------------------------------------------------------


def check_arch(arch: str) -> None:
    """Raise ConfigError (with close timm names) when ``arch`` is not a timm model."""
    import timm

    if arch in timm.list_models():
        return

    names = timm.list_models()
    near = difflib.get_close_matches(arch, names, n=8, cutoff=0.6)
    raise unknown_option("timm architecture", arch, near or sorted(LITE_PORTS) + ["resnet18", "resnet10t"])


def load_lite_port(model, arch: str, skip_prefixes: Iterable[str] = ("classifier.",)) -> None:
    """Load the offline efficientnet-lite ImageNet port into a timm model, all but the head.

    Raises:
        ConfigError: ``arch`` has no port.
        CheckpointError: backbone keys missing (the port does not match the timm model).
    """
    if arch not in LITE_PORTS:
        raise ConfigError(
            f"init 'imagenet-lite-port' exists only for {', '.join(LITE_PORTS)}; use init 'random' for '{arch}'."
        )
    state = port_efficientnet_lite(LITE_PORTS[arch])
    skip = tuple(skip_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = model.state_dict()
    stem = "conv_stem.weight"
    if stem in state and stem in own and own[stem].shape[1] != state[stem].shape[1]:
        # one-channel (radiograph) input: timm's own rule, the RGB filters summed over colour
        from timm.models import adapt_input_conv

        state[stem] = adapt_input_conv(own[stem].shape[1], state[stem])
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in state and not k.startswith(skip)]
    if missing:
        raise CheckpointError(f"ImageNet port for {arch} lacks {len(missing)} keys, e.g. {missing[:3]}.")
    model.load_state_dict(state, strict=False)


def create_classifier(cfg: ClsModelConfig):
    """Build a timm classifier (never downloads: ``pretrained=False``).

    Returns:
        ``nn.Module`` mapping ``[B, in_chans, H, W]`` (normalised) to logits ``[B, num_classes]``.

    Raises:
        ConfigError: unknown arch (close timm names listed) or init.
    """
    import timm

    if cfg.init not in INITS:
        raise unknown_option("init", cfg.init, INITS)
    check_arch(cfg.arch)
    model = timm.create_model(
        cfg.arch, pretrained=False, num_classes=cfg.num_classes, in_chans=cfg.in_chans, drop_rate=cfg.drop_rate
    )
    if cfg.init == "imagenet-lite-port":
        head = model.default_cfg.get("classifier", "classifier")
        load_lite_port(model, cfg.arch, skip_prefixes=(head + ".",))
    return model
