"""Train a melanoma / malignancy / HAM7 classifier or the multi-task network: ``lesion train cls``.

Recipe (seed 003): leak-free stratified group split (:mod:`lesion.train.splits`), centre crop (+ optional
CLAHE), albumentations augmentations (:mod:`lesion.train.cls_augment`), per-epoch balanced resampling of the
majority class with an optional cap of images per patient, last-layer bias = prior logit, RAdam or AdamW
with a cosine schedule, EMA of weights, BCE / focal / OHEM (+ flooding) losses, early stopping on validation
ROC-AUC. The best (EMA) weights are saved with :func:`lesion.weights.save_checkpoint` and a card; the
per-epoch history goes to the card and to a CSV file.

Example::

    lesion train cls --data demo:derm --arch resnet10t --size 64 --epochs 3 --out runs/demo_cls
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.classify.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_PORTS,
    LITE_STD,
    TARGETS,
    Preprocessing,
    classes_for_target,
    make_targets,
    normalize,
    prepare_image,
    record_label,
)
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.train.cls_augment import AugmentConfig

MODEL_KINDS = ("classifier", "multitask")
SPLITS = ("auto", "kfold", "column")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ClsTrainConfig:
    """One classification training run."""

    data: str = "demo:derm"  # data folder (any layout lesion.data.load_dataset knows) or 'demo:derm'
    target: str = "melanoma"  # 'melanoma' (vs rest), 'malignant' (vs benign) or 'dx7' (HAM's 7 classes)
    model: str = "classifier"  # 'classifier' (plain timm) or 'multitask' (mask attention + metadata)
    arch: str = "efficientnet_lite0"  # timm name
    init: str = "random"  # 'imagenet-lite-port' (efficientnet_lite0/1/2) or 'random'
    size: int = 128  # input side, pixels
    center_crop: bool = True  # crop the central square first (seed 003)
    clahe: bool = False  # CLAHE after resizing (seed 003)
    use_metadata: bool = True  # multitask only: metadata encoder (age, sex, site)
    mask_weight: float = 0.5  # multitask only: weight of BCE+Dice on masks where truth exists (0 = unsupervised)
    loss: str = "bce"  # 'bce', 'focal' (α=0.25, γ=2) or 'ohem'
    flood: float = 0.0  # flooding level b (0 = off)
    optimizer: str = "radam"  # 'radam' or 'adamw'
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 10  # maximum epochs
    patience: int = 5  # early stopping on val AUC (0 = off)
    max_minutes: float = 0.0  # stop after the epoch that passes this wall time (0 = no limit)
    batch_size: int = 32
    ema_decay: float = 0.0  # EMA of weights (0 = off; 0.99-0.999 typical)
    balance: bool = True  # binary targets: downsample the majority class each epoch
    max_per_group: int = 0  # cap images per patient/lesion per epoch (0 = no cap)
    split: str = "auto"  # 'auto' (use a train/val 'split' column when present, else K-fold), 'kfold', 'column'
    n_splits: int = 5  # K of the K-fold split
    fold: int = 0  # which fold is held out for validation
    dedupe: bool = True  # drop byte-identical image files before splitting
    max_images: int = 0  # use at most this many images (whole groups, seeded; 0 = all) for quick runs
    external: str | None = None  # external validation data (e.g. ../shared/data/PH2), scored after training
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    drop_rate: float = 0.2
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # checkpoint stem (weights/NAME -> NAME.safetensors + NAME.json); None = not saved
    overwrite: bool = False
    log_csv: str | None = None  # per-epoch CSV (default: runs/cls/<name>/history.csv when out is set)
    recipe: str | None = None  # named recipe (RECIPES) the run started from; explicit options override its values
    init_from: str = ""  # checkpoint (name or path) to continue from, e.g. at a larger --size (progressive resizing)


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
}


def recipe_values(name: str) -> dict[str, Any]:
    """The option values of a named recipe (:data:`RECIPES`). Raises ConfigError listing the recipes."""
    if name not in RECIPES:
        raise unknown_option("recipe", name, sorted(RECIPES))
    return dict(RECIPES[name]["values"])


def recipe_config(name: str, **overrides: Any) -> ClsTrainConfig:
    """``ClsTrainConfig`` of a named recipe, with ``overrides`` (any field) applied on top."""
    return replace(ClsTrainConfig(), **{**recipe_values(name), "recipe": name, **overrides})


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def resolve_data(spec: str):
    """``'demo:derm'`` -> the demo set; otherwise :func:`lesion.data.load_dataset`."""
    from lesion.data import load_dataset

    if spec.startswith("demo:"):
        from lesion.data.demo import demo_root

        return load_dataset(demo_root(spec.split(":", 1)[1]))
    return load_dataset(spec)


def licences_for(dataset) -> list[str]:
    """Licence lines for a card, from the data set's layout / name."""
    name = f"{dataset.layout} {dataset.name}".lower()
    if getattr(dataset, "synthetic", False):
        return ["synthetic demo data generated by lesion-lab (no third-party licence)"]
    if "ham" in name:
        return ["HAM10000: CC BY-NC-SA 4.0 — non-commercial use only; weights trained on it inherit that restriction"]
    if "ph2" in name:
        return ["PH2: distributed for research and benchmarking; licence not stated — check before redistributing"]
    if "isic" in name:
        return ["ISIC archive images: CC BY-NC 4.0 / CC-0 per image — check the archive's terms"]
    return [f"{dataset.name}: licence unknown — check the data set's terms"]


def _subsample_groups(records: list, max_images: int, seed: int) -> list:
    if max_images <= 0 or len(records) <= max_images:
        return records
    from lesion.train.splits import groups_of

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
    from lesion.train.splits import drop_duplicates, groups_of, stratified_group_folds

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
    """Read, crop, resize (+CLAHE) every image once: uint8 ``[N, S, S, 3]``, masks bool ``[N, S, S]`` or None."""
    from lesion.data.io import read_image, read_mask

    images = np.zeros((len(records), prep.size, prep.size, 3), np.uint8)
    masks = np.zeros((len(records), prep.size, prep.size), bool) if with_masks else None
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


def build_model(cfg: ClsTrainConfig, num_classes: int, prep: Preprocessing):
    """The untrained model and its card ``model`` section."""
    if cfg.model not in MODEL_KINDS:
        raise unknown_option("model kind", cfg.model, MODEL_KINDS)
    common = dict(arch=cfg.arch, num_classes=num_classes, size=prep.size, mean=prep.mean, std=prep.std,
                  init=cfg.init, drop_rate=cfg.drop_rate)
    if cfg.model == "classifier":
        from lesion.classify.models import ClsModelConfig, create_classifier

        mcfg = ClsModelConfig(**common)
        return create_classifier(mcfg), asdict(mcfg)
    from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet

    mcfg = MultiTaskConfig(**common, use_metadata=cfg.use_metadata)
    return MultiTaskNet(mcfg), asdict(mcfg)


def init_output_layer(model, prior_bias: np.ndarray, weight_std: float = 0.01) -> None:
    """Start from the class prior: final-layer weights ~ N(0, ``weight_std``), bias = prior logit.

    Seed 003 sets the bias from the imbalance ratio; Lin et al. (focal loss) pair that with small final
    weights (σ = 0.01) so the first predictions really equal the prior instead of large random logits.
    Applies to timm's ``get_classifier()`` or, for the multi-task net, its 1x1 classifier and metadata head.
    """
    import torch

    layers = [model.classifier] if hasattr(model, "output_bias") else [model.get_classifier()]
    if getattr(model, "meta_head", None) is not None:
        layers.append(model.meta_head)
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0.0, weight_std)
        layers[0].bias.copy_(torch.from_numpy(prior_bias))


#: Split facts that must agree between a run and the checkpoint it continues from (else validation leaks).
SPLIT_KEYS = ("method", "n_splits", "fold", "seed", "n_train", "n_val", "n_groups_val")


def load_init_from(model, cfg: ClsTrainConfig, split_info: dict[str, Any], log: Callable[[str], None]) -> dict:
    """Load ``cfg.init_from`` into ``model`` (continued training, e.g. progressive resizing); return its card.

    The checkpoint must be of the same model kind, architecture, target, metadata use and normalisation, and
    must have been trained on the same split (its held-out images are this run's validation images):
    continuing a model on images it validated on would make this run's validation AUC a leak.

    Raises:
        ConfigError: the checkpoint is of another kind, or was trained on another split.
        CheckpointError: it cannot be read or its tensors do not fit the model.
    """
    from lesion.weights import load_state, load_strict

    state, card = load_state(cfg.init_from)
    want = {"task": "multitask" if cfg.model == "multitask" else "classification", "arch": cfg.arch,
            "target": cfg.target, "uses_metadata": bool(cfg.model == "multitask" and cfg.use_metadata)}
    wrong = [f"{key} {card.get(key)!r} (this run: {val!r})" for key, val in want.items() if card.get(key) != val]
    prep = card.get("preprocessing") or {}
    lite = cfg.init == "imagenet-lite-port" and cfg.arch in LITE_PORTS
    mean = list(LITE_MEAN if lite else IMAGENET_MEAN)
    if prep.get("mean") is not None and [round(float(v), 4) for v in prep["mean"]] != [round(v, 4) for v in mean]:
        wrong.append(f"normalisation mean {prep['mean']} (this run: {mean}; match --init)")
    if wrong:
        raise ConfigError(f"--init-from {cfg.init_from} does not fit this run: " + "; ".join(wrong) + ".")
    theirs = card.get("split") or {}
    moved = [f"{key} {theirs.get(key)!r} vs {split_info.get(key)!r}" for key in SPLIT_KEYS
             if key in theirs and key in split_info and theirs[key] != split_info[key]]
    if moved:
        raise ConfigError(f"--init-from {cfg.init_from} was trained on another split ({'; '.join(moved)}): its "
                          "training images may be in this run's validation set. Use the same --data, --seed, "
                          "--fold and --n-splits.")
    load_strict(model, state, what=f"--init-from {cfg.init_from}")
    log(f"initialised from {card.get('name', cfg.init_from)} ({card.get('epochs', '?')} epochs at "
        f"{prep.get('size', '?')} px)")
    return card


def _forward(model, x, meta):
    from lesion.classify.multitask import MultiTaskNet

    if isinstance(model, MultiTaskNet):
        return model(x, meta)
    return {"logits": model(x)}


def evaluate_model(model, data: _TorchData, device: str, batch_size: int = 64) -> dict[str, Any]:
    """Logits ``[N, K]``, mean loss, ROC-AUC and (multi-task with masks) mean Dice of ``data`` (no augmentation)."""
    import torch

    from lesion.train.cls_losses import bce_loss

    model.eval()
    logits, dices = [], []
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            batch = [data[i] for i in range(s, min(s + batch_size, len(data)))]
            x = torch.stack([b[0] for b in batch]).to(device)
            meta = torch.stack([b[2] for b in batch]).to(device)
            out = _forward(model, x, meta)
            logits.append(out["logits"].float().cpu())
            if "mask_logits" in out:
                for b, ml in zip(batch, out["mask_logits"].cpu()):
                    if b[4]:
                        p, t = (ml[0] > 0).numpy(), b[3][0].numpy() > 0.5
                        inter, tot = (p & t).sum(), p.sum() + t.sum()
                        dices.append(1.0 if tot == 0 else 2.0 * inter / tot)
    z = torch.cat(logits)
    y = torch.as_tensor(data.y)
    res = {"logits": z.numpy(), "val_loss": float(bce_loss(z, y)), "val_auc": auc_of(z.numpy(), data.y)}
    if dices:
        res["val_mask_dice"] = float(np.mean(dices))
    return res


def auc_of(logits: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC: binary on the single logit; multi-class: macro one-vs-rest over the classes present."""
    from sklearn.metrics import roc_auc_score

    from lesion.infer.ensemble import activate

    y = np.asarray(y)
    if logits.shape[1] == 1:
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(y, logits[:, 0]))
    p = activate(logits)
    present = [k for k in range(p.shape[1]) if 0 < (y == k).sum() < len(y)]
    if not present:
        return float("nan")
    return float(np.mean([roc_auc_score(y == k, p[:, k]) for k in present]))


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def train_classifier(cfg: ClsTrainConfig, progress: Progress | None = None, dataset=None,
                     log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, validate every epoch, keep the best (EMA) weights, save checkpoint + card.

    Args:
        cfg: the run.
        progress: ``progress(epochs_done, max_epochs)``.
        dataset: an already loaded :class:`lesion.data.records.Dataset` (else ``cfg.data`` is loaded).
        log: receives one line per epoch (CLI: printed).

    Returns:
        the card (also written next to the weights when ``cfg.out`` is set); ``card["model_object"]`` is
        not included — reload with :func:`lesion.classify.models.load_classifier`.
    """
    import torch

    from lesion.classify.metadata import encode_records
    from lesion.device import describe_device, pick_device
    from lesion.train.cls_augment import build_train_transform
    from lesion.train.cls_losses import make_loss, mask_loss
    from lesion.train.common import EarlyStopping, Timer, cosine_schedule, make_optimizer, seed_everything
    from lesion.train.ema import make_ema
    from lesion.train.splits import epoch_indices, groups_of, prior_logit

    log = log or (lambda s: None)
    if cfg.target not in TARGETS:
        raise unknown_option("target", cfg.target, TARGETS)
    if cfg.model not in MODEL_KINDS:
        raise unknown_option("model kind", cfg.model, MODEL_KINDS)
    loss_fn = make_loss(cfg.loss, flood_level=cfg.flood)
    timer = Timer()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dataset = dataset if dataset is not None else resolve_data(cfg.data)
    split = split_records(dataset, cfg, log)
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
    y_train, g_train = arrays["train"].y, groups_of(split.train)

    model, model_section = build_model(cfg, k, prep)
    init_from_card = load_init_from(model, cfg, split.info, log) if cfg.init_from else None
    if init_from_card is None:
        init_output_layer(model, prior_logit(y_train, k))
    model.to(device)
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = max(1, -(-len(epoch_indices(y_train, g_train, np.random.default_rng(0), cfg.balance and k == 1,
                                                  cfg.max_per_group)) // cfg.batch_size))
    sched = cosine_schedule(opt, cfg.epochs * steps_per_epoch, warmup_steps=min(steps_per_epoch, 50))
    ema = make_ema(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, Any]] = []
    best_state, step = None, 0
    csv_path = Path(cfg.log_csv) if cfg.log_csv else (
        Path("runs") / "cls" / Path(cfg.out).name / "history.csv" if cfg.out else None)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        idx = epoch_indices(y_train, g_train, rng, cfg.balance and k == 1, cfg.max_per_group)
        tot, n = 0.0, 0
        for s in range(0, len(idx), cfg.batch_size):
            bidx = idx[s : s + cfg.batch_size]
            if len(bidx) < 2:  # BatchNorm needs two samples
                continue
            batch = [arrays["train"][int(i)] for i in bidx]
            x = torch.stack([b[0] for b in batch]).to(device)
            y = torch.stack([b[1] for b in batch]).to(device)
            meta = torch.stack([b[2] for b in batch]).to(device)
            out = _forward(model, x, meta)
            loss = loss_fn(out["logits"], y)
            if with_masks:
                m = torch.stack([b[3] for b in batch]).to(device)
                has = torch.tensor([b[4] for b in batch], device=device)
                loss = loss + cfg.mask_weight * mask_loss(out["mask_logits"], m, has)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            tot += float(loss.detach()) * len(bidx)
            n += len(bidx)
        eval_model = ema.module if ema is not None else model
        ev = evaluate_model(eval_model, arrays["val"], device)
        row = {"epoch": epoch, "train_loss": tot / max(n, 1), "val_loss": ev["val_loss"], "val_auc": ev["val_auc"],
               "lr": opt.param_groups[0]["lr"], "train_images": int(n), "time_s": round(timer(), 2)}
        if "val_mask_dice" in ev:
            row["val_mask_dice"] = ev["val_mask_dice"]
        history.append(row)
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(history[-1].keys()) + [
                    c for c in ("val_mask_dice",) if c not in history[-1]])
                w.writeheader()
                w.writerows(history)
        log(" ".join(f"{k_}={v:.4f}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()))
        score = ev["val_auc"] if np.isfinite(ev["val_auc"]) else -ev["val_loss"]
        if stopper.step(score, epoch):
            best_state = {k_: v.detach().cpu().clone() for k_, v in eval_model.state_dict().items()}
        if progress is not None:
            progress(epoch, cfg.epochs)
        if stopper.should_stop:
            log(f"early stop: no val AUC gain for {cfg.patience} epochs")
            break
        if cfg.max_minutes > 0 and timer() > 60 * cfg.max_minutes:
            log(f"time limit: {cfg.max_minutes} min reached after epoch {epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    best = history[stopper.best_epoch - 1]
    metrics: dict[str, Any] = {"val_auc": best["val_auc"], "val_loss": best["val_loss"], "best_epoch": stopper.best_epoch}
    if "val_mask_dice" in best:
        metrics["val_mask_dice"] = best["val_mask_dice"]
    if k == 1 and split.val:
        from lesion.metrics import roc_auc_ci

        z = evaluate_model(model, arrays["val"], device)["logits"][:, 0]
        try:
            _, lo, hi = roc_auc_ci(arrays["val"].y, z, n_boot=500)
            metrics["val_auc_ci"] = [lo, hi]
        except DataError:
            pass
    name = Path(cfg.out).name if cfg.out else f"{dataset.domain}_{cfg.model}_{cfg.arch}_{cfg.loss}"
    card: dict[str, Any] = {
        "name": name,
        "task": "multitask" if multitask else "classification",
        "domain": dataset.domain,
        "classes": list(classes),
        "target": cfg.target,
        "arch": cfg.arch,
        "encoder": cfg.arch,
        "init": cfg.init,
        "model": model_section,
        "uses_metadata": bool(multitask and cfg.use_metadata),
        "preprocessing": prep.to_dict(),
        "fold": split.info.get("fold"),
        "split": split.info,
        "loss": cfg.loss,
        "flood": cfg.flood,
        "optimizer": cfg.optimizer,
        "ema_decay": cfg.ema_decay,
        "epochs": len(history),
        "wall_time_s": round(timer(), 1),
        "device": describe_device(device),
        "metrics": metrics,
        "data": {"name": dataset.name, "layout": dataset.layout, "root": str(dataset.root),
                 "n_images": len(dataset.records), "synthetic": bool(dataset.synthetic)},
        "licences": licences_for(dataset),
        "history": history,
        "train_config": _jsonable(asdict(cfg)),
        "recipe": None if not cfg.recipe else {"name": cfg.recipe, **RECIPES.get(cfg.recipe, {})},
    }
    if init_from_card is not None:
        card["init"] = f"continued from {init_from_card.get('name', cfg.init_from)} ({init_from_card.get('init')})"
        card["init_from"] = {key: init_from_card.get(key) for key in
                             ("name", "init", "epochs", "wall_time_s", "device", "preprocessing", "metrics")}
    if cfg.external:
        card["metrics"]["external"] = external_validation(model, card, cfg.external, device)
        card["licences"] = card["licences"] + [f"external validation only: {card['metrics']['external'].get('data')}"]
    if cfg.out:
        from lesion.weights import save_checkpoint

        path = save_checkpoint(model, cfg.out, card, overwrite=cfg.overwrite)
        card["path"] = str(path)
    if csv_path is not None:
        card["history_csv"] = str(csv_path)
    return card


def external_validation(model, card: dict, spec: str, device: str) -> dict[str, Any]:
    """Score the trained model on another data set (no TTA): AUC for the card's target (dx7: melanoma column)."""
    from lesion.infer.engine import predict

    ds = resolve_data(spec)
    target = "melanoma" if card["target"] == "dx7" else card["target"]
    recs = [r for r in ds.records if record_label(r, target) is not None]
    if not recs:
        return {"data": ds.name, "error": f"no labels for '{target}'"}
    y = make_targets(recs, target)
    res = predict([(model, card)], recs, tta="none", merge="mean_prob", device=device)
    score = res.probs[:, 0] if res.probs.shape[1] == 1 else res.probs[:, list(card["classes"]).index("mel")]
    out: dict[str, Any] = {"data": ds.name, "n": len(recs), "target": target, "positives": int(y.sum())}
    if 0 < y.sum() < len(y):
        from lesion.metrics import roc_auc_ci

        auc, lo, hi = roc_auc_ci(y, score, n_boot=500)
        out.update(auc=auc, auc_ci=[lo, hi])
    return out


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = ClsTrainConfig()
    p = argparse.ArgumentParser(prog="lesion train cls", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=d.data, help="data folder or demo:derm (default %(default)s)")
    p.add_argument("--target", default=d.target, choices=TARGETS)
    p.add_argument("--model", default=d.model, choices=MODEL_KINDS)
    p.add_argument("--arch", default=d.arch, help="timm model name (default %(default)s)")
    p.add_argument("--init", default=d.init, choices=("imagenet-lite-port", "random"))
    p.add_argument("--size", type=int, default=d.size)
    p.add_argument("--no-center-crop", action="store_true")
    p.add_argument("--clahe", action="store_true")
    p.add_argument("--no-metadata", action="store_true", help="multitask: no metadata encoder")
    p.add_argument("--mask-weight", type=float, default=d.mask_weight)
    p.add_argument("--loss", default=d.loss, choices=("bce", "focal", "ohem"))
    p.add_argument("--flood", type=float, default=d.flood)
    p.add_argument("--optimizer", default=d.optimizer, choices=("radam", "adamw"))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="wall-time limit (0 = none)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay (0 = off)")
    p.add_argument("--no-balance", action="store_true")
    p.add_argument("--max-per-group", type=int, default=d.max_per_group)
    p.add_argument("--split", default=d.split, choices=SPLITS)
    p.add_argument("--n-splits", type=int, default=d.n_splits)
    p.add_argument("--fold", type=int, default=d.fold)
    p.add_argument("--no-dedupe", action="store_true")
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--external", default=None, help="external validation data folder (e.g. PH2)")
    p.add_argument("--no-aug", default="", help="comma list of augmentations to switch off: "
                   + ",".join(AugmentConfig.__dataclass_fields__) + " or 'all'")
    p.add_argument("--drop-rate", type=float, default=d.drop_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="checkpoint stem, e.g. weights/derm_cls_efficientnet_lite0_bce")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--log-csv", default=None)
    p.add_argument("--recipe", default=None, help="named recipe whose values the other options override: "
                   + ", ".join(RECIPES))
    p.add_argument("--init-from", default="", help="checkpoint name or path to continue training from (same "
                   "model, target and split), e.g. at a larger --size")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``lesion train cls`` options; a ``--recipe`` becomes the defaults, so explicit options win."""
    p = _parser()
    a = p.parse_args(argv)
    if a.recipe:
        p.set_defaults(**recipe_values(a.recipe))
        a = p.parse_args(argv)
    return a


def config_from_args(a: argparse.Namespace) -> ClsTrainConfig:
    aug = AugmentConfig()
    off = [s.strip() for s in a.no_aug.split(",") if s.strip()]
    names = [n for n in AugmentConfig.__dataclass_fields__ if n != "p"]
    if "all" in off:
        off = names
    for n in off:
        if n not in names:
            raise unknown_option("augmentation", n, names)
        aug = replace(aug, **{n: False})
    return ClsTrainConfig(
        data=a.data, target=a.target, model=a.model, arch=a.arch, init=a.init, size=a.size,
        center_crop=not a.no_center_crop, clahe=a.clahe, use_metadata=not a.no_metadata, mask_weight=a.mask_weight,
        loss=a.loss, flood=a.flood, optimizer=a.optimizer, lr=a.lr, weight_decay=a.weight_decay, epochs=a.epochs,
        patience=a.patience, max_minutes=a.max_minutes, batch_size=a.batch_size, ema_decay=a.ema, balance=not a.no_balance,
        max_per_group=a.max_per_group, split=a.split, n_splits=a.n_splits, fold=a.fold, dedupe=not a.no_dedupe,
        max_images=a.max_images, external=a.external, augment=aug, drop_rate=a.drop_rate, seed=a.seed,
        device=a.device, out=a.out, overwrite=a.overwrite, log_csv=a.log_csv, recipe=getattr(a, "recipe", None),
        init_from=getattr(a, "init_from", ""),
    )


def main(argv: list[str] | None = None) -> int:
    """``lesion train cls``: prints one line per epoch and, last, a JSON line with the card's metrics."""
    from tqdm import tqdm

    args = parse_args(argv)
    cfg = config_from_args(args)
    bar = tqdm(total=cfg.epochs, desc="epochs", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    card = train_classifier(cfg, progress=progress, log=lambda s: tqdm.write(s, file=sys.stderr))
    bar.close()
    print(json.dumps({"name": card["name"], "path": card.get("path"), **card["metrics"]}, default=float))
    return 0
