"""Train a chest X-ray classifier (seed 002): ``lesion train cxr``.

Seed 002's recipe: one-channel 224x224 radiographs, DenseNet-121 (Inception-ResNet-v2 as the option it
found worse), a multi-label head over the NIH ChestX-ray14 findings with the small classes merged into
"Other" or dropped (:class:`lesion.classify.cxr.LabelSet`), Adam. We add what a multi-label set with rare
classes needs: **weighted BCE** (each finding's positives weighted by negatives/positives of the training
split, so a rare finding is not learnt as "always absent"), a patient-grouped split stratified by source and
label, early stopping on the mean per-label validation ROC-AUC, and mild radiograph augmentations (no
horizontal flip by default: the heart's side is anatomy, not noise).

Label sets: ``merge`` / ``drop`` (seed 002's two variants, NIH layout), ``all`` (every finding present, e.g.
the demo X-rays) and ``tb`` (tuberculosis vs normal on the Montgomery/Shenzhen "Chest X-ray Masks and
Labels" set, which is the real labelled X-ray data this project ships weights for).

Example::

    lesion train cxr --data demo:cxr --labels all --arch resnet10t --size 64 --epochs 2 --out runs/cxr_demo

The loop (epochs, early stopping, time budget, history, best weights) is :func:`lesion.train.loop.fit`.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import TRAIN_VAL, Metric, ModelCard, Preprocessing, data_sources
from lesion.classify.classifier import Classifier, create_model
from lesion.classify.cxr import MODES, LabelSet, class_table, column_counts, view_warnings
from lesion.classify.models import LITE_PORTS, ClsModelConfig, check_arch, normalize, prepare_image
from lesion.data.io import read_image
from lesion.data.spec import open_data
from lesion.device import DEVICE_CHOICES, pick_device
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.metrics import mean_auc, per_label_auc
from lesion.train.common import Timer, batch_to, cosine_schedule, seed_everything, split_column_or_groups
from lesion.train.loop import (
    Destination,
    LoopConfig,
    Progress,
    final_card,
    fit,
    plan_destination,
    run_command,
    run_provenance,
    split_of_sets,
    training_section,
)
from lesion.train.options import (
    OptionParser,
    add_common_options,
    check_config,
    plain_name,
    add_config_options,
    command_line,
    config_from_namespace,
    switched_off,
)

LOSSES = ("weighted_bce", "bce")
#: Grey-level mean/std for one-channel input: ImageNet's luminance statistics (random init), [-1, 1] (lite port).
GREY_MEAN, GREY_STD = (0.449,), (0.226,)
LITE_GREY_MEAN, LITE_GREY_STD = (0.5,), (0.5,)


@dataclass(frozen=True)
class CxrTrainConfig:
    """One chest X-ray training run.

    Attributes:
        data: folders in any chest X-ray layout, or ``demo:cxr``.
        labels: label set: ``merge`` (small classes -> Other), ``drop``, ``all`` or ``tb``.
        arch: timm name; seed 002: densenet121 (inception_resnet_v2 the option).
        init: ``imagenet-lite-port`` (efficientnet_lite0/1/2, offline) or ``random``.
        size: input side (seed 002: 224x224x1).
        clahe: CLAHE on the grey image.
        loss: ``weighted_bce`` (positives weighted by negatives/positives per finding) or ``bce``.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        epochs: maximum epochs.
        batch_size: images per step.
        patience: early stopping on mean val AUC (0 = off).
        max_minutes: training wall-time budget: the cosine schedule follows it, and training stops after the
            epoch that passes it (0 = no limit).
        val_fraction: share of patients held out (a ``split`` column in the data wins).
        hflip: horizontal flips (off: laterality is anatomy).
        augment: mild radiograph augmentations (``--no-aug`` switches them off).
        max_images: at most this many images per data set (seeded; 0 = all).
        ema_decay: EMA of the weights (0 = off); the EMA is validated and saved.
        seed: seed of the split, the order of the batches and the initialisation.
        device: ``auto``, ``cpu`` or ``cuda``.
        name: the checkpoint's name (default ``cxr_<labels>_<arch>``).
        out: checkpoint stem (e.g. ``models/cxr_tb_efficientnet_lite0``) or a folder for the name; empty = inside
            the run folder.
        overwrite: replace an existing checkpoint at --out (never a shipped one in lesion-lab's weights/).
        runs_dir: root of the run folders: each run writes ``<runs_dir>/cxr/<name>-<UTC time>/`` (log.csv, the
            running best and, without --out, the checkpoint); empty = no run folder (needs --out; from
            Python, with no --out either, the model is not saved).
        command: the command line, recorded in the card.
    """

    data: tuple[str, ...] = ("demo:cxr",)
    labels: str = field(default="merge", metadata={"choices": MODES})
    arch: str = "densenet121"
    init: str = field(default="random", metadata={"choices": ("imagenet-lite-port", "random")})
    size: int = field(default=224, metadata={"min": 16})
    clahe: bool = False
    loss: str = field(default="weighted_bce", metadata={"choices": LOSSES})
    lr: float = field(default=1e-4, metadata={"gt": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    epochs: int = field(default=20, metadata={"min": 1})
    batch_size: int = field(default=16, metadata={"min": 2, "why": "BatchNorm needs two images per step"})
    patience: int = field(default=5, metadata={"min": 0})
    max_minutes: float = field(default=0.0, metadata={"min": 0})
    val_fraction: float = field(default=0.15, metadata={"gt": 0, "lt": 1})
    hflip: bool = False
    augment: bool = field(default=True, metadata={"cli": False})
    max_images: int = field(default=0, metadata={"min": 0})
    ema_decay: float = field(default=0.0, metadata={"aliases": ("--ema",), "min": 0, "lt": 1})
    seed: int = field(default=0, metadata={"min": 0})
    device: str = field(default="auto", metadata={"choices": DEVICE_CHOICES})
    name: str = ""
    out: str = ""
    overwrite: bool = False
    runs_dir: str = "runs"
    command: str = field(default="", compare=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        check_config(self)
        plain_name("--name", self.name)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def split_cxr(records: Sequence, val_fraction: float, seed: int) -> tuple[list, list, str]:
    """Train/val records: the data's ``split`` column if it has one, else patients held out per stratum.

    With the same seed and fraction this is the split of ``lesion train seg`` on the same set, so a lung
    model and a TB model shipped together share their held-out patients.
    """
    return split_column_or_groups(records, val_fraction, seed)


def preload_grey(records: Sequence, prep: Preprocessing, progress: Progress | None = None) -> np.ndarray:
    """Read, centre-crop, resize and grey every image once: uint8 ``[N, S, S, 1]``."""
    x = np.zeros((len(records), prep.height, prep.width, prep.channels), np.uint8)
    for i, r in enumerate(records):
        x[i] = prepare_image(read_image(r.image_path), prep)
        if progress is not None:
            progress(i + 1, len(records))
    return x


def train_transform(hflip: bool = False):
    """Mild radiograph augmentations (albumentations), on uint8 ``[S, S, 1]``."""
    import albumentations as A

    t = [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), border_mode=0, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        A.RandomGamma(gamma_limit=(85, 115), p=0.3),
    ]
    if hflip:
        t.insert(0, A.HorizontalFlip(p=0.5))
    return A.Compose(t)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def _logits(model: Classifier, x_uint8: np.ndarray, prep: Preprocessing, device, batch: int = 32) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x_uint8), batch):
            xb = batch_to(torch.from_numpy(normalize(x_uint8[s : s + batch], prep)), device)
            out.append(model(xb).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class CxrRecipe:
    """One epoch of weighted-BCE multi-label training and one validation (per-label AUC)."""

    def __init__(self, cfg: CxrTrainConfig, model: Classifier, device: str, prep: Preprocessing, xtr, ytr, xva, yva,
                 classes: Sequence[str], pos_weight: np.ndarray, clock: Callable[[], float]):
        import torch

        self.cfg, self.model, self.device, self.prep, self.classes = cfg, model, device, prep, tuple(classes)
        self.xtr, self.ytr, self.xva, self.yva = xtr, ytr, xva, yva
        self.loss_fn = torch.nn.BCEWithLogitsLoss(
            pos_weight=torch.from_numpy(pos_weight).to(device) if cfg.loss == "weighted_bce" else None)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if len(xtr) < 2:
            raise DataError(f"{len(xtr)} training image(s): a step needs two (BatchNorm), so nothing would be "
                            "learnt. Use more images.")
        self.steps_per_epoch = max(1, len(xtr) // cfg.batch_size)
        self.sched = cosine_schedule(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                     warmup_steps=min(self.steps_per_epoch, 20), time_budget_s=cfg.max_minutes * 60,
                                     clock=clock)
        self.tf = train_transform(cfg.hflip) if cfg.augment else None
        self.rng = np.random.default_rng(cfg.seed)

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        import torch

        cfg, prep = self.cfg, self.prep
        self.model.train()
        order = self.rng.permutation(len(self.xtr))
        tot, n = 0.0, 0
        for s in range(0, len(order) - 1, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            imgs = self.xtr[idx]
            if self.tf is not None:
                imgs = np.stack([self.tf(image=im)["image"].reshape(im.shape) for im in imgs])
            x = batch_to(torch.from_numpy(normalize(imgs, prep)), self.device)
            y = torch.from_numpy(self.ytr[idx]).to(self.device)
            loss = self.loss_fn(self.model(x).logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.sched.step()
            after_step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        return {"train_loss": tot / max(n, 1)}

    def validate(self, model: Classifier) -> dict[str, float]:
        import torch

        z = _logits(model, self.xva, self.prep, self.device)
        val_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(z),
                                                                               torch.from_numpy(self.yva)))
        aucs = per_label_auc(self.yva, z, self.classes)
        return {"val_loss": val_loss, "val_auc_mean": mean_auc(aucs), **{f"val_auc:{c}": v["auc"] for c, v in aucs.items()}}


def train_cxr(cfg: CxrTrainConfig, progress: Progress | None = None,
              log: Callable[[str], None] | None = None) -> ModelCard:
    """Train, validate each epoch (per-label AUC), keep the best weights, save checkpoint + card.

    Args:
        cfg: the run.
        progress: ``progress(steps_done, total_steps)`` over the whole run (:func:`lesion.train.loop.fit`).
        log: one line per event.

    Returns:
        the card (as written next to the weights, with ``path``, when ``cfg.out`` is set).

    Raises:
        ConfigError: unknown option, an existing checkpoint without ``overwrite`` or a shipped one (before any
            data is read); DataError: no labels, unknown NIH labels in merge/drop mode, one side of the split
            empty, fewer than two training images.
    """
    reserved: list[Destination] = []
    try:
        return _train_cxr(cfg, progress, log, reserved)
    except BaseException:
        for d in reserved:
            d.discard_if_empty()
        raise


def _train_cxr(cfg: CxrTrainConfig, progress: Progress | None, log: Callable[[str], None] | None,
               reserved: list[Destination]) -> ModelCard:
    log = log or (lambda s: None)
    if cfg.labels not in MODES:
        raise unknown_option("label set", cfg.labels, MODES)
    if cfg.loss not in LOSSES:
        raise unknown_option("loss", cfg.loss, LOSSES)
    check_arch(cfg.arch)
    name_default = cfg.name or f"cxr_{cfg.labels}_{cfg.arch}"
    reserved.append(plan_destination("cxr", name_default, cfg.out, cfg.runs_dir, cfg.overwrite))
    dest = reserved[0]
    timer = Timer()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)

    train_recs: list = []
    val_recs: list = []
    sets_split: dict[str, Any] = {}
    used, warnings = [], []
    sets = [open_data(s) for s in cfg.data]
    for spec, ds in zip(cfg.data, sets):
        if ds.domain != "cxr":
            raise DataError(f"{ds.name} ({spec}) is a {ds.domain} data set; lesion train cxr needs chest X-rays.")
    label_set = LabelSet(cfg.labels).fit([r for ds in sets for r in ds.records])
    for spec, ds in zip(cfg.data, sets):
        recs = label_set.select(ds.records)
        if cfg.max_images and len(recs) > cfg.max_images:
            keep = sorted(np.random.default_rng(cfg.seed).choice(len(recs), cfg.max_images, replace=False).tolist())
            recs = [recs[i] for i in keep]
        if not recs:
            raise DataError(f"{ds.name} ({spec}) has no image with a label for the '{cfg.labels}' label set.")
        tr, va, how = split_cxr(recs, cfg.val_fraction, cfg.seed)
        train_recs += tr
        val_recs += va
        warnings += list(ds.warnings) + view_warnings(recs)
        sets_split[ds.name] = {"method": how, "n_train": len(tr), "n_val": len(va), "val_ids": [r.id for r in va]}
        used.append((ds, TRAIN_VAL, {"source": spec, "n_train": len(tr), "n_val": len(va)}))
        log(f"data: {ds.name}: {len(tr)} train / {len(va)} val images ({how})")
    if not train_recs or not val_recs:
        raise DataError(f"Need training and validation images; got {len(train_recs)} / {len(val_recs)}.")
    for w in warnings:
        log(f"note: {w}")

    lite = cfg.init == "imagenet-lite-port"
    if lite and cfg.arch not in LITE_PORTS:
        raise ConfigError(f"init 'imagenet-lite-port' exists only for {', '.join(LITE_PORTS)}; got '{cfg.arch}'.")
    mean, std = (LITE_GREY_MEAN, LITE_GREY_STD) if lite else (GREY_MEAN, GREY_STD)
    prep = Preprocessing(size=cfg.size, mean=mean, std=std, center_crop=False, clahe=cfg.clahe, channels=1)
    classes = label_set.classes
    mcfg = ClsModelConfig(arch=cfg.arch, num_classes=len(classes), in_chans=1, size=cfg.size, mean=mean, std=std,
                          init=cfg.init)
    model = create_model(mcfg).to(device)

    log(f"preloading {len(train_recs)} + {len(val_recs)} images at {cfg.size}px (grey) …")
    xtr, xva = preload_grey(train_recs, prep), preload_grey(val_recs, prep)
    ytr, yva = label_set.encode(train_recs), label_set.encode(val_recs)
    pos = ytr.sum(axis=0)
    if (pos == 0).any():
        empty = [c for c, n in zip(classes, pos) if n == 0]
        log(f"note: no training positives for {', '.join(empty)}; their AUC cannot be learnt")
    pos_weight = np.clip((len(ytr) - pos) / np.maximum(pos, 1.0), 1.0, 100.0).astype(np.float32)
    clock = Timer()
    recipe = CxrRecipe(cfg, model, device, prep, xtr, ytr, xva, yva, classes, pos_weight, clock)

    base = ModelCard(
        name=dest.name or name_default, task="classification", domain="cxr", arch=cfg.arch,
        encoder=cfg.arch, init=cfg.init, classes=tuple(classes), target=cfg.labels, multilabel=True,
        model={**asdict(mcfg), "mean": list(mean), "std": list(std)}, preprocessing=prep,
        data=data_sources(used), split=split_of_sets(sets_split, cfg.seed, cfg.val_fraction),
        training=training_section(cfg, cfg.loss, "adam"),
        provenance=run_provenance(cfg.command or command_line("lesion train cxr", None, cfg), device),
        extra={"label_set": label_set.to_dict(),
               "class_table": class_table(train_recs + val_recs, label_set).to_dict("records"),
               "pos_weight": {c: float(w) for c, w in zip(classes, pos_weight)} if cfg.loss == "weighted_bce" else None,
               "train_positives": column_counts(ytr, classes), "val_positives": column_counts(yva, classes)},
        warnings=tuple(warnings),
    )
    result = fit(recipe, LoopConfig(epochs=cfg.epochs, monitor="val_auc_mean", patience=cfg.patience,
                                    max_minutes=cfg.max_minutes, ema_decay=cfg.ema_decay),
                 clock=clock, run_dir=dest.run_dir, card=base, progress=progress, log=log)

    # ---- metrics of the best epoch, with bootstrap CIs
    per_label = per_label_auc(yva, _logits(model, xva, prep, device), classes, ci=True)
    pooled = base.pooled_val_data
    metrics: list[Metric] = []
    if np.isfinite(mean_auc(per_label)):
        metrics.append(Metric("auc_mean", mean_auc(per_label), pooled, "val", n=len(yva)))
    metrics += [Metric("auc", v["auc"], pooled, "val", n=v["n"], positives=v["positives"], ci=tuple(v["auc_ci"]), label=c)
                for c, v in per_label.items() if np.isfinite(v["auc"])]
    metrics.append(Metric("loss", float(result.best_row["val_loss"]), pooled, "val", n=len(yva)))
    return dest.save(model, final_card(base, result, metrics, timer()), log)


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = OptionParser(prog="lesion train cxr", description=__doc__.split("\n\n")[0])
    add_config_options(p, CxrTrainConfig)
    add_common_options(p)
    return p


def config_from_argv(argv: Sequence[str]) -> tuple[CxrTrainConfig, int]:
    """``(config, torch threads)`` of a ``lesion train cxr`` command line."""
    argv = list(argv)
    a = _parser().parse_args(argv)
    switched_off(a.no_aug, ())  # only a bare --no-aug (or 'all') means something here
    cfg = config_from_namespace(CxrTrainConfig, a, augment=not a.no_aug,
                                command=command_line("lesion train cxr", argv, None))
    return cfg, a.threads


def main(argv: list[str] | None = None) -> int:
    """``lesion train cxr``: one line per epoch, a progress bar over the run's steps, and last a JSON line with the card's summary."""
    return run_command(train_cxr, config_from_argv, argv)
