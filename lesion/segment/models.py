"""Deep segmentation models: an smp factory, strict checkpoint loading, and a segmenter callable.

Architectures come from segmentation_models_pytorch (smp) through the small registry :data:`ARCHS`;
encoders are any smp encoder (``resnet34``…) or timm model through smp's universal encoder
(``tu-efficientnet_lite0``…). ImageNet initialisation is offline only (:mod:`lesion.weights`): smp is
always called with ``encoder_weights=None``.

A checkpoint's card rebuilds its model (:func:`cfg_from_card`), and inference prepares images by the card's
preprocessing (size, resize mode, mean, std; :mod:`lesion.preprocess`), so a page never has to know how a model
was trained.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard, Preprocessing
from lesion.device import pick_device
from lesion.errors import CheckpointError, ConfigError, LesionError, ModelOutputError, unknown_option
from lesion.preprocess import prepare_batch, restore
from lesion.segment import medsam_encoder
from lesion.weights import LITE_MEAN, LITE_STD, init_encoder_from_imagenet

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _smp_arch(class_name: str, **fixed: Any) -> Callable[..., Any]:
    """Late-bound smp constructor, so that importing this module does not import smp."""

    def build(**kwargs: Any):
        import segmentation_models_pytorch as smp

        return getattr(smp, class_name)(**fixed, **kwargs)

    build.__name__ = class_name
    return build


#: arch name -> smp constructor (``unet_scse`` is smp's U-Net with scSE attention in the decoder).
ARCHS: dict[str, Callable[..., Any]] = {
    "unet": _smp_arch("Unet"),
    "unet_scse": _smp_arch("Unet", decoder_attention_type="scse"),
    "unetplusplus": _smp_arch("UnetPlusPlus"),
    "linknet": _smp_arch("Linknet"),
}

#: Architectures whose decoder takes ``decoder_channels`` (one entry per encoder stage used).
_HAS_DECODER_CHANNELS = {"unet", "unet_scse", "unetplusplus"}
_DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)

#: Initialisations a config may ask for.
INITS = ("imagenet-lite-port", "medsam", "random")

#: Encoders with an offline ImageNet port (the rest start from random weights).
PORTED_ENCODERS = ("tu-efficientnet_lite0", "tu-efficientnet_lite1", "tu-efficientnet_lite2")

#: Largest input accepted by :class:`SegModelSegmenter`: longer side over ``MAX_SIDE_FACTOR`` x the model
#: size, or more than ``MAX_PIXELS`` pixels, raises instead of silently throwing away detail.
MAX_SIDE_FACTOR = 8
MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class SegModelConfig:
    """What builds a segmentation model and how its inputs are prepared (hashable: a cache key).

    Attributes:
        arch: key of :data:`ARCHS` (``unet``, ``unet_scse``, ``unetplusplus``, ``linknet``).
        encoder: smp encoder name (``resnet34``) or ``tu-<timm model>`` (``tu-efficientnet_lite0``).
        in_channels: input channels (3: X-rays are fed as grey replicated to RGB).
        classes: output channels (1: binary lesion / lung mask, sigmoid).
        size: the network input, ``S`` (square) or ``(H, W)``, pixels; the image is squashed to it.
        mean: per-channel mean subtracted after scaling RGB to 0..1.
        std: per-channel std divided by after subtracting the mean.
            (size, mean and std go into the card's ``preprocessing``, not its ``model`` section.)
        init: ``imagenet-lite-port`` (offline ImageNet encoder, lite encoders only) or ``random``.
        encoder_depth: encoder stages used (3..5; fewer is faster and smaller, for tests).
        decoder_channels: U-Net/U-Net++ decoder widths; None = smp's default cut to ``encoder_depth``.
    """

    arch: str = "unet"
    encoder: str = "tu-efficientnet_lite0"
    in_channels: int = 3
    classes: int = 1
    size: int | tuple[int, int] = 256
    mean: tuple[float, ...] = LITE_MEAN
    std: tuple[float, ...] = LITE_STD
    init: str = "imagenet-lite-port"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] | None = field(default=None)

    def resolved_decoder_channels(self) -> tuple[int, ...]:
        if self.decoder_channels is not None:
            return tuple(self.decoder_channels)
        return _DEFAULT_DECODER_CHANNELS[5 - self.encoder_depth:]


def check_encoder(name: str) -> None:
    """Raise :class:`ConfigError` listing the options when ``name`` is not an smp or ``tu-`` timm encoder."""
    import segmentation_models_pytorch as smp

    medsam_encoder.register()
    if name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return
        raise unknown_option("timm encoder (tu-…)", name, [f"tu-{m}" for m in timm.list_models("*lite*")]
                             + ["tu-<any timm model>"])
    names = list(smp.encoders.get_encoder_names())
    if name not in names:
        raise unknown_option("encoder", name, list(PORTED_ENCODERS) + names + ["tu-<any timm model>"])


def create_seg_model(cfg: SegModelConfig, load_imagenet: bool = True) -> "torch.nn.Module":
    """Build the smp model of ``cfg``; with ``init='imagenet-lite-port'`` load the offline encoder weights.

    Args:
        cfg: the model config.
        load_imagenet: False skips the ImageNet port (when a checkpoint is loaded next anyway).

    Returns:
        an ``nn.Module`` mapping ``[B, in_channels, H, W]`` (H, W multiples of 2**encoder_depth) to logits
        ``[B, classes, H, W]``; its ``init_report`` attribute says how the encoder was initialised.

    Raises:
        ConfigError: unknown arch, encoder or init (the message lists the options).
    """
    if cfg.arch not in ARCHS:
        raise unknown_option("architecture", cfg.arch, list(ARCHS))
    if cfg.init not in INITS:
        raise unknown_option("init", cfg.init, list(INITS))
    if not 1 <= cfg.encoder_depth <= 5:
        raise ConfigError(f"encoder_depth must be 1..5, got {cfg.encoder_depth}.")
    check_encoder(cfg.encoder)
    if (cfg.init == "medsam") != (cfg.encoder == medsam_encoder.NAME) and cfg.init != "random":
        raise ConfigError(f"init 'medsam' goes with encoder '{medsam_encoder.NAME}' (and that encoder with "
                          "init 'medsam' or 'random').")
    if cfg.encoder == medsam_encoder.NAME and (cfg.size != medsam_encoder.SIZE or cfg.encoder_depth != 3):
        raise ConfigError(f"The {medsam_encoder.NAME} encoder needs size {medsam_encoder.SIZE} and encoder_depth 3 "
                          f"(got size {cfg.size}, encoder_depth {cfg.encoder_depth}).")
    kwargs: dict[str, Any] = dict(
        encoder_name=cfg.encoder,
        encoder_weights=None,  # never a hub download; ImageNet comes from the offline port below
        encoder_depth=cfg.encoder_depth,
        in_channels=cfg.in_channels,
        classes=cfg.classes,
    )
    if cfg.arch in _HAS_DECODER_CHANNELS:
        kwargs["decoder_channels"] = cfg.resolved_decoder_channels()
    try:
        model = ARCHS[cfg.arch](**kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"Cannot build {cfg.arch} with encoder {cfg.encoder}: {e}") from e
    report: dict[str, Any] = {"init": "random"}
    if cfg.init == "medsam" and load_imagenet:
        report = medsam_encoder.load_medsam_encoder(model)
    if cfg.init == "imagenet-lite-port" and load_imagenet:
        if cfg.in_channels != 3:
            raise ConfigError("The ImageNet port needs in_channels=3 (use init='random' otherwise).")
        report = init_encoder_from_imagenet(model, cfg.encoder)
        if report["init"] != "imagenet-lite-port":
            warnings.warn(f"{report.get('note')}; ported encoders: {', '.join(PORTED_ENCODERS)}", stacklevel=2)
    model.init_report = report
    return model


# ----------------------------------------------------------------------------------------------------------
# Cards and loading
# ----------------------------------------------------------------------------------------------------------
def cfg_to_card(cfg: SegModelConfig) -> dict[str, Any]:
    """The :class:`~lesion.card.ModelCard` fields that rebuild ``cfg`` (``ModelCard(name=…, task="segmentation",
    **cfg_to_card(cfg), …)``)."""
    model = {k: v for k, v in asdict(cfg).items() if k not in ("size", "mean", "std")}  # those: preprocessing
    return {
        "arch": cfg.arch,
        "encoder": cfg.encoder,
        "init": cfg.init,
        "classes": ("foreground",) if cfg.classes == 1 else tuple(f"class{i}" for i in range(cfg.classes)),
        "model": model,
        "preprocessing": Preprocessing(size=cfg.size, mean=tuple(cfg.mean), std=tuple(cfg.std), resize="squash",
                                       channels=cfg.in_channels, threshold=0.5),
    }


def cfg_from_card(card: ModelCard) -> SegModelConfig:
    """Rebuild the :class:`SegModelConfig` a card describes (``init='random'``: the checkpoint holds the weights);
    size, mean and std come from ``card.preprocessing`` (the one place a card keeps them).

    Raises:
        CheckpointError: the card lacks ``arch``/``encoder`` or the preprocessing size.
    """
    model = dict(card.model)
    pre = card.preprocessing
    arch = model.get("arch", card.arch)
    encoder = model.get("encoder", card.encoder)
    size = pre.size
    if not arch or not encoder or not size:
        raise CheckpointError(
            f"Card '{card.name}' must give arch, encoder and preprocessing.size "
            f"(found arch={arch!r}, encoder={encoder!r}, size={size!r})."
        )
    dc = model.get("decoder_channels")
    return SegModelConfig(
        arch=str(arch),
        encoder=str(encoder),
        in_channels=int(model.get("in_channels", 3)),
        classes=int(model.get("classes", 1)),
        size=size,
        mean=tuple(float(v) for v in pre.mean),
        std=tuple(float(v) for v in pre.std),
        init="random",  # the checkpoint holds the weights; never re-run the ImageNet port on load
        encoder_depth=int(model.get("encoder_depth", 5)),
        decoder_channels=tuple(int(c) for c in dc) if dc else None,
    )


def torch_device(device: "str | torch.device | None" = None) -> "torch.device":
    """:func:`lesion.device.pick_device` (the one device rule, a string) as a ``torch.device``."""
    import torch

    return torch.device(pick_device(device))


def build_from_card(card: ModelCard) -> "torch.nn.Module":
    """An untrained smp model of the shape the card describes (:func:`lesion.zoo.load_model` loads its weights)."""
    try:
        return create_seg_model(cfg_from_card(card), load_imagenet=False)
    except ConfigError as e:
        raise CheckpointError(f"Card of '{card.name}' describes a model that cannot be built: {e}") from e


# ----------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------
def check_image_size(image: np.ndarray, size: int | Sequence[int]) -> None:
    """Raise :class:`LesionError` for an image far larger than the model's input (before any work).

    Limit: longer side > ``MAX_SIDE_FACTOR`` x the input's longer side (``size``: ``S`` or ``(H, W)``) or more
    than ``MAX_PIXELS`` pixels. Squeezing a 4000-px photo into 256 px throws away the detail the user expects to
    see, so we ask them to downscale (or crop) it knowingly instead of doing it silently.
    """
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise LesionError(f"Expected an image [H, W, 3], got shape {tuple(image.shape)}.")
    H, W = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    side = max(H, W)
    h, w = image.shape[:2]
    if max(h, w) > MAX_SIDE_FACTOR * side or h * w > MAX_PIXELS:
        raise LesionError(
            f"Image is {w}x{h} px, far larger than this model's {W}x{H} input (limit: "
            f"{MAX_SIDE_FACTOR * side} px per side, {MAX_PIXELS // 1_000_000} MP). Downscale or crop it first."
        )


def predict_batch(
    model: "torch.nn.Module",
    images: Sequence[np.ndarray],
    card: ModelCard,
    device: "str | torch.device | None" = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Foreground probabilities for a list of images, batched.

    Args:
        model: a segmentation model in eval mode (logits ``[B, 1, h, w]``).
        images: RGB uint8 ``[H, W, 3]`` (grey ``[H, W]`` is replicated), any sizes.
        card: supplies ``preprocessing`` (:mod:`lesion.preprocess`: size, resize mode, scale, mean, std).
        device: where to run; default the model's device.
        batch_size: images per forward pass.
        progress: called as ``progress(done, total)``.

    Returns:
        one float32 ``[H, W]`` array in 0..1 per image, at the image's own size (:func:`lesion.preprocess.restore`:
        bilinear back through the card's geometry).

    Raises:
        ModelOutputError: the model output NaN or Inf for any image (counted over all of them; nothing is
            returned, so nothing is scored or cached).
    """
    import torch

    prep = card.preprocessing
    for img in images:
        check_image_size(np.asarray(img), prep.hw)
    dev = torch_device(device) if device is not None else next(model.parameters()).device
    out: list[np.ndarray] = []
    total = len(images)
    bad: list[int] = []
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            chunk = images[start:start + batch_size]
            x = torch.from_numpy(prepare_batch(chunk, prep)).to(dev)
            logits = model(x)[:, 0].float()
            finite = torch.isfinite(logits).flatten(1).all(dim=1).cpu().numpy()
            bad.extend(start + int(i) for i in np.flatnonzero(~finite))
            prob = torch.sigmoid(logits).cpu().numpy()
            for img, p in zip(chunk, prob):
                back = restore(p, prep, np.asarray(img).shape[:2])
                out.append(np.clip(back, 0.0, 1.0).astype(np.float32))
            if progress is not None:
                progress(min(start + batch_size, total), total)
    if bad:
        raise ModelOutputError(
            f"Model '{card.name}' output NaN or Inf for {len(bad)} of {total} images (e.g. image "
            f"{', '.join(f'#{i + 1}' for i in bad[:3])}): its weights are corrupt or it overflowed; no masks were made."
        )
    return out


class SegModelSegmenter:
    """A trained model as a segmenter: ``seg(image_rgb_uint8 [H, W, 3]) -> prob float32 [H, W] in 0..1``.

    Preprocessing comes from the card (:mod:`lesion.preprocess`: the shipped models squash to ``size x size``,
    scale to 0..1 and normalise with the card's mean/std); the sigmoid output is mapped back onto the image by
    :func:`lesion.preprocess.restore` (bilinear). Images larger than ``MAX_SIDE_FACTOR x size``
    per side or ``MAX_PIXELS`` in total raise :class:`LesionError` before any work (see
    :func:`check_image_size`).

    Attributes:
        model: the network (eval mode).
        card: its card.
        device: where it runs.
        threshold: probability above which :meth:`mask` calls a pixel foreground (card's, default 0.5).
        name: the card's name.
    """

    def __init__(self, model: "torch.nn.Module", card: ModelCard, device: "str | torch.device | None" = None):
        self.model = model
        self.card = card
        self.device = torch_device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device).eval()
        threshold = card.preprocessing.threshold
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.name = card.name

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return predict_batch(self.model, [np.asarray(image)], self.card, self.device)[0]

    def predict_many(self, images: Sequence[np.ndarray], boxes: Sequence | None = None, batch_size: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Probabilities for many images (batched); same output as calling one by one. ``boxes`` (the prompt of
        box-prompted segmenters, same protocol as MedSAM's) is not used by a network."""
        return predict_batch(self.model, images, self.card, self.device, batch_size, progress)

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Binary mask bool ``[H, W]``: probability > :attr:`threshold`."""
        return self(image) > self.threshold

    def __repr__(self) -> str:
        return f"SegModelSegmenter({self.name!r}, device={self.device})"
