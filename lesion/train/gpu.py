"""Training with the data and the augmentations on the device: one upload, torch ops, bf16 and channels_last.

On a GPU the CPU trainers' per-image pipeline (decode, albumentations, collate) is what limits the speed, not the
network. Here every image of a data set is prepared once (:func:`upload`: read, fitted by the model's
:class:`~lesion.card.Preprocessing` exactly as at inference, by a pool of threads) and kept on the device as one
uint8 tensor (the 4,242 HAM10000 images at 192 x 256 are 0.6 GB); each batch is gathered by index and augmented
there by torch ops (:func:`augment_batch`: flips, 90-degree turns, affine, colour, microscope ring, cutout), in
place of the albumentations pipelines of :mod:`lesion.train.cls_augment` and :mod:`lesion.train.augment`
(:func:`cls_augment`, :func:`seg_augment` map those recipes onto :class:`GpuAugment`). On CUDA the forward and
backward passes run under bf16 autocast with ``channels_last`` tensors; on the CPU the same code runs in fp32 (the
smoke run of ``bench/gpu``, the tests).

The recipes plug into the one loop, :func:`lesion.train.loop.fit` (epochs, budget, early stopping, EMA,
history), and the runs end with the same cards as the CPU trainers:

* :func:`train_classifier_gpu`: a :class:`~lesion.train.cls.ClsTrainConfig` run (e.g. one member of the seed 003
  K-fold ensemble): the same split (:func:`lesion.train.cls.split_records`, so :func:`lesion.train.heldout.held_out`
  rebuilds it from the card), per-epoch balanced resampling, prior-initialised bias, losses, EMA and metrics
  (validation AUC with its CI, mask Dice, the member's out-of-fold logits in ``extra.oof``);
* :func:`train_segmentation_gpu`: a :class:`~lesion.train.seg.SegTrainConfig` run (U-Net / LinkNet): the same
  grouped split and losses; the card's metrics at each image's native size (:func:`lesion.train.seg.native_metrics`).

The input may be ``H x W`` (``GpuOptions.hw``; the CPU configs' ``size`` is one side): HAM10000's 4:3 images
train at 192 x 256 without a crop. Every card says ``extra.gpu``: the device, the precision, the input and that
the augmentations ran on the device.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import (EXTERNAL, IMAGENET_MEAN, IMAGENET_STD, OUT_OF_FOLD, TRAIN_VAL, Metric, ModelCard,
                         Preprocessing, data_sources)
from lesion.classify.classifier import Classifier
from lesion.classify.metadata import encode_records
from lesion.classify.models import LITE_MEAN, LITE_PORTS, LITE_STD, classes_for_target, make_targets, prepare_image
from lesion.data.io import read_image, read_mask
from lesion.data.spec import open_data
from lesion.device import describe_device, pick_device
from lesion.errors import ConfigError, DataError
from lesion.metrics import logits_auc, roc_auc_ci
from lesion.segment import medsam_encoder
from lesion.segment.models import SegModelConfig, SegModelSegmenter, cfg_to_card, create_seg_model
from lesion.train.cls import RECIPES, ClsTrainConfig, build_model, init_output_layer, split_records, split_section
from lesion.train.cls_augment import AugmentConfig
from lesion.train.cls_losses import bce_loss, make_loss as make_cls_loss, mask_loss
from lesion.train.common import Timer, cosine_schedule, make_optimizer, seed_everything
from lesion.train.loop import (
    Destination,
    LoopConfig,
    Progress,
    config_record,
    final_card,
    fit,
    run_provenance,
    split_of_sets,
    training_section,
)
from lesion.train.losses import make_loss as make_seg_loss
from lesion.train.options import config_argv
from lesion.train.seg import SegTrainConfig, batch_iou_dice, native_metrics, seg_metric_rows
from lesion.train.seg import gather_records
from lesion.train.splits import epoch_indices, groups_of, prior_logit

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------------------
# Options and the device-resident data
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuOptions:
    """How a run uses the device (what the CPU configs do not say).

    Attributes:
        hw: network input ``(H, W)``; None = the config's square ``size``.
        amp: bf16 autocast on CUDA (ignored on the CPU, which runs fp32).
        workers: threads that read and prepare the images before the upload (0 = one).
        eval_batch: images per forward pass when validating.
    """

    hw: tuple[int, int] | None = None
    amp: bool = True
    workers: int = 8
    eval_batch: int = 128


@dataclass
class DeviceSet:
    """The images (and masks) of some records, prepared once by ``prep`` and held on one device.

    Attributes:
        ids: record ids, one per row.
        images: uint8 ``[N, C, H, W]``.
        masks: uint8 ``[N, 1, H, W]`` in {0, 1}, or None (no masks uploaded).
        has_mask: bool ``[N]``: the row has a mask truth.
        prep: the preprocessing that made them.
    """

    ids: tuple[str, ...]
    images: Any
    masks: Any
    has_mask: Any
    prep: Preprocessing
    _row: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row = {i: k for k, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def device(self) -> Any:
        return self.images.device

    def rows(self, ids: Sequence[str]) -> Any:
        """Row indices (an int64 tensor on the device) of ``ids``.

        Raises:
            DataError: an id that was not uploaded.
        """
        import torch

        missing = [i for i in ids if i not in self._row]
        if missing:
            raise DataError(f"{len(missing)} image(s) are not in the uploaded set, e.g. {', '.join(missing[:3])}.")
        return torch.as_tensor([self._row[i] for i in ids], dtype=torch.long, device=self.device)

    def nbytes(self) -> int:
        return int(self.images.numel() + (self.masks.numel() if self.masks is not None else 0))


def _prepared(record: Any, prep: Preprocessing, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
    img = read_image(record.image_path)
    if with_masks and record.mask_path is not None:
        x, m = prepare_image(img, prep, read_mask(record.mask_path, img.shape[:2]))
        return x, m
    return prepare_image(img, prep), None


def upload(records: Sequence[Any], prep: Preprocessing, device: Any, with_masks: bool = True,
           workers: int = 8) -> DeviceSet:
    """Read every record's image (and mask), fit it by ``prep`` (:func:`lesion.preprocess.prepare`, the inference
    path: crop / squash / letterbox, interpolation, CLAHE) and put the stack on ``device``.

    Args:
        records: the records (unique ids).
        prep: the model's preprocessing (its ``hw`` is the stored size).
        device: a torch device or its name.
        with_masks: also upload masks (rows without one get an all-zero mask and ``has_mask`` False).
        workers: threads (image decoding and cv2 release the GIL).
    """
    import torch

    n = len(records)
    h, w = prep.hw
    images = np.zeros((n, h, w, prep.channels), np.uint8)
    masks = np.zeros((n, h, w), np.uint8) if with_masks else None
    has = np.zeros(n, bool)

    def one(i: int) -> None:
        x, m = _prepared(records[i], prep, with_masks)
        images[i] = x.reshape(h, w, prep.channels)
        if m is not None:
            masks[i] = m
            has[i] = True

    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        list(pool.map(one, range(n)))
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    imgs = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW on the device
    m_t = torch.from_numpy(masks[:, None]).to(dev) if masks is not None else None
    return DeviceSet(ids=tuple(r.id for r in records), images=imgs, masks=m_t,
                     has_mask=torch.from_numpy(has).to(dev), prep=prep)


# ----------------------------------------------------------------------------------------------------------
# Augmentations on the device
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuAugment:
    """Augmentations of a batch on its device; every ``p_*`` is the chance per image (0 = off).

    Geometry (applied to the masks too, nearest neighbour): flips, a transpose (square inputs only: with the two
    flips it makes all eight 90-degree turns and mirrors), and an affine warp (rotation in degrees, zoom factor,
    shift as a fraction of the side) whose border is ``padding`` (``zeros``, ``border`` or ``reflection``).
    Colour (image only, on 0..1): an RGB shift, brightness + contrast (``x * (1 + c) + b``), saturation, gamma.
    Then the microscope ring (outside a random circle goes black) and cutout (2-8 small black holes).
    """

    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_transpose: float = 0.5
    p_affine: float = 0.5
    rotate: float = 45.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.0625
    padding: str = "zeros"
    p_rgb_shift: float = 0.5
    rgb_shift: float = 15 / 255
    p_brightness_contrast: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    p_saturation: float = 0.0
    saturation: float = 0.2
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.8, 1.2)
    p_microscope: float = 0.5
    microscope_radius: tuple[float, float] = (0.8, 1.1)
    microscope_jitter: float = 0.1
    p_cutout: float = 0.5
    cutout_holes: tuple[int, int] = (2, 8)
    cutout_size: tuple[float, float] = (0.04, 0.1)

    def __post_init__(self) -> None:
        if self.padding not in ("zeros", "border", "reflection"):
            raise ConfigError(f"padding must be zeros, border or reflection, got {self.padding!r}.")


#: Every augmentation off (validation, ``--no-aug``).
NO_AUGMENT = GpuAugment(**{f.name: 0.0 for f in dataclasses.fields(GpuAugment) if f.name.startswith("p_")})


def cls_augment(cfg: AugmentConfig = AugmentConfig()) -> GpuAugment:
    """Seed 003's classification augmentations (:func:`lesion.train.cls_augment.build_train_transform`) on the
    device: the same switches and the same ranges, each applied with the config's ``p`` (flips at 0.5)."""
    p = float(cfg.p)
    return GpuAugment(
        p_hflip=0.5 if cfg.flips else 0.0, p_vflip=0.5 if cfg.flips else 0.0, p_transpose=0.5 if cfg.flips else 0.0,
        p_affine=p if cfg.affine else 0.0, rotate=45.0, scale=(0.9, 1.1), translate=0.0625, padding="zeros",
        p_rgb_shift=p if cfg.rgb_shift else 0.0, p_brightness_contrast=p if cfg.brightness_contrast else 0.0,
        p_gamma=p if cfg.gamma else 0.0, p_microscope=p if cfg.microscope else 0.0, p_cutout=p if cfg.cutout else 0.0,
    )


def seg_augment(domain: str, strength: float = 1.0) -> GpuAugment:
    """The segmentation recipes of :func:`lesion.train.augment.seg_train_transform` on the device, approximated:
    the crop / zoom-out branch and the affine become one affine with a wider zoom, no perspective warp, HSV
    jitter as saturation. Dermoscopy: all flips and turns, reflected border; chest X-rays: left-right flip only,
    small rotations, black border, brightness / contrast / gamma. ``strength`` 0 = no augmentation."""
    s = float(strength)
    if s <= 0:
        return NO_AUGMENT
    off = {f.name: 0.0 for f in dataclasses.fields(GpuAugment) if f.name.startswith("p_")}
    if domain == "derm":
        return GpuAugment(**{**off, "p_hflip": 0.5, "p_vflip": 0.5, "p_transpose": 0.5, "p_affine": 0.8,
                             "rotate": 45 * s, "scale": (1 - 0.35 * s, 1 + 0.3 * s), "translate": 0.08 * s,
                             "padding": "reflection", "p_brightness_contrast": 0.5, "brightness": 0.2 * s,
                             "contrast": 0.2 * s, "p_saturation": 0.4, "saturation": 0.2 * s})
    if domain == "cxr":
        return GpuAugment(**{**off, "p_hflip": 0.5, "p_affine": 0.7, "rotate": 10 * s,
                             "scale": (1 - 0.2 * s, 1 + 0.12 * s), "translate": 0.06 * s, "padding": "zeros",
                             "p_brightness_contrast": 0.6, "brightness": 0.25 * s, "contrast": 0.25 * s,
                             "p_gamma": 0.4, "gamma": (0.8, 1.2)})
    raise ConfigError(f"No segmentation augmentations for domain {domain!r} (derm, cxr).")


def _uniform(gen: Any, shape: Sequence[int], lo: float, hi: float, device: Any) -> Any:
    import torch

    return torch.rand(tuple(shape), generator=gen, device=device) * (hi - lo) + lo


def affine_theta(angle_deg: Any, scale: Any, shift: Any, hw: tuple[int, int]) -> Any:
    """``[B, 2, 3]`` matrices for ``F.affine_grid`` (``align_corners=False``) that rotate by ``angle_deg``,
    zoom by ``scale`` (> 1 enlarges) and shift by ``shift [B, 2]`` (x, y as fractions of the width / height) in
    pixel space, about the image centre, so an ``H != W`` image is not sheared."""
    import torch

    h, w = hw
    a = torch.deg2rad(angle_deg)
    c, s = torch.cos(a), torch.sin(a)
    # output -> input, normalised coordinates: D^-1 R(-a) D / scale, with D = diag(W/2, H/2)
    m00, m01 = c / scale, s * (h / w) / scale
    m10, m11 = -s * (w / h) / scale, c / scale
    tx, ty = 2 * shift[:, 0], 2 * shift[:, 1]
    row0 = torch.stack([m00, m01, -(m00 * tx + m01 * ty)], dim=1)
    row1 = torch.stack([m10, m11, -(m10 * tx + m11 * ty)], dim=1)
    return torch.stack([row0, row1], dim=1)


def augment_batch(images: Any, masks: Any, aug: GpuAugment, gen: Any,
                  prep: Preprocessing) -> tuple[Any, Any]:
    """One augmented, normalised batch on the images' device.

    Args:
        images: uint8 ``[B, C, H, W]``.
        masks: ``[B, 1, H, W]`` (0/1, any dtype) or None.
        aug: what to apply (:data:`NO_AUGMENT`: nothing).
        gen: a ``torch.Generator`` on the same device (every draw comes from it: a seeded run repeats).
        prep: scale and mean / std of the network input (``scale`` must be ``0-1``).

    Returns:
        ``(x float32 [B, C, H, W] normalised, channels_last; mask float32 [B, 1, H, W] or None)``.
    """
    import torch
    import torch.nn.functional as F

    if prep.scale != "0-1":
        raise ConfigError(f"augment_batch needs inputs scaled to 0-1, not {prep.scale!r}.")
    dev = images.device
    x = images.float().div_(255.0)
    m = masks.float() if masks is not None else None
    b, ch, h, w = x.shape

    def coin(p: float) -> Any:
        return torch.rand(b, generator=gen, device=dev) < p

    def pick(flag: Any, new: Any, old: Any) -> Any:
        return torch.where(flag.view(b, 1, 1, 1), new, old)

    for p, op in ((aug.p_hflip, lambda t: t.flip(-1)), (aug.p_vflip, lambda t: t.flip(-2)),
                  (aug.p_transpose if h == w else 0.0, lambda t: t.transpose(-1, -2))):
        if p > 0:
            f = coin(p)
            x = pick(f, op(x), x)
            m = pick(f, op(m), m) if m is not None else None
    if aug.p_affine > 0:
        on = coin(aug.p_affine)
        angle = torch.where(on, _uniform(gen, (b,), -aug.rotate, aug.rotate, dev), torch.zeros(b, device=dev))
        zoom = torch.where(on, _uniform(gen, (b,), *aug.scale, dev), torch.ones(b, device=dev))
        shift = _uniform(gen, (b, 2), -aug.translate, aug.translate, dev) * on[:, None]
        grid = F.affine_grid(affine_theta(angle, zoom, shift, (h, w)), [b, ch, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=aug.padding, align_corners=False)
        if m is not None:
            m = F.grid_sample(m, grid, mode="nearest", padding_mode=aug.padding, align_corners=False)
    if aug.p_rgb_shift > 0:
        on = coin(aug.p_rgb_shift).float().view(b, 1, 1, 1)
        x = (x + _uniform(gen, (b, ch, 1, 1), -aug.rgb_shift, aug.rgb_shift, dev) * on).clamp_(0, 1)
    if aug.p_brightness_contrast > 0:
        on = coin(aug.p_brightness_contrast).float().view(b, 1, 1, 1)
        alpha = 1 + _uniform(gen, (b, 1, 1, 1), -aug.contrast, aug.contrast, dev) * on
        beta = _uniform(gen, (b, 1, 1, 1), -aug.brightness, aug.brightness, dev) * on
        x = (x * alpha + beta).clamp_(0, 1)
    if aug.p_saturation > 0 and ch == 3:
        on = coin(aug.p_saturation).float().view(b, 1, 1, 1)
        grey = x.mean(1, keepdim=True)
        x = (grey + (x - grey) * (1 + _uniform(gen, (b, 1, 1, 1), -aug.saturation, aug.saturation, dev) * on)).clamp_(0, 1)
    if aug.p_gamma > 0:
        on = coin(aug.p_gamma).view(b, 1, 1, 1)
        g = torch.where(on, _uniform(gen, (b, 1, 1, 1), *aug.gamma, dev), torch.ones(b, 1, 1, 1, device=dev))
        x = x.clamp_(0, 1).pow(g)
    yy = torch.arange(h, device=dev, dtype=torch.float32) + 0.5
    xx = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
    if aug.p_microscope > 0:
        on = coin(aug.p_microscope)
        r = _uniform(gen, (b,), *aug.microscope_radius, dev) * min(h, w) / 2
        cy = h / 2 + _uniform(gen, (b,), -1, 1, dev) * aug.microscope_jitter * h
        cx = w / 2 + _uniform(gen, (b,), -1, 1, dev) * aug.microscope_jitter * w
        outside = (yy.view(1, h, 1) - cy.view(b, 1, 1)) ** 2 + (xx.view(1, 1, w) - cx.view(b, 1, 1)) ** 2 \
            > r.view(b, 1, 1) ** 2
        x = x * (~(outside & on.view(b, 1, 1))).unsqueeze(1)
    if aug.p_cutout > 0:
        on = coin(aug.p_cutout)
        k = int(aug.cutout_holes[1])
        n = torch.randint(int(aug.cutout_holes[0]), k + 1, (b,), generator=gen, device=dev)
        hh = _uniform(gen, (b, k), *aug.cutout_size, dev) * h
        ww = _uniform(gen, (b, k), *aug.cutout_size, dev) * w
        y0 = _uniform(gen, (b, k), 0, 1, dev) * (h - hh)
        x0 = _uniform(gen, (b, k), 0, 1, dev) * (w - ww)
        active = (torch.arange(k, device=dev).view(1, k) < n.view(b, 1)) & on.view(b, 1)
        y0, hh, x0, ww = (t.view(b, k, 1, 1) for t in (y0, hh, x0, ww))
        inside = ((yy.view(1, 1, h, 1) >= y0) & (yy.view(1, 1, h, 1) < y0 + hh)
                  & (xx.view(1, 1, 1, w) >= x0) & (xx.view(1, 1, 1, w) < x0 + ww) & active.view(b, k, 1, 1))
        x = x * (~inside.any(1)).unsqueeze(1)
    x = normalise(x, prep)
    return x.contiguous(memory_format=torch.channels_last), m


def normalise(x: Any, prep: Preprocessing) -> Any:
    """``(x - mean) / std`` per channel of a 0..1 float batch ``[B, C, H, W]``."""
    import torch

    c = x.shape[1]
    mean = torch.as_tensor(prep.mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(prep.std, dtype=x.dtype, device=x.device)
    if mean.numel() == 1:
        mean, std = mean.expand(c), std.expand(c)
    return (x - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)


def plain_batch(images: Any, prep: Preprocessing) -> Any:
    """Un-augmented network input of uint8 ``[B, C, H, W]``: scaled, normalised, channels_last."""
    import torch

    return normalise(images.float().div_(255.0), prep).contiguous(memory_format=torch.channels_last)


def _autocast(device: Any, amp: bool):
    import torch

    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(amp and dev.type == "cuda"))


def gpu_facts(device: Any, opts: GpuOptions, prep: Preprocessing, uploaded: DeviceSet | None = None) -> dict[str, Any]:
    """What the card's ``extra.gpu`` says about a run of this module."""
    import torch

    cuda = torch.device(device).type == "cuda"
    return {"trainer": "lesion.train.gpu", "device": describe_device(str(device)),
            "precision": "bf16 autocast" if cuda and opts.amp else "fp32", "channels_last": True,
            "augmentations": "torch ops on the device (lesion.train.gpu.augment_batch)",
            "input_hw": list(prep.hw), "data_on_device_mb": round(uploaded.nbytes() / 2**20, 1) if uploaded else None}


# ----------------------------------------------------------------------------------------------------------
# Classification (seed 003 multi-task members and plain classifiers)
# ----------------------------------------------------------------------------------------------------------
class GpuClsRecipe:
    """One epoch of :class:`~lesion.train.cls.ClsRecipe` with the batches gathered and augmented on the device."""

    def __init__(self, cfg: ClsTrainConfig, model: Classifier, device: Any, data: DeviceSet, train_ids: Sequence[str],
                 val_ids: Sequence[str], y_train: np.ndarray, y_val: np.ndarray, meta_train: np.ndarray,
                 meta_val: np.ndarray, groups: np.ndarray, k: int, with_masks: bool, aug: GpuAugment,
                 opts: GpuOptions, clock: Callable[[], float]):
        import torch

        self.cfg, self.model, self.device, self.data, self.k = cfg, model, torch.device(device), data, k
        self.with_masks, self.aug, self.opts, self.groups = with_masks, aug, opts, groups
        self.tr, self.va = data.rows(train_ids), data.rows(val_ids)
        self.y_np, self.y_val_np = y_train, y_val
        self.y_tr = torch.as_tensor(y_train, device=self.device)
        self.y_va = torch.as_tensor(y_val, device=self.device)
        self.meta_tr = torch.as_tensor(meta_train, dtype=torch.float32, device=self.device)
        self.meta_va = torch.as_tensor(meta_val, dtype=torch.float32, device=self.device)
        self.loss_fn = make_cls_loss(cfg.loss, flood_level=cfg.flood)
        self.optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        n = len(epoch_indices(y_train, groups, np.random.default_rng(0), self._balance, cfg.max_per_group))
        if n < 2:
            raise DataError(f"An epoch would draw {n} training image(s); a step needs two (BatchNorm).")
        self.steps_per_epoch = max(1, -(-n // cfg.batch_size))
        self.sched = cosine_schedule(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                     warmup_steps=min(self.steps_per_epoch, 50),
                                     time_budget_s=cfg.max_minutes * 60, clock=clock)

    @property
    def _balance(self) -> bool:
        return self.cfg.balance and self.k == 1

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        import torch

        cfg, data = self.cfg, self.data
        self.model.train()
        idx = epoch_indices(self.y_np, self.groups, self.rng, self._balance, cfg.max_per_group)
        tot = torch.zeros((), device=self.device)
        n = 0
        for s in range(0, len(idx), cfg.batch_size):
            bidx = idx[s:s + cfg.batch_size]
            if len(bidx) < 2:  # BatchNorm needs two samples
                continue
            local = torch.as_tensor(bidx, dtype=torch.long, device=self.device)
            rows = self.tr[local]
            x, m = augment_batch(data.images[rows], data.masks[rows] if self.with_masks else None, self.aug,
                                 self.gen, data.prep)
            with _autocast(self.device, self.opts.amp):
                out = self.model(x, self.meta_tr[local])
            loss = self.loss_fn(out.logits.float(), self.y_tr[local])
            if self.with_masks:
                loss = loss + cfg.mask_weight * mask_loss(out.mask_logits.float(), m, data.has_mask[rows])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.sched.step()
            after_step()
            tot += loss.detach() * len(bidx)
            n += len(bidx)
        return {"train_loss": float(tot) / max(n, 1), "train_images": int(n)}

    def evaluate(self, model: Classifier) -> dict[str, Any]:
        """Logits ``[N, K]`` of the validation rows, their BCE, AUC and (with masks) mean Dice, as
        :func:`lesion.train.cls.evaluate_model` computes them."""
        import torch

        data, bs = self.data, max(1, self.opts.eval_batch)
        model.eval()
        logits, dices = [], []
        with torch.inference_mode():
            for s in range(0, len(self.va), bs):
                rows = self.va[s:s + bs]
                with _autocast(self.device, self.opts.amp):
                    out = model(plain_batch(data.images[rows], data.prep), self.meta_va[s:s + bs])
                logits.append(out.logits.float())
                if out.mask_logits is not None and data.masks is not None:
                    p = out.mask_logits[:, 0].float() > 0
                    t = data.masks[rows][:, 0] > 0
                    inter = (p & t).flatten(1).sum(1).float()
                    tot = (p.flatten(1).sum(1) + t.flatten(1).sum(1)).float()
                    d = torch.where(tot > 0, 2 * inter / tot.clamp(min=1), torch.ones_like(tot))
                    dices.append(d[data.has_mask[rows]])
        z = torch.cat(logits)
        res = {"logits": z.cpu().numpy(), "val_loss": float(bce_loss(z, self.y_va)),
               "val_auc": logits_auc(z.cpu().numpy(), self.y_val_np)}
        if dices and sum(int(d.numel()) for d in dices):
            res["val_mask_dice"] = float(torch.cat(dices).mean())
        return res

    def validate(self, model: Classifier) -> dict[str, float]:
        return {k: v for k, v in self.evaluate(model).items() if k != "logits"}


def cls_preprocessing(cfg: ClsTrainConfig, hw: tuple[int, int] | None = None) -> Preprocessing:
    """The preprocessing of a classification run: ``hw`` (else ``cfg.size`` square), the lite port's or ImageNet's
    normalisation, the config's crop and CLAHE."""
    lite = cfg.init == "imagenet-lite-port" and cfg.arch in LITE_PORTS
    return Preprocessing(tuple(hw) if hw else cfg.size, LITE_MEAN if lite else IMAGENET_MEAN,
                         LITE_STD if lite else IMAGENET_STD, center_crop=cfg.center_crop, clahe=cfg.clahe)


def train_classifier_gpu(cfg: ClsTrainConfig, stem: str | Path | None, dataset=None, opts: GpuOptions = GpuOptions(),
                         data: DeviceSet | None = None, progress: Progress | None = None,
                         log: Log | None = None) -> ModelCard:
    """Train one classification run of ``cfg`` with the data on the device and save it at ``stem``.

    Args:
        cfg: the run (split, recipe, epochs, budget, device); ``opts.hw`` replaces its square ``size``.
        stem: checkpoint stem (``stem.safetensors`` + ``stem.json``, replaced if present); None = not saved.
        dataset: the loaded data set (else ``cfg.data`` is opened).
        opts: input size, precision, threads, evaluation batch.
        data: images already uploaded with this run's preprocessing (a K-fold ensemble uploads once for all its
            members); else the split's images are uploaded here.
        progress: ``progress(steps_done, total_steps)``; log: one line per epoch.

    Returns:
        the card as written (or unsaved, without ``stem``).

    Raises:
        ConfigError: ``data`` was prepared with another preprocessing. DataError: as the CPU trainer.
    """
    log = log or (lambda s: None)
    timer = Timer()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dataset = dataset if dataset is not None else open_data(cfg.data)
    split = split_records(dataset, cfg, log)
    split_card = split_section(split.info)
    classes = classes_for_target(cfg.target)
    k = len(classes)
    prep = cls_preprocessing(cfg, opts.hw)
    multitask = cfg.model == "multitask"
    with_masks = multitask and cfg.mask_weight > 0 and dataset.has_masks
    if data is None:
        data = upload(split.train + split.val, prep, device, with_masks, opts.workers)
    elif data.prep != prep or (with_masks and data.masks is None):
        raise ConfigError(f"The uploaded images were prepared for {data.prep.size_text} px ({data.prep.resize}); "
                          f"this run needs {prep.size_text} ({prep.resize}){' with masks' if with_masks else ''}.")
    log(f"{split.info['n_train']} training / {split.info['n_val']} validation images ({split.info['method']}), "
        f"{prep.size_text} px on {describe_device(device)}")
    y_tr, y_va = make_targets(split.train, cfg.target), make_targets(split.val, cfg.target)
    model, model_section = build_model(cfg, k, prep)
    init_output_layer(model, prior_logit(y_tr, k))
    model.to(device)
    clock = Timer()
    recipe = GpuClsRecipe(cfg, model, device, data, [r.id for r in split.train], [r.id for r in split.val], y_tr,
                          y_va, encode_records(split.train), encode_records(split.val), groups_of(split.train), k,
                          with_masks, cls_augment(cfg.augment), opts, clock)
    named = RECIPES.get(cfg.recipe, {})
    notes = " ".join(str(named[k_]) for k_ in ("source", "note") if k_ in named)
    command = cfg.command or " ".join(["lesion.train.gpu.train_classifier_gpu", *config_argv(cfg),
                                       "--hw", prep.size_text])
    training = training_section(cfg, cfg.loss, cfg.optimizer, recipe=cfg.recipe)
    training = dataclasses.replace(training, config={**config_record(cfg), "size": list(prep.hw)
                                                     if not isinstance(prep.size, int) else prep.size})
    base = ModelCard(
        name=Path(stem).name if stem is not None else (cfg.name or "model"),
        task="multitask" if multitask else "classification",
        domain=dataset.domain, arch=cfg.arch, encoder=cfg.arch, init=cfg.init,
        classes=tuple(classes), target=cfg.target, model=model_section, preprocessing=prep,
        data=data_sources([(dataset, TRAIN_VAL, {"source": cfg.data, "n_train": len(split.train),
                                                  "n_val": len(split.val), "n": len(dataset.records)})]),
        split=split_card, training=training,
        provenance=run_provenance(command, device),
        extra={"ema_decay": cfg.ema_decay, "flood": cfg.flood, "gpu": gpu_facts(device, opts, prep, data)},
        notes=(notes + " Trained by lesion.train.gpu: images prepared once and held on the device, augmented there "
               "by torch ops in place of albumentations (same switches and ranges).").strip(),
    )
    result = fit(recipe, LoopConfig(epochs=cfg.epochs, monitor="val_auc", patience=cfg.patience,
                                    max_minutes=cfg.max_minutes, ema_decay=cfg.ema_decay),
                 clock=clock, run_dir=None, card=base, progress=progress, log=log)
    best = result.best_row
    pooled = base.pooled_val_data
    ev = recipe.evaluate(model)
    val_logits = ev["logits"]
    metrics: list[Metric] = []
    oof = None
    if split.info.get("method") == "stratified_group_kfold":
        oof = {"ids": [r.id for r in split.val], "logits": np.round(val_logits.astype(np.float64), 5).tolist()}
    if np.isfinite(best["val_auc"]):
        ci = None
        if k == 1:
            _, lo, hi = roc_auc_ci(y_va, val_logits[:, 0], n_boot=500)
            ci = (lo, hi) if np.isfinite(lo) else None
        metrics.append(Metric("auc", float(best["val_auc"]), pooled, "val", n=len(y_va),
                              positives=int(np.sum(y_va)) if k == 1 else None, ci=ci))
    metrics.append(Metric("loss", float(best["val_loss"]), pooled, "val", n=len(y_va)))
    if "val_mask_dice" in best:
        metrics.append(Metric("mask_dice", float(best["val_mask_dice"]), pooled, "val",
                              n=int(data.has_mask[recipe.va].sum())))
    done = base.replace(extra={**base.extra, **({"oof": oof} if oof else {})})
    card = final_card(done, result, metrics, timer())
    if stem is None:
        return card
    return Destination(stem=Path(stem), run_dir=None, overwrite=True).save(model, card, log)


# ----------------------------------------------------------------------------------------------------------
# Segmentation (U-Net / LinkNet)
# ----------------------------------------------------------------------------------------------------------
class GpuSegRecipe:
    """One epoch of :class:`~lesion.train.seg.SegRecipe` with the batches gathered and augmented on the device."""

    def __init__(self, cfg: SegTrainConfig, model: Any, device: Any, train: DeviceSet, val: DeviceSet,
                 aug: GpuAugment, opts: GpuOptions, clock: Callable[[], float]):
        import torch

        self.cfg, self.model, self.device = cfg, model, torch.device(device)
        self.train, self.val, self.aug, self.opts = train, val, aug, opts
        self.loss_fn = make_seg_loss(cfg.loss).to(self.device)
        self.optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
        self.n_train = len(train)
        self.n_per_epoch = min(cfg.samples_per_epoch or self.n_train, self.n_train)
        self.steps_per_epoch = max(self.n_per_epoch // cfg.batch_size, 1)
        self.sched = cosine_schedule(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                     int(cfg.warmup_epochs * self.steps_per_epoch),
                                     time_budget_s=cfg.max_minutes * 60, clock=clock)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        import torch

        cfg, data = self.cfg, self.train
        self.model.train()
        order = self.rng.permutation(self.n_train)[:self.n_per_epoch]
        tl = torch.zeros((), device=self.device)
        ti = torch.zeros((), device=self.device)
        nb = 0
        for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):  # drop_last, as the CPU loader
            rows = torch.as_tensor(order[s:s + cfg.batch_size], dtype=torch.long, device=self.device)
            x, m = augment_batch(data.images[rows], data.masks[rows], self.aug, self.gen, data.prep)
            with _autocast(self.device, self.opts.amp):
                logits = self.model(x)
            loss = self.loss_fn(logits.float(), m)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.sched.step()
            tl += loss.detach()
            ti += batch_iou_dice(logits.detach().float(), m)[0].mean()
            nb += 1
            after_step()
        return {"train_loss": float(tl) / max(nb, 1), "train_iou": float(ti) / max(nb, 1)}

    def validate(self, model: Any) -> dict[str, float]:
        """Mean val loss (weighted by batch size), per-image IoU and Dice at the training size."""
        import torch

        data, bs = self.val, max(1, self.opts.eval_batch)
        model.eval()
        loss_sum, ious, dices = 0.0, [], []
        with torch.inference_mode():
            for s in range(0, len(data), bs):
                x = plain_batch(data.images[s:s + bs], data.prep)
                y = data.masks[s:s + bs].float()
                with _autocast(self.device, self.opts.amp):
                    logits = model(x)
                logits = logits.float()
                loss_sum += float(self.loss_fn(logits, y)) * len(x)
                i, d = batch_iou_dice(logits, y)
                ious.append(i)
                dices.append(d)
        return {"val_loss": loss_sum / len(data), "val_iou": float(torch.cat(ious).mean()),
                "val_dice": float(torch.cat(dices).mean())}


def train_segmentation_gpu(cfg: SegTrainConfig, stem: str | Path | None, opts: GpuOptions = GpuOptions(),
                           datasets: Sequence[Any] | None = None, progress: Progress | None = None,
                           log: Log | None = None) -> ModelCard:
    """Train one segmentation run of ``cfg`` with the data on the device and save it at ``stem``.

    Every data set of ``cfg.data`` (or ``datasets``, already loaded, one per entry) is split by its ``split``
    column or by groups (:func:`lesion.train.seg.split_records`); ``opts.hw`` replaces the square ``cfg.size``
    (both sides multiples of ``2 ** encoder_depth``). The card's metrics are at each validation image's native size
    (:func:`lesion.train.seg.native_metrics`), pooled and per data set.

    Returns:
        the card as written (or unsaved, without ``stem``).

    Raises:
        ConfigError: mixed domains, a side that is not a multiple of the encoder's stride. DataError: no masks,
            fewer training images than one batch.
    """
    import torch

    say = log or (lambda s: None)
    timer = Timer()
    seed_everything(cfg.seed)
    hw = tuple(opts.hw) if opts.hw else (cfg.size, cfg.size)
    stride = 2 ** int(cfg.encoder_depth)
    if hw[0] % stride or hw[1] % stride:
        raise ConfigError(f"Both sides of the input must be multiples of {stride}, got {hw[0]}x{hw[1]}.")
    sources = list(datasets) if datasets is not None else [open_data(s) for s in cfg.data]
    domains = sorted({ds.domain for ds in sources})
    if len(domains) != 1:
        raise ConfigError(f"All data sets must share one domain; got {', '.join(domains)}.")
    domain = domains[0]
    name = Path(stem).name if stem is not None else (cfg.name or f"{domain}_{cfg.arch}_{cfg.encoder.removeprefix('tu-')}")
    mean, std = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if cfg.encoder == medsam_encoder.NAME else (LITE_MEAN, LITE_STD)
    model_cfg = SegModelConfig(arch=cfg.arch, encoder=cfg.encoder, size=hw, init=cfg.init,
                               encoder_depth=cfg.encoder_depth, mean=mean, std=std)
    model = create_seg_model(model_cfg)
    fields_ = cfg_to_card(model_cfg)
    prep = fields_["preprocessing"]
    train_recs, val_recs, val_source, sets, used = gather_records(cfg, sources, say)
    per_epoch = min(cfg.samples_per_epoch or len(train_recs), len(train_recs))
    if per_epoch < cfg.batch_size:
        raise DataError(f"--batch-size {cfg.batch_size} is larger than the {per_epoch} training images per epoch.")
    device = torch.device(pick_device(cfg.device))
    say(f"uploading {len(train_recs)} + {len(val_recs)} images at {prep.size_text} px to {describe_device(str(device))}")
    train = upload(train_recs, prep, device, True, opts.workers)
    val = upload(val_recs, prep, device, True, opts.workers)
    say(f"uploaded in {timer():.1f}s ({(train.nbytes() + val.nbytes()) / 2**20:.0f} MB)")
    model.to(device)
    clock = Timer()
    recipe = GpuSegRecipe(cfg, model, device, train, val, seg_augment(domain, cfg.augment), opts, clock)
    fields_["init"] = model.init_report.get("init", "random")
    command = cfg.command or " ".join(["lesion.train.gpu.train_segmentation_gpu", *config_argv(cfg),
                                       "--hw", prep.size_text])
    training = training_section(cfg, cfg.loss, cfg.optimizer)
    training = dataclasses.replace(training, config={**config_record(cfg), "size": list(hw) if hw[0] != hw[1] else hw[0]})
    facts = gpu_facts(device, opts, prep)
    facts["data_on_device_mb"] = round((train.nbytes() + val.nbytes()) / 2**20, 1)
    base = ModelCard(
        name=name, task="segmentation", domain=domain, **fields_, data=data_sources(used),
        split=split_of_sets(sets, cfg.seed, cfg.val_fraction), training=training,
        provenance=run_provenance(command, device),
        extra={"init_report": {k: v for k, v in model.init_report.items() if k != "unexpected"}, "gpu": facts},
        notes="Trained by lesion.train.gpu: images prepared once and held on the device, augmented there by torch ops "
              "(an approximation of lesion.train.augment's albumentations recipe).",
    )
    result = fit(recipe, LoopConfig(epochs=cfg.epochs, monitor="val_iou", patience=cfg.patience,
                                    max_minutes=cfg.max_minutes, ema_decay=cfg.ema_decay),
                 clock=clock, run_dir=None, card=base, progress=progress, log=say)
    del train, val  # the device memory goes back before scoring
    seg = SegModelSegmenter(model, base, device=device)
    say("scoring the best epoch at native resolution …")
    metrics = seg_metric_rows(native_metrics(seg, val_recs), base.pooled_val_data, "val")
    set_names = list(dict.fromkeys(val_source))
    if len(set_names) > 1:
        for set_name in set_names:
            recs = [r for r, s in zip(val_recs, val_source) if s == set_name]
            metrics += seg_metric_rows(native_metrics(seg, recs), set_name, "val")
    for spec in cfg.external:
        ds = open_data(spec)
        block = native_metrics(seg, [r for r in ds.records if r.mask_path is not None])
        metrics += seg_metric_rows(block, ds.name, "external")
        base = base.replace(data=base.data + tuple(data_sources([(ds, EXTERNAL, {"source": spec, "n": block["n"]})])))
    card = final_card(base, result, metrics, timer())
    if stem is None:
        return card
    return Destination(stem=Path(stem), run_dir=None, overwrite=True).save(model, card, say)


def pooled_oof_auc(cards: Sequence[ModelCard], y_of: Callable[[Sequence[str]], np.ndarray],
                   n_boot: int = 1000) -> tuple[Metric | None, dict[str, Any]]:
    """The K-fold ensemble's honest figure: every image scored by the one member that held it out.

    Args:
        cards: the members' cards (each with ``extra.oof``: ids + logits of its validation fold).
        y_of: ids -> binary labels.
        n_boot: bootstrap resamples of the CI.

    Returns:
        ``(Metric auc on the pooled out-of-fold scores, split "out-of-fold", or None when one class only;
        facts: n, distinct ids, ids scored twice)``.
    """
    ids: list[str] = []
    z: list[float] = []
    for c in cards:
        oof = dict(c.extra).get("oof") or {}
        ids += list(oof.get("ids") or [])
        z += [float(v[0]) for v in oof.get("logits") or []]
    facts = {"n": len(ids), "distinct": len(set(ids)), "scored_twice": len(ids) - len(set(ids))}
    if not ids:
        return None, facts
    y = np.asarray(y_of(ids))
    auc, lo, hi = roc_auc_ci(y, np.asarray(z), n_boot=n_boot)
    if not math.isfinite(auc):
        return None, facts
    data = cards[0].pooled_val_data
    ci = (float(lo), float(hi)) if math.isfinite(lo) else None
    return Metric("auc", float(auc), data, OUT_OF_FOLD, n=len(ids), positives=int(np.sum(y)), ci=ci), facts
