"""Train a U-Net / LinkNet segmentation model: ``lesion train seg --data FOLDER …``.

:func:`train_segmentation` is the recipe (testable without the CLI); the loop itself (epochs, early stopping,
time budget, history, best checkpoint) is :func:`lesion.train.loop.fit`. :func:`main` parses the command line
into a frozen :class:`SegTrainConfig` (one option per field, :mod:`lesion.train.options`).

Recipe: every data set given with ``--data`` (any layout :func:`lesion.data.load_dataset` reads, or
``demo:derm`` / ``demo:cxr``) is split into train/validation without leaking a group (HAM10000
``lesion_id``, patient): by its ``split`` column when it has one, else by a seeded grouped split
stratified by (source, label). Images are resized once to ``size x size`` and kept in RAM as uint8;
albumentations augments them on the fly. The loss is a registry name (:mod:`lesion.train.losses`),
the learning rate follows a cosine schedule with a short warm-up, and early stopping watches validation
IoU. The best epoch's weights are saved in fp16 with a card that records data, licences, split, metrics
(validation, and ``--external`` sets that were never trained on) and the per-epoch history.

Metrics in ``history`` are computed at the training size (fast); the card's metrics are computed at each
image's native size (the prediction is resized back), per image, then averaged; an image whose prediction
and mask are both empty scores 1 (see :mod:`lesion.metrics`).
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import EXTERNAL, TRAIN_VAL, Metric, ModelCard, data_sources
from lesion.data.io import read_image, read_mask, resize_image
from lesion.data.spec import open_data
from lesion.device import DEVICE_CHOICES, pick_device
from lesion.errors import ConfigError, DataError
from lesion.metrics import seg_metrics, summarize
from lesion.segment import medsam_encoder
from lesion.segment.models import ARCHS, SegModelConfig, SegModelSegmenter, cfg_to_card, create_seg_model
from lesion.train.augment import seg_train_transform
from lesion.train.common import Timer, batch_to, cosine_schedule, make_optimizer, seed_everything, split_column_or_groups
from lesion.train.loop import (
    Destination,
    LoopConfig,
    Progress,
    check_paths,
    final_card,
    fit,
    out_names_file,
    plan_destination,
    run_command,
    run_provenance,
    split_of_sets,
    training_section,
)
from lesion.train.losses import LOSSES, make_loss
from lesion.train.options import (
    OptionParser,
    add_common_options,
    add_config_options,
    check_config,
    command_line,
    config_from_namespace,
    plain_name,
)
from lesion.weights import LITE_MEAN, LITE_STD, load_strict
from lesion.zoo import load_model, read_model_card

Log = Callable[[str], None]
SEG_METRICS = ("iou", "dice", "precision", "recall", "iou_median", "dice_median")


@dataclass(frozen=True)
class SegTrainConfig:
    """Everything that defines a segmentation training run (frozen: recorded verbatim in the card).

    Attributes:
        data: data set folders (any supported layout) or ``demo:derm`` / ``demo:cxr``.
        arch: segmentation architecture.
        encoder: smp encoder or ``tu-<timm model>``.
        init: ``imagenet-lite-port`` (offline ImageNet, lite encoders) or ``random``.
        init_from: checkpoint (name or path) to continue training from (same arch and encoder; use the same
            data and seed so the validation split is unchanged).
        encoder_depth: encoder stages (5 = full; fewer for tiny test models).
        size: training/inference square side, pixels.
        loss: segmentation loss.
        optimizer: ``adamw`` or ``radam``.
        lr: peak learning rate.
        weight_decay: decoupled weight decay.
        epochs: maximum epochs.
        batch_size: images per step.
        patience: epochs without val-IoU improvement before stopping (0 = never stop early).
        val_fraction: share of groups held out per stratum (data sets without a ``split`` column).
        external: folders evaluated after training, never trained on (e.g. PH2).
        name: the checkpoint's name (default ``<domain>_<arch>_<encoder>``).
        out: checkpoint stem (e.g. ``models/NAME``), or a folder for the name; empty = inside the run folder.
        runs_dir: root of the run folders: each run writes ``<runs_dir>/seg/<name>-<UTC time>/`` (log.csv, the
            running best and, without --out, the checkpoint); empty = no run folder (needs --out).
        seed: seed of the split, the init of the decoder and the augmentations.
        workers: DataLoader worker processes (0 = main process).
        max_images: keep at most this many images per data set (seeded sample; 0 = all), for quick runs.
        samples_per_epoch: train images drawn per epoch (0 = the whole train split); lets a slow CPU
            validate and early-stop more often on a large set.
        monitor_images: validate each epoch on a seeded subset of this many validation images (0 = all);
            the card's final metrics always use the whole validation split.
        max_minutes: training wall-time budget: the cosine schedule follows wall time as well as steps,
            and training stops after the epoch that passes the budget (0 = no limit).
        device: ``auto``, ``cpu``, ``cuda`` (AMP on CUDA).
        augment: augmentation strength (0 = none, 1 = default recipe).
        warmup_epochs: epochs of linear learning-rate warm-up.
        ema_decay: EMA of the weights (0 = off; 0.99-0.999 typical); the EMA is validated and saved.
        overwrite: replace an existing checkpoint at --out (never a shipped one in lesion-lab's weights/).
        command: the command line, recorded in the card.
    """

    data: tuple[str, ...]
    arch: str = field(default="unet", metadata={"choices": tuple(ARCHS)})
    encoder: str = "tu-efficientnet_lite0"
    init: str = field(default="imagenet-lite-port", metadata={"choices": ("imagenet-lite-port", "medsam", "random")})
    init_from: str = ""
    encoder_depth: int = field(default=5, metadata={"min": 1, "max": 5})
    size: int = field(default=256, metadata={"min": 1})
    loss: str = field(default="bce_jaccard", metadata={"choices": tuple(LOSSES)})
    optimizer: str = field(default="adamw", metadata={"choices": ("adamw", "radam")})
    lr: float = field(default=1e-3, metadata={"gt": 0})
    weight_decay: float = field(default=1e-4, metadata={"min": 0})
    epochs: int = field(default=20, metadata={"min": 1})
    batch_size: int = field(default=8, metadata={"min": 1})
    patience: int = field(default=5, metadata={"min": 0})
    val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})
    external: tuple[str, ...] = ()
    name: str = ""
    out: str = ""
    runs_dir: str = "runs"
    seed: int = field(default=0, metadata={"min": 0})
    workers: int = field(default=0, metadata={"min": 0})
    max_images: int = field(default=0, metadata={"min": 0})
    samples_per_epoch: int = field(default=0, metadata={"min": 0})
    monitor_images: int = field(default=0, metadata={"min": 0})
    max_minutes: float = field(default=0.0, metadata={"min": 0})
    device: str = field(default="auto", metadata={"choices": DEVICE_CHOICES})
    augment: float = field(default=1.0, metadata={"min": 0})
    warmup_epochs: float = field(default=0.5, metadata={"min": 0})
    ema_decay: float = field(default=0.0, metadata={"min": 0, "lt": 1})
    overwrite: bool = False
    command: str = field(default="", compare=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        check_config(self)
        plain_name("--name", self.name)
        stride = 2 ** int(self.encoder_depth)
        if self.size % stride:
            raise ConfigError(f"--size must be a multiple of {stride} (2 ** --encoder-depth {self.encoder_depth}: "
                              f"the encoder halves the image that often), got {self.size}.")


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def gather_records(cfg, sources, say: Log = print):
    """The training and validation records of every data set of ``cfg.data`` (``sources``: those opened), each
    capped at ``cfg.max_images`` (a seeded sample) and split by :func:`split_records`; shared by the CPU trainer
    and the GPU one (:mod:`lesion.train.gpu`), so both write the same split into the card.

    Returns:
        ``(train_records, val_records, val_source, sets, used)``: ``val_source`` names each validation record's
        data set; ``sets`` the per-data-set split for the card; ``used`` the card's data rows.

    Raises:
        DataError: a data set without masks; no training or no validation image.
    """
    train_recs: list = []
    val_recs: list = []
    val_source: list[str] = []
    sets: dict[str, Any] = {}
    used = []
    for spec, ds in zip(cfg.data, sources):
        if not ds.has_masks:
            raise DataError(f"{ds.name} ({spec}) has no masks to train on.")
        if cfg.max_images:
            keep = sorted(random.Random(cfg.seed).sample(range(len(ds.records)), min(cfg.max_images, len(ds.records))))
            ds = replace(ds, records=[ds.records[i] for i in keep])
        tr, va, how = split_records(ds, cfg.val_fraction, cfg.seed)
        train_recs += tr
        val_recs += va
        val_source += [ds.name] * len(va)
        sets[ds.name] = {
            "method": how, "n_train": len(tr), "n_val": len(va),
            "n_train_groups": len({r.group or r.id for r in tr}), "n_val_groups": len({r.group or r.id for r in va}),
            "val_ids": [r.id for r in va],
        }
        used.append((ds, TRAIN_VAL, {"source": spec, "n_train": len(tr), "n_val": len(va)}))
        say(f"data: {ds.name}: {len(tr)} train / {len(va)} val images ({how})")
    if not train_recs or not val_recs:
        raise DataError(f"Need training and validation images with masks; got {len(train_recs)} / {len(val_recs)}.")
    return train_recs, val_recs, val_source, sets, used


def split_records(ds, val_fraction: float, seed: int) -> tuple[list, list, str]:
    """(train records, val records, how) for the images of one data set that have masks
    (:func:`lesion.train.common.split_column_or_groups`)."""
    return split_column_or_groups([r for r in ds.records if r.mask_path is not None], val_fraction, seed)


def preload(records: Sequence, size: int, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and resize images + masks once: ``(images uint8 [N,S,S,3], masks uint8 [N,S,S] in {0,1})``."""
    x = np.empty((len(records), size, size, 3), np.uint8)
    y = np.empty((len(records), size, size), np.uint8)
    for i, r in enumerate(records):
        img = read_image(r.image_path)
        m = read_mask(r.mask_path, shape=img.shape[:2])
        x[i] = resize_image(img, size, "area")
        y[i] = resize_image(m, size, "nearest")
        if progress is not None:
            progress(i + 1, len(records))
    return x, y


class _AugDataset:
    """torch-style dataset over preloaded arrays, augmenting on the fly."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform, mean, std):
        self.x, self.y, self.t = x, y, transform
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        import torch

        out = self.t(image=self.x[i], mask=self.y[i])
        img = (out["image"].astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(img.transpose(2, 0, 1).copy()), torch.from_numpy(out["mask"][None].astype(np.float32))


def batch_iou_dice(logits, target) -> tuple["Any", "Any"]:
    """Per-image IoU and Dice of ``logits > 0`` vs ``target > 0.5`` (``[B,1,H,W]``); both empty -> 1."""
    import torch

    p = logits > 0
    t = target > 0.5
    inter = (p & t).flatten(1).sum(1).float()
    ps, ts = p.flatten(1).sum(1).float(), t.flatten(1).sum(1).float()
    union = ps + ts - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    dice = torch.where(ps + ts > 0, 2 * inter / (ps + ts).clamp(min=1), torch.ones_like(union))
    return iou, dice


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------
def native_metrics(segmenter, records: Sequence, progress: Progress | None = None) -> dict[str, Any]:
    """Per-image metrics at native size, averaged: ``{n, iou, dice, precision, recall, iou_ci95, dice_ci95,
    iou_median, dice_median}``."""
    rows = []
    batch = 16
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        imgs = [read_image(r.image_path) for r in chunk]
        probs = segmenter.predict_many(imgs, batch_size=batch)
        for r, img, p in zip(chunk, imgs, probs):
            m = read_mask(r.mask_path, shape=img.shape[:2])
            rows.append({"id": r.id, **seg_metrics(p > segmenter.threshold, m)})
        if progress is not None:
            progress(min(start + batch, len(records)), len(records))
    out: dict[str, Any] = {"n": len(rows)}
    for k in ("iou", "dice", "precision", "recall"):
        s = summarize([row[k] for row in rows], n_boot=1000)
        out[k] = s["mean"]
        if k in ("iou", "dice"):
            out[f"{k}_ci95"] = [s["ci_lo"], s["ci_hi"]]
            out[f"{k}_median"] = s["median"]
    return out


def seg_metric_rows(block: dict[str, Any], data: str, split: str) -> list[Metric]:
    """:func:`native_metrics` of one data set as card :class:`~lesion.card.Metric` rows."""
    return [Metric(k, float(block[k]), data, split, n=block["n"], ci=tuple(block[f"{k}_ci95"]) if f"{k}_ci95" in block else None)
            for k in SEG_METRICS if block.get(k) is not None]


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------
class SegRecipe:
    """One epoch of segmentation training and one validation at the training size (for :func:`lesion.train.loop.fit`)."""

    def __init__(self, cfg: SegTrainConfig, model, device, train_set, n_train: int, xva, yva, clock):
        import torch

        self.cfg, self.model, self.device, self.train_set = cfg, model, device, train_set
        self.n_train = n_train
        self.use_amp = device.type == "cuda"
        self.loss_fn = make_loss(cfg.loss).to(device)
        self.optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
        self.n_per_epoch = min(cfg.samples_per_epoch or n_train, n_train)
        self.steps_per_epoch = max(self.n_per_epoch // cfg.batch_size, 1)
        self.sched = cosine_schedule(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                     int(cfg.warmup_epochs * self.steps_per_epoch),
                                     time_budget_s=cfg.max_minutes * 60, clock=clock)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.xva, self.yva = xva, yva

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        import torch

        cfg, device = self.cfg, self.device
        self.model.train()
        idx = self.rng.permutation(self.n_train)[:self.n_per_epoch].tolist()
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.train_set, idx), batch_size=cfg.batch_size, shuffle=False, drop_last=True,
            num_workers=cfg.workers, generator=self.gen, persistent_workers=False,
        )
        tl, ti, nb = 0.0, 0.0, 0
        for xb, yb in loader:
            xb, yb = batch_to(xb, device), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
                logits = self.model(xb)
                loss = self.loss_fn(logits.float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.sched.step()
            tl += float(loss.detach())
            ti += float(batch_iou_dice(logits.detach(), yb)[0].mean())
            nb += 1
            after_step()
        return {"train_loss": tl / max(nb, 1), "train_iou": ti / max(nb, 1)}

    def validate(self, model) -> dict[str, float]:
        """Mean val loss (per batch, weighted by size), per-image IoU and Dice at the training size."""
        import torch

        x, y, batch = self.xva, self.yva, self.cfg.batch_size * 2
        model.eval()
        loss_sum, ious, dices = 0.0, [], []
        with torch.inference_mode():
            for s in range(0, len(x), batch):
                xb, yb = batch_to(x[s:s + batch], self.device), y[s:s + batch].to(self.device)
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    logits = model(xb).float()
                loss_sum += float(self.loss_fn(logits, yb)) * len(xb)
                i, d = batch_iou_dice(logits, yb)
                ious.append(i.cpu())
                dices.append(d.cpu())
        return {"val_loss": loss_sum / len(x), "val_iou": float(torch.cat(ious).mean()),
                "val_dice": float(torch.cat(dices).mean())}


def _init_from(model, cfg: SegTrainConfig, say: Log) -> ModelCard | None:
    """Load ``cfg.init_from`` into ``model`` (same arch and encoder); its card, or None."""
    if not cfg.init_from:
        return None
    card = read_model_card(cfg.init_from, task="segmentation")
    if (card.arch, card.encoder) != (cfg.arch, cfg.encoder):
        raise ConfigError(f"--init-from {cfg.init_from} is a {card.arch} / {card.encoder} checkpoint; "
                          f"this run builds {cfg.arch} / {cfg.encoder}.")
    net, card = load_model(cfg.init_from, task="segmentation")
    load_strict(model, net.state_dict(), what=f"--init-from {cfg.init_from}")
    say(f"initialised from {cfg.init_from} ({card.training.epochs or '?'} epochs)")
    return card


def train_segmentation(cfg: SegTrainConfig, progress: Progress | None = None, log: Log | None = None) -> ModelCard:
    """Train, validate, save the best epoch, and return its card.

    Args:
        cfg: the run (its ranges are checked when it is made).
        progress: ``progress(steps_done, total_steps)`` over the whole run (:func:`lesion.train.loop.fit`).
        log: receives one line per event (data summary, each epoch, the saved files); default silent.

    Returns:
        the card as written next to the checkpoint (with ``path``); by default the checkpoint is in the run's
        own folder ``<runs_dir>/seg/<name>-<UTC time>/`` (:func:`lesion.train.loop.plan_destination`).

    Raises:
        ConfigError: bad option, mixed domains, an existing checkpoint without ``overwrite``, or a shipped one;
            all before any image is read.
        DataError: a data set cannot be read, has no masks, or has fewer training images than one batch.
    """
    reserved: list[Destination] = []
    try:
        return _train_segmentation(cfg, progress, log, reserved)
    except BaseException:
        for d in reserved:
            d.discard_if_empty()
        raise


def _train_segmentation(cfg: SegTrainConfig, progress: Progress | None, log: Log | None,
                        reserved: list[Destination]) -> ModelCard:
    import torch

    say = log or (lambda s: None)
    timer = Timer()
    if not cfg.data:
        raise ConfigError("Give at least one --data folder (or demo:derm / demo:cxr).")
    make_loss(cfg.loss)  # fail fast on a bad name, before minutes of preloading
    if cfg.name or out_names_file(cfg.out):  # the destination does not depend on the data: check it first
        reserved.append(plan_destination("seg", cfg.name or "model", cfg.out, cfg.runs_dir, cfg.overwrite))
    else:
        check_paths(cfg.out, cfg.runs_dir)  # the rest once the data's domain gives the default name
    seed_everything(cfg.seed)

    # ---- data
    sources = [open_data(s) for s in cfg.data]
    domains = sorted({ds.domain for ds in sources})
    if len(domains) != 1:
        raise ConfigError(f"All --data sets must share one domain; got {', '.join(domains)}.")
    domain = domains[0]
    if not reserved:
        reserved.append(plan_destination("seg", f"{domain}_{cfg.arch}_{cfg.encoder.removeprefix('tu-')}",
                                         cfg.out, cfg.runs_dir, cfg.overwrite))
    dest = reserved[0]
    name = dest.name or cfg.name or f"{domain}_{cfg.arch}_{cfg.encoder.removeprefix('tu-')}"
    # the encoder's own input scaling: EfficientNet-Lite's [-1, 1]; LiteMedSAM's TinyViT takes 0..1
    mean, std = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if cfg.encoder == medsam_encoder.NAME else (LITE_MEAN, LITE_STD)
    model_cfg = SegModelConfig(arch=cfg.arch, encoder=cfg.encoder, size=cfg.size, init=cfg.init,
                               encoder_depth=cfg.encoder_depth, mean=mean, std=std)
    model = create_seg_model(model_cfg)  # validates arch/encoder before the data is read
    init_card = _init_from(model, cfg, say)
    train_recs, val_recs, val_source, sets, used = gather_records(cfg, sources, say)
    per_epoch = min(cfg.samples_per_epoch or len(train_recs), len(train_recs))
    if per_epoch < cfg.batch_size:
        raise DataError(f"--batch-size {cfg.batch_size} is larger than the {per_epoch} training images per epoch: "
                        "the incomplete last batch is dropped, so no optimiser step would be taken and nothing "
                        f"would be learnt. Use --batch-size {per_epoch} or less, or more images.")
    externals = [open_data(s) for s in cfg.external]
    for spec, ds in zip(cfg.external, externals):
        used.append((ds, EXTERNAL, {"source": spec, "n": sum(r.mask_path is not None for r in ds.records)}))
    say(f"preloading {len(train_recs)} + {len(val_recs)} images at {cfg.size}px …")
    xtr, ytr = preload(train_recs, cfg.size)
    monitor = list(range(len(val_recs)))
    if cfg.monitor_images and cfg.monitor_images < len(val_recs):
        monitor = sorted(np.random.default_rng(cfg.seed).choice(len(val_recs), cfg.monitor_images, replace=False).tolist())
    xva, yva = preload([val_recs[i] for i in monitor], cfg.size)
    say(f"preloaded in {timer():.0f}s")

    # ---- model, recipe
    device = torch.device(pick_device(cfg.device))
    model.to(device)
    train_set = _AugDataset(xtr, ytr, seg_train_transform(cfg.size, domain, cfg.augment), model_cfg.mean, model_cfg.std)
    xva_t = torch.from_numpy(
        ((xva.astype(np.float32) / 255.0 - np.asarray(model_cfg.mean, np.float32)) / np.asarray(model_cfg.std, np.float32))
        .transpose(0, 3, 1, 2).copy()
    )
    yva_t = torch.from_numpy(yva[:, None].astype(np.float32))
    clock = Timer()  # the --max-minutes budget counts training only, not preloading
    recipe = SegRecipe(cfg, model, device, train_set, len(xtr), xva_t, yva_t, clock)

    fields = cfg_to_card(model_cfg)
    fields["init"] = (f"continued from {init_card.name}" if init_card is not None
                      else model.init_report.get("init", "random"))
    extra: dict[str, Any] = {"init_report": {k: v for k, v in model.init_report.items() if k != "unexpected"}}
    if init_card is not None:
        extra["init_from"] = {"name": init_card.name, "init": init_card.init, "epochs": init_card.training.epochs,
                              "sha256": init_card.sha256}
    base = ModelCard(
        name=name, task="segmentation", domain=domain, **fields, data=data_sources(used),
        split=split_of_sets(sets, cfg.seed, cfg.val_fraction),
        training=training_section(cfg, cfg.loss, cfg.optimizer, init_from=init_card.name if init_card else None),
        provenance=run_provenance(cfg.command or command_line("lesion train seg", None, cfg), device),
        extra=extra,
    )
    result = fit(recipe, LoopConfig(epochs=cfg.epochs, monitor="val_iou", patience=cfg.patience,
                                    max_minutes=cfg.max_minutes, ema_decay=cfg.ema_decay),
                 clock=clock, run_dir=dest.run_dir, card=base, progress=progress, log=say)

    # ---- final metrics with the best weights, at native resolution
    seg = SegModelSegmenter(model, base, device=device)
    say("scoring the best epoch at native resolution …")
    pooled = base.pooled_val_data
    metrics = seg_metric_rows(native_metrics(seg, val_recs), pooled, "val")
    set_names = list(dict.fromkeys(val_source))
    if len(set_names) > 1:
        for set_name in set_names:
            recs = [r for r, s in zip(val_recs, val_source) if s == set_name]
            metrics += seg_metric_rows(native_metrics(seg, recs), set_name, "val")
    for ds in externals:
        block = native_metrics(seg, [r for r in ds.records if r.mask_path is not None])
        metrics += seg_metric_rows(block, ds.name, "external")
        say(f"external {ds.name}: IoU {block['iou']:.4f} Dice {block['dice']:.4f} (n={block['n']})")
    card = dest.save(model, final_card(base, result, metrics, timer()), say)
    head = card.headline()
    say(f"saved {card.path} (+ .json); val IoU {head.value:.4f}")
    return card


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """``lesion train seg`` options: one per :class:`SegTrainConfig` field, plus ``--threads`` and ``--no-aug``."""
    p = OptionParser(prog="lesion train seg", description="Train a U-Net / LinkNet segmentation model.")
    add_config_options(p, SegTrainConfig, required=("data",))
    add_common_options(p)
    # old spelling (before --out): --out-dir FOLDER (the default name inside it)
    p.add_argument("--out-dir", default="", help=argparse.SUPPRESS)
    return p


def config_from_argv(argv: Sequence[str]) -> tuple[SegTrainConfig, int]:
    """``(config, torch threads)`` of a ``lesion train seg`` command line."""
    a = build_parser().parse_args(list(argv))
    out = a.out
    if not out and a.out_dir:
        out = str(Path(a.out_dir) / a.name) if a.name else str(a.out_dir) + "/"
    cfg = config_from_namespace(SegTrainConfig, a, out=out, command=command_line("lesion train seg", argv, None),
                           **({"augment": 0.0} if a.no_aug else {}))
    return cfg, a.threads


def main(argv: list[str] | None = None) -> int:
    """``lesion train seg …``: one line per epoch, a progress bar over the run's steps, and last a JSON line with the card's summary."""
    return run_command(train_segmentation, config_from_argv, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
