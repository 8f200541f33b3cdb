"""Train a melanoma / malignancy / HAM7 classifier or the multi-task network: ``lesion train cls``.

Recipe (seed 003): leak-free stratified group split (:mod:`lesion.train.splits`), centre crop (+ optional
CLAHE), albumentations augmentations (:mod:`lesion.train.cls_augment`), per-epoch balanced resampling of the
majority class with an optional cap of images per patient, last-layer bias = prior logit, RAdam or AdamW
with a cosine schedule, EMA of weights, BCE / focal / OHEM (+ flooding) losses, early stopping on validation
ROC-AUC. The loop is :func:`lesion.train.loop.fit`; the best (EMA) weights are saved with a
:class:`~lesion.card.ModelCard` (history, metrics naming their data, provenance).

Example::

    lesion train cls --data demo:derm --arch resnet10t --size 64 --epochs 3 --out runs/demo_cls
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import EXTERNAL, TRAIN_VAL, Metric, ModelCard, Preprocessing, Split, data_sources
from lesion.classify.classifier import Classifier, create_model
from lesion.classify.metadata import encode_records
from lesion.classify.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_PORTS,
    LITE_STD,
    TARGETS,
    ClsModelConfig,
    classes_for_target,
    make_targets,
    normalize,
    prepare_image,
    record_label,
)
from lesion.classify.multitask import MultiTaskConfig
from lesion.data.io import read_image, read_mask
from lesion.data.spec import open_data
from lesion.device import DEVICE_CHOICES, pick_device
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.infer.engine import predict
from lesion.metrics import logits_auc, roc_auc_ci
from lesion.train.cls_augment import AugmentConfig, build_train_transform
from lesion.train.cls_losses import LOSSES, bce_loss, make_loss, mask_loss
from lesion.train.common import Timer, batch_to, cosine_schedule, make_optimizer, seed_everything
from lesion.train.loop import (
    Destination,
    LoopConfig,
    Progress,
    final_card,
    check_paths,
    fit,
    out_names_file,
    plan_destination,
    run_command,
    run_provenance,
    training_section,
)
from lesion.train.options import (
    OptionParser,
    add_common_options,
    add_config_options,
    check_config,
    command_line,
    config_from_namespace,
    plain_name,
    switched_off,
)
from lesion.train.splits import drop_duplicates, epoch_indices, groups_of, prior_logit, stratified_group_folds
from lesion.weights import load_strict
from lesion.zoo import CLASSIFIER_TASKS, load_model, read_model_card

MODEL_KINDS = ("classifier", "multitask")
SPLITS = ("auto", "kfold", "column")
#: The augmentations ``--no-aug LIST`` can switch off (fields of :class:`AugmentConfig` but its probability).
AUG_NAMES = tuple(n for n in AugmentConfig.__dataclass_fields__ if n != "p")


@dataclass(frozen=True)
class ClsTrainConfig:
    """One classification training run.

    Attributes:
        data: data folder (any layout lesion.data.load_dataset knows) or ``demo:derm``.
        target: ``melanoma`` (vs rest), ``malignant`` (vs benign) or ``dx7`` (HAM's 7 classes).
        model: ``classifier`` (plain timm) or ``multitask`` (mask attention + metadata).
        arch: timm model name.
        init: ``imagenet-lite-port`` (efficientnet_lite0/1/2) or ``random``.
        size: input side, pixels.
        center_crop: crop the central square first (seed 003).
        clahe: CLAHE after resizing (seed 003).
        use_metadata: multitask only: metadata encoder (age, sex, site).
        mask_weight: multitask only: weight of BCE+Dice on masks where truth exists (0 = unsupervised).
        loss: ``bce``, ``focal`` (alpha 0.25, gamma 2) or ``ohem``.
        flood: flooding level b (0 = off).
        optimizer: ``radam`` or ``adamw``.
        lr: peak learning rate.
        weight_decay: decoupled weight decay.
        epochs: maximum epochs.
        patience: early stopping on val AUC (0 = off).
        max_minutes: training wall-time budget: stop after the epoch that passes it (0 = no limit).
        batch_size: images per step.
        ema_decay: EMA of weights (0 = off; 0.99-0.999 typical); the EMA is validated and saved.
        balance: binary targets: downsample the majority class each epoch.
        max_per_group: cap images per patient/lesion per epoch (0 = no cap).
        split: ``auto`` (a train/val ``split`` column when present, else K-fold), ``kfold`` or ``column``.
        n_splits: K of the K-fold split.
        fold: which fold is held out for validation.
        dedupe: drop byte-identical image files before splitting.
        max_images: use at most this many images (whole groups, seeded; 0 = all) for quick runs.
        external: external validation data (e.g. PH2), scored after training, never trained on.
        augment: which augmentations run (``--no-aug`` switches them off, all or a list).
        drop_rate: dropout before the classifier.
        seed: seed of the split, the resampling and the initialisation.
        device: ``auto``, ``cpu`` or ``cuda``.
        name: the checkpoint's name (default ``<domain>_<model>_<arch>_<loss>``).
        out: checkpoint stem (e.g. ``models/NAME``) or a folder for the name; empty = inside the run folder.
        overwrite: replace an existing checkpoint at --out (never a shipped one in lesion-lab's weights/).
        runs_dir: root of the run folders: each run writes ``<runs_dir>/cls/<name>-<UTC time>/`` (log.csv, the
            running best and, without --out, the checkpoint); empty = no run folder (needs --out; from
            Python, with no --out either, the model is not saved).
        recipe: named recipe (RECIPES) the run started from; explicit options override its values.
        init_from: checkpoint (name or path) to continue from, e.g. at a larger size (progressive resizing).
        command: the command line, recorded in the card.
    """

    data: str = "demo:derm"
    target: str = field(default="melanoma", metadata={"choices": TARGETS})
    model: str = field(default="classifier", metadata={"choices": MODEL_KINDS})
    arch: str = "efficientnet_lite0"
    init: str = field(default="random", metadata={"choices": ("imagenet-lite-port", "random")})
    size: int = field(default=128, metadata={"min": 16})
    center_crop: bool = True
    clahe: bool = False
    use_metadata: bool = field(default=True, metadata={"aliases": ("--metadata",)})
    mask_weight: float = field(default=0.5, metadata={"min": 0})
    loss: str = field(default="bce", metadata={"choices": tuple(LOSSES)})
    flood: float = field(default=0.0, metadata={"min": 0})
    optimizer: str = field(default="radam", metadata={"choices": ("radam", "adamw")})
    lr: float = field(default=1e-3, metadata={"gt": 0})
    weight_decay: float = field(default=1e-4, metadata={"min": 0})
    epochs: int = field(default=10, metadata={"min": 1})
    patience: int = field(default=5, metadata={"min": 0})
    max_minutes: float = field(default=0.0, metadata={"min": 0})
    batch_size: int = field(default=32, metadata={"min": 2, "why": "BatchNorm needs two images per step"})
    ema_decay: float = field(default=0.0, metadata={"aliases": ("--ema",), "min": 0, "lt": 1})
    balance: bool = True
    max_per_group: int = field(default=0, metadata={"min": 0})
    split: str = field(default="auto", metadata={"choices": SPLITS})
    n_splits: int = field(default=5, metadata={"min": 2})
    fold: int = field(default=0, metadata={"min": 0})
    dedupe: bool = True
    max_images: int = field(default=0, metadata={"min": 0})
    external: tuple[str, ...] = ()
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    drop_rate: float = field(default=0.2, metadata={"min": 0, "lt": 1})
    seed: int = field(default=0, metadata={"min": 0})
    device: str = field(default="auto", metadata={"choices": DEVICE_CHOICES})
    name: str = ""
    out: str = ""
    overwrite: bool = False
    runs_dir: str = "runs"
    recipe: str = ""
    init_from: str = ""
    command: str = field(default="", compare=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        check_config(self)
        plain_name("--name", self.name)
        if self.fold >= self.n_splits:
            raise ConfigError(f"--fold must be in 0..{self.n_splits - 1} (--n-splits {self.n_splits}), got {self.fold}.")


#: Named recipes: option values that ``--recipe NAME`` sets (explicit options still win), keyed by
#: ClsTrainConfig field (each is also the dest of a CLI option). ``source`` and ``note`` go to the card.
RECIPES: dict[str, dict[str, Any]] = {
    "seed001-inception-v3": {
        "source": "seed 001: binary skin-cancer Inception-v3 (HAM10000, 10,015 images; exported to run on a device)",
        "note": "The seed names the architecture, the binary cancer / not-cancer target and the data only. It "
                "fine-tuned ImageNet weights in TensorFlow; we have no offline Inception port, so init is random. "
                "Loss, optimiser and augmentations are not stated: lesion-lab's defaults apply. Dropout 0.2 is "
                "TF Inception-v3's keep_prob 0.8. Export for the device: lesion export NAME --format onnx.",
        "values": {"arch": "inception_v3", "init": "random", "size": 299, "target": "malignant", "loss": "bce",
                   "drop_rate": 0.2},
    },
    "seed003": {
        "source": "seed 003: multi-task melanoma ensemble (mask attention + metadata, K-fold members)",
        "note": "One member per fold of a leak-free K-fold grouped by lesion and stratified by the target "
                "(--fold 0..K-1; every image is held out by exactly one member, whose out-of-fold logits are kept "
                "in the card's extra.oof). Multi-task EfficientNet-Lite0 with the metadata encoder, ImageNet "
                "initialisation (offline port), centre crop, balanced resampling with at most two images per "
                "lesion per epoch, prior-initialised bias, RAdam with a cosine schedule, EMA of weights, early "
                "stopping on validation AUC. The paper's larger encoders and image sizes need a GPU.",
        "values": {"model": "multitask", "arch": "efficientnet_lite0", "init": "imagenet-lite-port", "size": 128,
                   "center_crop": True, "use_metadata": True, "mask_weight": 0.5, "loss": "bce",
                   "optimizer": "radam", "lr": 1e-3, "ema_decay": 0.99, "balance": True, "max_per_group": 2,
                   "split": "kfold", "n_splits": 5, "epochs": 16, "patience": 4},
    },
}


def recipe_values(name: str) -> dict[str, Any]:
    """The option values of a named recipe (:data:`RECIPES`). Raises ConfigError listing the recipes."""
    if name not in RECIPES:
        raise unknown_option("recipe", name, sorted(RECIPES))
    return dict(RECIPES[name]["values"])


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------
def _subsample_groups(records: list, max_images: int, seed: int) -> list:
    if max_images <= 0 or len(records) <= max_images:
        return records
    groups = groups_of(records)
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    keep, n = set(), 0
    for g in order:
        keep.add(g)
        n += int((groups == g).sum())
        if n >= max_images:
            break
    return [r for r, g in zip(records, groups) if g in keep]


@dataclass
class SplitData:
    train: list
    val: list
    info: dict[str, Any]


def split_records(dataset, cfg: ClsTrainConfig, log: Callable[[str], None] = lambda s: None) -> SplitData:
    """Labelled, de-duplicated records split into train / val as ``cfg.split`` says."""
    if cfg.split not in SPLITS:
        raise unknown_option("split", cfg.split, SPLITS)
    recs = [r for r in dataset.records if record_label(r, cfg.target) is not None]
    if not recs:
        raise DataError(f"No image of '{dataset.name}' has a label for target '{cfg.target}'.")
    info: dict[str, Any] = {"unlabelled_dropped": len(dataset.records) - len(recs)}
    recs = _subsample_groups(recs, cfg.max_images, cfg.seed)
    if cfg.dedupe:
        recs, dropped = drop_duplicates(recs)
        info["duplicates_dropped"] = dropped
        if dropped:
            log(f"dropped {len(dropped)} duplicate image files")
    has_column = all(str((r.meta or {}).get("split", "")).lower() in ("train", "val", "test") for r in recs) and \
        any(str(r.meta.get("split")).lower() == "val" for r in recs)
    method = cfg.split if cfg.split != "auto" else ("column" if has_column else "kfold")
    if method == "column":
        if not has_column:
            raise DataError("split 'column' needs a 'split' column with train/val values for every image.")
        train = [r for r in recs if str(r.meta["split"]).lower() == "train"]
        val = [r for r in recs if str(r.meta["split"]).lower() == "val"]
        info.update(method="column")
    else:
        if not 0 <= cfg.fold < cfg.n_splits:
            raise ConfigError(f"fold must be in 0..{cfg.n_splits - 1}, got {cfg.fold}.")
        y = make_targets(recs, cfg.target)
        folds = stratified_group_folds(y, groups_of(recs), cfg.n_splits, cfg.seed)
        train = [r for r, f in zip(recs, folds) if f != cfg.fold]
        val = [r for r, f in zip(recs, folds) if f == cfg.fold]
        info.update(method="stratified_group_kfold", n_splits=cfg.n_splits, fold=cfg.fold, seed=cfg.seed)
    info.update(n_train=len(train), n_val=len(val),
                n_groups_train=len(set(groups_of(train))), n_groups_val=len(set(groups_of(val))))
    if not train or not val:
        raise DataError(f"The split left {len(train)} training and {len(val)} validation images; need both.")
    return SplitData(train, val, info)


def preload(records: Sequence, prep: Preprocessing, with_masks: bool, progress: Progress | None = None):
    """Read, crop, resize (+CLAHE) every image once: uint8 ``[N, H, W, C]``, masks bool ``[N, H, W]`` or None."""
    images = np.zeros((len(records), prep.height, prep.width, prep.channels), np.uint8)
    masks = np.zeros((len(records), prep.height, prep.width), bool) if with_masks else None
    has = np.zeros(len(records), bool)
    for i, r in enumerate(records):
        img = read_image(r.image_path)
        if with_masks and r.mask_path is not None:
            images[i], masks[i] = prepare_image(img, prep, read_mask(r.mask_path, img.shape[:2]))
            has[i] = True
        else:
            images[i] = prepare_image(img, prep)
        if progress is not None:
            progress(i + 1, len(records))
    return images, masks, has


class _TorchData:
    """Map-style dataset over preloaded arrays (``torch.utils.data`` protocol)."""

    def __init__(self, images, y, meta, masks, has_mask, prep: Preprocessing, transform=None):
        self.images, self.y, self.meta, self.masks, self.has_mask = images, y, meta, masks, has_mask
        self.prep, self.transform = prep, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import torch

        img = self.images[i]
        mask = self.masks[i].astype(np.uint8) if self.masks is not None else np.zeros(img.shape[:2], np.uint8)
        if self.transform is not None:
            out = self.transform(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        x = torch.from_numpy(normalize(img, self.prep))
        return x, torch.as_tensor(self.y[i]), torch.from_numpy(self.meta[i]), \
            torch.from_numpy(mask[None].astype(np.float32)), bool(self.has_mask[i])


# ---------------------------------------------------------------------------------------------------------
# Model, evaluation
# ---------------------------------------------------------------------------------------------------------


def build_model(cfg: ClsTrainConfig, num_classes: int, prep: Preprocessing) -> tuple[Classifier, dict[str, Any]]:
    """The untrained :class:`~lesion.classify.classifier.Classifier` and its card ``model`` section."""
    if cfg.model not in MODEL_KINDS:
        raise unknown_option("model kind", cfg.model, MODEL_KINDS)
    common = dict(arch=cfg.arch, num_classes=num_classes, size=prep.size, mean=prep.mean, std=prep.std,
                  init=cfg.init, drop_rate=cfg.drop_rate)
    mcfg = ClsModelConfig(**common) if cfg.model == "classifier" else MultiTaskConfig(**common, use_metadata=cfg.use_metadata)
    return create_model(mcfg), asdict(mcfg)


def init_output_layer(model: Classifier, prior_bias: np.ndarray, weight_std: float = 0.01) -> None:
    """Start from the class prior: final-layer weights ~ N(0, ``weight_std``), bias = prior logit.

    Seed 003 sets the bias from the imbalance ratio; Lin et al. (focal loss) pair that with small final
    weights (σ = 0.01) so the first predictions really equal the prior instead of large random logits.
    Applies to timm's ``get_classifier()`` or, for a model with a mask branch, its 1x1 classifier and
    metadata head.
    """
    import torch

    net = model.net
    layers = [net.classifier] if model.has_mask else [net.get_classifier()]
    if getattr(net, "meta_head", None) is not None:
        layers.append(net.meta_head)
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0.0, weight_std)
        layers[0].bias.copy_(torch.from_numpy(prior_bias))


#: Split facts that must agree between a run and the checkpoint it continues from (else validation leaks).
SPLIT_KEYS = ("method", "n_splits", "fold", "seed", "n_train", "n_val", "n_groups_val")


def split_section(info: dict[str, Any]) -> Split:
    """The card's :class:`~lesion.card.Split` of :func:`split_records`' ``info``."""
    return Split(method=str(info["method"]), seed=int(info.get("seed", 0)), n_splits=info.get("n_splits"),
                 fold=info.get("fold"), n_train=info["n_train"], n_val=info["n_val"],
                 n_groups_train=info["n_groups_train"], n_groups_val=info["n_groups_val"],
                 notes={k: info[k] for k in ("unlabelled_dropped", "duplicates_dropped") if k in info})


def load_init_from(model: Classifier, cfg: ClsTrainConfig, split: Split, log: Callable[[str], None]) -> ModelCard:
    """Load ``cfg.init_from`` into ``model`` (continued training, e.g. progressive resizing); return its card.

    The checkpoint must be of the same model kind, architecture, target, metadata use and normalisation, and
    must have been trained on the same split (its held-out images are this run's validation images):
    continuing a model on images it validated on would make this run's validation AUC a leak.

    Raises:
        ConfigError: the checkpoint is of another kind, or was trained on another split.
        CheckpointError: it cannot be read or its tensors do not fit the model.
    """
    card = read_model_card(cfg.init_from, task=CLASSIFIER_TASKS)
    want = {"task": "multitask" if cfg.model == "multitask" else "classification", "arch": cfg.arch,
            "target": cfg.target, "uses_metadata": bool(cfg.model == "multitask" and cfg.use_metadata)}
    have = {"task": card.task, "arch": card.arch, "target": card.target, "uses_metadata": card.uses_metadata}
    wrong = [f"{key} {have[key]!r} (this run: {val!r})" for key, val in want.items() if have[key] != val]
    lite = cfg.init == "imagenet-lite-port" and cfg.arch in LITE_PORTS
    mean = [round(v, 4) for v in (LITE_MEAN if lite else IMAGENET_MEAN)]
    if [round(float(v), 4) for v in card.preprocessing.mean] != mean:
        wrong.append(f"normalisation mean {list(card.preprocessing.mean)} (this run: {mean}; match --init)")
    if wrong:
        raise ConfigError(f"--init-from {cfg.init_from} does not fit this run: " + "; ".join(wrong) + ".")
    moved = [f"{key} {getattr(card.split, key)!r} vs {getattr(split, key)!r}" for key in SPLIT_KEYS
             if None not in (getattr(card.split, key), getattr(split, key))
             and getattr(card.split, key) != getattr(split, key)]
    if moved:
        raise ConfigError(f"--init-from {cfg.init_from} was trained on another split ({'; '.join(moved)}): its "
                          "training images may be in this run's validation set. Use the same --data, --seed, "
                          "--fold and --n-splits.")
    net, card = load_model(cfg.init_from, task=want["task"])
    load_strict(model, net.state_dict(), what=f"--init-from {cfg.init_from}")
    log(f"initialised from {card.name} ({card.training.epochs or '?'} epochs at {card.preprocessing.size} px)")
    return card


def evaluate_model(model: Classifier, data: _TorchData, device: str, batch_size: int = 64) -> dict[str, Any]:
    """Logits ``[N, K]``, mean loss, ROC-AUC and (a model with a mask, on images with one) mean Dice of ``data``
    (no augmentation)."""
    import torch

    model.eval()
    logits, dices = [], []
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            batch = [data[i] for i in range(s, min(s + batch_size, len(data)))]
            x = batch_to(torch.stack([b[0] for b in batch]), device)
            meta = torch.stack([b[2] for b in batch]).to(device)
            out = model(x, meta)
            logits.append(out.logits.float().cpu())
            if out.mask_logits is not None:
                for b, ml in zip(batch, out.mask_logits.cpu()):
                    if b[4]:
                        p, t = (ml[0] > 0).numpy(), b[3][0].numpy() > 0.5
                        inter, tot = (p & t).sum(), p.sum() + t.sum()
                        dices.append(1.0 if tot == 0 else 2.0 * inter / tot)
    z = torch.cat(logits)
    y = torch.as_tensor(data.y)
    res = {"logits": z.numpy(), "val_loss": float(bce_loss(z, y)), "val_auc": logits_auc(z.numpy(), data.y)}
    if dices:
        res["val_mask_dice"] = float(np.mean(dices))
    return res


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


class ClsRecipe:
    """One epoch of classification training (balanced resampling, optional mask loss) and one validation."""

    def __init__(self, cfg: ClsTrainConfig, model: Classifier, device: str, train: _TorchData, val: _TorchData,
                 groups: np.ndarray, k: int, with_masks: bool):
        self.cfg, self.model, self.device, self.train, self.val = cfg, model, device, train, val
        self.groups, self.k, self.with_masks = groups, k, with_masks
        self.loss_fn = make_loss(cfg.loss, flood_level=cfg.flood)
        self.optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)
        n = len(epoch_indices(train.y, groups, np.random.default_rng(0), self._balance, cfg.max_per_group))
        if n < 2:
            raise DataError(f"An epoch would draw {n} training image(s); a step needs two (BatchNorm), so nothing "
                            "would be learnt. Use more images (or --no-balance / --max-per-group 0).")
        self.steps_per_epoch = max(1, -(-n // cfg.batch_size))
        self.sched = cosine_schedule(self.optimizer, cfg.epochs * self.steps_per_epoch,
                                     warmup_steps=min(self.steps_per_epoch, 50))

    @property
    def _balance(self) -> bool:
        return self.cfg.balance and self.k == 1

    def train_epoch(self, epoch: int, after_step: Callable[[], None]) -> dict[str, float]:
        import torch

        cfg, device = self.cfg, self.device
        self.model.train()
        idx = epoch_indices(self.train.y, self.groups, self.rng, self._balance, cfg.max_per_group)
        tot, n = 0.0, 0
        for s in range(0, len(idx), cfg.batch_size):
            bidx = idx[s : s + cfg.batch_size]
            if len(bidx) < 2:  # BatchNorm needs two samples
                continue
            batch = [self.train[int(i)] for i in bidx]
            x = batch_to(torch.stack([b[0] for b in batch]), device)
            y = torch.stack([b[1] for b in batch]).to(device)
            meta = torch.stack([b[2] for b in batch]).to(device)
            out = self.model(x, meta)
            loss = self.loss_fn(out.logits, y)
            if self.with_masks:
                m = torch.stack([b[3] for b in batch]).to(device)
                has = torch.tensor([b[4] for b in batch], device=device)
                loss = loss + cfg.mask_weight * mask_loss(out.mask_logits, m, has)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.sched.step()
            after_step()
            tot += float(loss.detach()) * len(bidx)
            n += len(bidx)
        return {"train_loss": tot / max(n, 1), "train_images": int(n)}

    def validate(self, model: Classifier) -> dict[str, float]:
        ev = evaluate_model(model, self.val, self.device)
        return {k: v for k, v in ev.items() if k != "logits"}


def external_metric(model: Classifier, card: ModelCard, ds, device: str) -> tuple[Metric | None, int, str]:
    """AUC of the trained model on a data set it never saw (no TTA; dx7: the melanoma column).

    Returns:
        ``(metric or None when the labels hold one class, images scored, note)``.
    """
    target = "melanoma" if card.target == "dx7" else card.target
    recs = [r for r in ds.records if record_label(r, target) is not None]
    if not recs:
        return None, 0, f"{ds.name}: no labels for '{target}'"
    y = make_targets(recs, target)
    # no TTA: the card's external figure is the plain model's (the same as its validation AUC, also without TTA)
    res = predict([(model, card)], recs, tta="none", merge="mean_prob", device=device)
    score = res.probs[:, 0] if res.probs.shape[1] == 1 else res.probs[:, list(card.classes).index("mel")]
    auc, lo, hi = roc_auc_ci(y, score, n_boot=500)
    if not np.isfinite(auc):  # the one-class rule of lesion.metrics
        return None, len(recs), f"{ds.name}: one class only for '{target}'"
    return Metric("auc", float(auc), ds.name, "external", n=len(recs), positives=int(y.sum()), ci=(lo, hi)), len(recs), ""


def train_classifier(cfg: ClsTrainConfig, progress: Progress | None = None, dataset=None,
                     log: Callable[[str], None] | None = None) -> ModelCard:
    """Train, validate every epoch, keep the best (EMA) weights, save checkpoint + card.

    Args:
        cfg: the run (its ranges are checked when it is made).
        progress: ``progress(steps_done, total_steps)`` over the whole run (:func:`lesion.train.loop.fit`).
        dataset: an already loaded :class:`lesion.data.records.Dataset` (else ``cfg.data`` is opened).
        log: receives one line per epoch (CLI: printed).

    Returns:
        the card (as written next to the weights, with ``path``; by default in the run's own folder
        ``<runs_dir>/cls/<name>-<UTC time>/``); reload the model with :func:`lesion.zoo.load_model`.

    Raises:
        ConfigError: bad option, an existing checkpoint without ``overwrite`` or a shipped one (before any image
            is read); DataError: unreadable data, no labels, a split or an epoch without images to learn from.
    """
    reserved: list[Destination] = []
    try:
        return _train_classifier(cfg, progress, dataset, log, reserved)
    except BaseException:
        for d in reserved:
            d.discard_if_empty()
        raise


def _train_classifier(cfg: ClsTrainConfig, progress: Progress | None, dataset, log: Callable[[str], None] | None,
                      reserved: list[Destination]) -> ModelCard:
    log = log or (lambda s: None)
    if cfg.target not in TARGETS:
        raise unknown_option("target", cfg.target, TARGETS)
    if cfg.model not in MODEL_KINDS:
        raise unknown_option("model kind", cfg.model, MODEL_KINDS)
    make_loss(cfg.loss, flood_level=cfg.flood)  # fail fast on a bad name
    if cfg.name or out_names_file(cfg.out):  # the destination does not depend on the data: check it first
        reserved.append(plan_destination("cls", cfg.name or "model", cfg.out, cfg.runs_dir, cfg.overwrite))
    else:
        check_paths(cfg.out, cfg.runs_dir)  # the rest once the data's domain gives the default name
    timer = Timer()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dataset = dataset if dataset is not None else open_data(cfg.data)
    name_default = cfg.name or f"{dataset.domain}_{cfg.model}_{cfg.arch}_{cfg.loss}"
    if not reserved:
        reserved.append(plan_destination("cls", name_default, cfg.out, cfg.runs_dir, cfg.overwrite))
    dest = reserved[0]
    externals = [open_data(s) for s in cfg.external]
    split = split_records(dataset, cfg, log)
    split_card = split_section(split.info)
    classes = classes_for_target(cfg.target)
    k = len(classes)
    lite = cfg.init == "imagenet-lite-port" and cfg.arch in LITE_PORTS
    prep = Preprocessing(cfg.size, LITE_MEAN if lite else IMAGENET_MEAN, LITE_STD if lite else IMAGENET_STD,
                         cfg.center_crop, cfg.clahe)
    multitask = cfg.model == "multitask"
    with_masks = multitask and cfg.mask_weight > 0 and dataset.has_masks
    log(f"{split.info['n_train']} training / {split.info['n_val']} validation images ({split.info['method']})")
    arrays = {}
    for part, recs in (("train", split.train), ("val", split.val)):
        imgs, masks, has = preload(recs, prep, with_masks)
        arrays[part] = _TorchData(imgs, make_targets(recs, cfg.target), encode_records(recs), masks, has, prep)
    arrays["train"].transform = build_train_transform(cfg.augment)

    model, model_section = build_model(cfg, k, prep)
    init_card = load_init_from(model, cfg, split_card, log) if cfg.init_from else None
    if init_card is None:
        init_output_layer(model, prior_logit(arrays["train"].y, k))
    model.to(device)
    clock = Timer()
    recipe = ClsRecipe(cfg, model, device, arrays["train"], arrays["val"], groups_of(split.train), k, with_masks)

    y_val = arrays["val"].y
    extra: dict[str, Any] = {"ema_decay": cfg.ema_decay, "flood": cfg.flood}
    if init_card is not None:
        extra["init_from"] = {"name": init_card.name, "init": init_card.init, "epochs": init_card.training.epochs,
                              "size": init_card.preprocessing.size, "sha256": init_card.sha256}
    named = RECIPES.get(cfg.recipe, {})
    base = ModelCard(
        name=dest.name or name_default,
        task="multitask" if multitask else "classification",
        domain=dataset.domain, arch=cfg.arch, encoder=cfg.arch,
        init=f"continued from {init_card.name} ({init_card.init})" if init_card is not None else cfg.init,
        classes=tuple(classes), target=cfg.target, model=model_section, preprocessing=prep,
        data=data_sources([(dataset, TRAIN_VAL, {"source": cfg.data, "n_train": len(split.train),
                                                  "n_val": len(split.val), "n": len(dataset.records)})]
                          + [(ds, EXTERNAL, {"source": s}) for s, ds in zip(cfg.external, externals)]),
        split=split_card,
        training=training_section(cfg, cfg.loss, cfg.optimizer, init_from=init_card.name if init_card else None,
                                  recipe=cfg.recipe),
        provenance=run_provenance(cfg.command or command_line("lesion train cls", None, cfg), device),
        extra=extra,
        notes=" ".join(str(named[k_]) for k_ in ("source", "note") if k_ in named),
    )
    result = fit(recipe, LoopConfig(epochs=cfg.epochs, monitor="val_auc", patience=cfg.patience,
                                    max_minutes=cfg.max_minutes, ema_decay=cfg.ema_decay),
                 clock=clock, run_dir=dest.run_dir, card=base, progress=progress, log=log)

    # ---- metrics of the best epoch (the model now holds its weights)
    best = result.best_row
    pooled = base.pooled_val_data
    positives = int(np.sum(y_val)) if k == 1 else None
    metrics: list[Metric] = []
    val_logits = evaluate_model(model, arrays["val"], device)["logits"]
    oof = None
    if split.info.get("method") == "stratified_group_kfold":
        # out-of-fold predictions of this member (no TTA): with one member per fold, every image's held-out score
        oof = {"ids": [r.id for r in split.val],
                        "logits": np.round(val_logits.astype(np.float64), 5).tolist()}
    if np.isfinite(best["val_auc"]):
        ci = None
        if k == 1:
            _, lo, hi = roc_auc_ci(y_val, val_logits[:, 0], n_boot=500)
            ci = (lo, hi) if np.isfinite(lo) else None
        metrics.append(Metric("auc", float(best["val_auc"]), pooled, "val", n=len(y_val), positives=positives, ci=ci))
    metrics.append(Metric("loss", float(best["val_loss"]), pooled, "val", n=len(y_val)))
    if "val_mask_dice" in best:
        metrics.append(Metric("mask_dice", float(best["val_mask_dice"]), pooled, "val",
                              n=int(arrays["val"].has_mask.sum())))
    data = list(base.data)
    for i, ds in enumerate(externals):
        m, n, note = external_metric(model, base, ds, device)
        data[1 + i] = replace(data[1 + i], n=n)
        if m is not None:
            metrics.append(m)
            log(f"external {ds.name}: {m.describe()}")
        else:
            log(f"external {note}")
    done = base.replace(data=tuple(data), extra={**base.extra, **({"oof": oof} if oof else {})})
    return dest.save(model, final_card(done, result, metrics, timer()), log)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = OptionParser(prog="lesion train cls", description=__doc__.split("\n\n")[0])
    add_config_options(p, ClsTrainConfig)
    add_common_options(p, AUG_NAMES)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``lesion train cls`` options; a ``--recipe`` becomes the defaults, so explicit options win."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    a = p.parse_args(argv)
    if a.recipe:
        p.set_defaults(**recipe_values(a.recipe))
        a = p.parse_args(argv)
    a.argv = argv
    return a


def config_from_args(a: argparse.Namespace) -> ClsTrainConfig:
    """The run a parsed ``lesion train cls`` command line describes (``--no-aug [LIST]`` -> :class:`AugmentConfig`)."""
    aug = replace(AugmentConfig(), **{n: False for n in switched_off(a.no_aug, AUG_NAMES)})
    return config_from_namespace(ClsTrainConfig, a, augment=aug,
                                 command=command_line("lesion train cls", getattr(a, "argv", None), None))


def config_from_argv(argv: Sequence[str]) -> tuple[ClsTrainConfig, int]:
    """``(config, torch threads)`` of a ``lesion train cls`` command line."""
    a = parse_args(argv)
    return config_from_args(a), a.threads


def main(argv: list[str] | None = None) -> int:
    """``lesion train cls``: one line per epoch, a progress bar over the run's steps, and last a JSON line with the card's summary."""
    return run_command(train_classifier, config_from_argv, argv)
