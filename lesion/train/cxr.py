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
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.classify.cxr import MODES, LabelSet, class_table, column_counts, view_warnings
from lesion.classify.models import LITE_PORTS, Preprocessing, normalize, prepare_image
from lesion.errors import ConfigError, DataError, unknown_option

Progress = Callable[[int, int], None]
LOSSES = ("weighted_bce", "bce")
#: Grey-level mean/std for one-channel input: ImageNet's luminance statistics (random init), [-1, 1] (lite port).
GREY_MEAN, GREY_STD = (0.449,), (0.226,)
LITE_GREY_MEAN, LITE_GREY_STD = (0.5,), (0.5,)


@dataclass(frozen=True)
class CxrTrainConfig:
    """One chest X-ray training run."""

    data: tuple[str, ...] = ("demo:cxr",)  # folders in any chest X-ray layout, or demo:cxr (repeatable)
    labels: str = "merge"  # label set: merge | drop | all | tb
    arch: str = "densenet121"  # timm name; seed 002: densenet121 (inception_resnet_v2 the option)
    init: str = "random"  # 'imagenet-lite-port' (efficientnet_lite0/1/2, offline) or 'random'
    size: int = 224  # input side (seed 002: 224x224x1)
    clahe: bool = False  # CLAHE on the grey image
    loss: str = "weighted_bce"  # weighted_bce | bce
    lr: float = 1e-4  # Adam
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 16
    patience: int = 5  # early stopping on mean val AUC (0 = off)
    max_minutes: float = 0.0  # stop after the epoch that passes this wall time (0 = no limit)
    val_fraction: float = 0.15  # share of patients held out (a 'split' column in the data wins)
    hflip: bool = False  # horizontal flips (off: laterality is anatomy)
    augment: bool = True
    max_images: int = 0  # at most this many images per data set (seeded; 0 = all)
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # checkpoint stem, e.g. weights/cxr_tb_efficientnet_lite0
    overwrite: bool = False
    log_csv: str | None = None
    command: str = field(default="", compare=False)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def split_cxr(records: Sequence, val_fraction: float, seed: int) -> tuple[list, list, str]:
    """Train/val records: the data's ``split`` column if it has one, else patients held out per stratum.

    With the same seed and fraction this is the split of ``lesion train seg`` on the same set, so a lung
    model and a TB model shipped together share their held-out patients.
    """
    from lesion.train.common import split_column_or_groups

    return split_column_or_groups(records, val_fraction, seed)


def preload_grey(records: Sequence, prep: Preprocessing, progress: Progress | None = None) -> np.ndarray:
    """Read, centre-crop, resize and grey every image once: uint8 ``[N, S, S, 1]``."""
    from lesion.data.io import read_image

    x = np.zeros((len(records), prep.size, prep.size, prep.channels), np.uint8)
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
# Metrics
# ----------------------------------------------------------------------------------------------------------


def per_label_auc(y: np.ndarray, scores: np.ndarray, classes: Sequence[str], ci: bool = False,
                  n_boot: int = 500) -> dict[str, dict[str, Any]]:
    """ROC-AUC per output column (columns without both positives and negatives get ``auc: None``)."""
    from sklearn.metrics import roc_auc_score

    from lesion.metrics import roc_auc_ci

    out: dict[str, dict[str, Any]] = {}
    for j, c in enumerate(classes):
        t = np.asarray(y)[:, j]
        n_pos = int(t.sum())
        row: dict[str, Any] = {"n": int(len(t)), "positives": n_pos, "auc": None}
        if 0 < n_pos < len(t):
            if ci:
                auc, lo, hi = roc_auc_ci(t, scores[:, j], n_boot=n_boot)
                row.update(auc=float(auc), auc_ci=[float(lo), float(hi)])
            else:
                row["auc"] = float(roc_auc_score(t, scores[:, j]))
        out[c] = row
    return out


def mean_auc(per_label: dict[str, dict[str, Any]]) -> float:
    vals = [v["auc"] for v in per_label.values() if v.get("auc") is not None]
    return float(np.mean(vals)) if vals else float("nan")


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def _logits(model, x_uint8: np.ndarray, prep: Preprocessing, device, batch: int = 32) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x_uint8), batch):
            xb = torch.from_numpy(normalize(x_uint8[s : s + batch], prep)).to(device)
            out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def train_cxr(cfg: CxrTrainConfig, progress: Progress | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, validate each epoch (per-label AUC), keep the best weights, save checkpoint + card.

    Returns:
        the card (written next to the weights when ``cfg.out`` is set).

    Raises:
        ConfigError: unknown option; DataError: no labels, unknown NIH labels in merge/drop mode, one side of
            the split empty.
    """
    import torch

    from lesion.classify.models import ClsModelConfig, check_arch, create_classifier
    from lesion.device import describe_device, pick_device
    from lesion.train.common import EarlyStopping, Timer, cosine_schedule, seed_everything
    from lesion.train.seg import licence_of, open_source

    log = log or (lambda s: None)
    if cfg.labels not in MODES:
        raise unknown_option("label set", cfg.labels, MODES)
    if cfg.loss not in LOSSES:
        raise unknown_option("loss", cfg.loss, LOSSES)
    if cfg.out and not cfg.overwrite:
        stem = Path(cfg.out)
        for p in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
            if p.exists():
                raise ConfigError(f"{p} already exists; choose another --out or pass --overwrite.")
    check_arch(cfg.arch)
    timer = Timer()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)

    train_recs: list = []
    val_recs: list = []
    data_card, split_card, warnings = [], {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "sets": {}}, []
    sets = [open_source(s) for s in cfg.data]
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
        split_card["sets"][ds.name] = {"method": how, "n_train": len(tr), "n_val": len(va),
                                       "val_ids": [r.id for r in va]}
        data_card.append({"name": ds.name, "source": spec, "layout": ds.layout, "synthetic": bool(ds.synthetic),
                          "n_train": len(tr), "n_val": len(va), "licence": licence_of(ds)})
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
    k = len(classes)
    mcfg = ClsModelConfig(arch=cfg.arch, num_classes=k, in_chans=1, size=cfg.size, mean=mean, std=std, init=cfg.init)
    model = create_classifier(mcfg).to(device)

    log(f"preloading {len(train_recs)} + {len(val_recs)} images at {cfg.size}px (grey) …")
    xtr, xva = preload_grey(train_recs, prep), preload_grey(val_recs, prep)
    ytr, yva = label_set.encode(train_recs), label_set.encode(val_recs)
    pos = ytr.sum(axis=0)
    if (pos == 0).any():
        empty = [c for c, n in zip(classes, pos) if n == 0]
        log(f"note: no training positives for {', '.join(empty)}; their AUC cannot be learnt")
    pos_weight = np.clip((len(ytr) - pos) / np.maximum(pos, 1.0), 1.0, 100.0).astype(np.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.from_numpy(pos_weight).to(device) if cfg.loss == "weighted_bce" else None)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(xtr) // cfg.batch_size)
    sched = cosine_schedule(opt, cfg.epochs * steps_per_epoch, warmup_steps=min(steps_per_epoch, 20),
                            time_budget_s=cfg.max_minutes * 60)
    tf = train_transform(cfg.hflip) if cfg.augment else None
    rng = np.random.default_rng(cfg.seed)
    stopper = EarlyStopping(cfg.patience)
    history: list[dict[str, Any]] = []
    best_state = copy.deepcopy(model.state_dict())
    csv_path = Path(cfg.log_csv) if cfg.log_csv else None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(xtr))
        tot, n = 0.0, 0
        for s in range(0, len(order) - 1, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            imgs = xtr[idx]
            if tf is not None:
                imgs = np.stack([tf(image=im)["image"].reshape(im.shape) for im in imgs])
            x = torch.from_numpy(normalize(imgs, prep)).to(device)
            y = torch.from_numpy(ytr[idx]).to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        z = _logits(model, xva, prep, device)
        val_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(z), torch.from_numpy(yva)))
        aucs = per_label_auc(yva, z, classes)
        row = {"epoch": epoch, "train_loss": tot / max(n, 1), "val_loss": val_loss, "val_auc_mean": mean_auc(aucs),
               **{f"val_auc:{c}": v["auc"] for c, v in aucs.items()}, "lr": opt.param_groups[0]["lr"],
               "time_s": round(timer(), 1)}
        history.append(row)
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(csv_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                w.writeheader()
                w.writerows(history)
        log(f"epoch {epoch}: train_loss={row['train_loss']:.4f} val_loss={val_loss:.4f} "
            f"val_auc_mean={row['val_auc_mean']:.4f} ({timer():.0f}s)")
        score = row["val_auc_mean"] if np.isfinite(row["val_auc_mean"]) else -val_loss
        if stopper.step(score, epoch):
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch, cfg.epochs)
        if stopper.should_stop:
            log(f"early stop: no gain in mean val AUC for {cfg.patience} epochs")
            break
        if cfg.max_minutes > 0 and timer() > 60 * cfg.max_minutes:
            log(f"time limit: {cfg.max_minutes} min reached after epoch {epoch}")
            break
    model.load_state_dict(best_state)
    z = _logits(model, xva, prep, device)
    per_label = per_label_auc(yva, z, classes, ci=True)
    name = Path(cfg.out).name if cfg.out else f"cxr_{cfg.labels}_{cfg.arch}"
    card: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "domain": "cxr",
        "multilabel": True,
        "classes": list(classes),
        "target": cfg.labels,
        "label_set": label_set.to_dict(),
        "class_table": class_table(train_recs + val_recs, label_set).to_dict("records"),
        "arch": cfg.arch,
        "encoder": cfg.arch,
        "init": cfg.init,
        "model": {**asdict(mcfg), "mean": list(mean), "std": list(std)},
        "preprocessing": prep.to_dict(),
        "loss": cfg.loss,
        "pos_weight": {c: float(w) for c, w in zip(classes, pos_weight)} if cfg.loss == "weighted_bce" else None,
        "optimizer": "adam",
        "split": split_card,
        "train_positives": column_counts(ytr, classes),
        "val_positives": column_counts(yva, classes),
        "epochs": len(history),
        "best_epoch": stopper.best_epoch,
        "wall_time_s": round(timer(), 1),
        "device": describe_device(device),
        "metrics": {"val_auc_mean": mean_auc(per_label), "val_per_label": per_label,
                    "val_loss": history[stopper.best_epoch - 1]["val_loss"] if history else None},
        "data": data_card,
        "licences": sorted({lic for d in data_card for lic in d["licence"]}),
        "warnings": warnings,
        "history": history,
        "train_config": {k_: (list(v) if isinstance(v, tuple) else v) for k_, v in asdict(cfg).items()},
    }
    if cfg.out:
        from lesion.weights import save_checkpoint

        card["path"] = str(save_checkpoint(model, cfg.out, card, overwrite=cfg.overwrite))
    return card


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = CxrTrainConfig()
    p = argparse.ArgumentParser(prog="lesion train cxr", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", default=None,
                   help="chest X-ray folder (NIH, Chest X-ray Masks and Labels, Montgomery, plain) or demo:cxr; repeatable")
    p.add_argument("--labels", default=d.labels, choices=MODES,
                   help="label set: merge (small classes -> Other), drop, all, tb (default %(default)s)")
    p.add_argument("--arch", default=d.arch, help="timm model (default %(default)s; inception_resnet_v2 the option)")
    p.add_argument("--init", default=d.init, choices=("imagenet-lite-port", "random"))
    p.add_argument("--size", type=int, default=d.size)
    p.add_argument("--clahe", action="store_true")
    p.add_argument("--loss", default=d.loss, choices=LOSSES)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--max-minutes", type=float, default=d.max_minutes)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--hflip", action="store_true", help="horizontal flips (off by default)")
    p.add_argument("--no-aug", action="store_true")
    p.add_argument("--max-images", type=int, default=d.max_images)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", default=None, help="checkpoint stem, e.g. weights/cxr_tb_efficientnet_lite0")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--log-csv", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """``lesion train cxr``: one line per epoch, and last a JSON line with the card's metrics."""
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from tqdm import tqdm

    cfg = CxrTrainConfig(
        data=tuple(a.data or ["demo:cxr"]), labels=a.labels, arch=a.arch, init=a.init, size=a.size, clahe=a.clahe,
        loss=a.loss, lr=a.lr, weight_decay=a.weight_decay, epochs=a.epochs, batch_size=a.batch_size,
        patience=a.patience, max_minutes=a.max_minutes, val_fraction=a.val_fraction, hflip=a.hflip,
        augment=not a.no_aug, max_images=a.max_images, seed=a.seed, device=a.device, out=a.out,
        overwrite=a.overwrite, log_csv=a.log_csv, command="lesion train cxr " + " ".join(argv),
    )
    bar = tqdm(total=cfg.epochs, desc="epochs", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    card = train_cxr(cfg, progress=progress, log=lambda s: tqdm.write(s, file=sys.stderr))
    bar.close()
    m = card["metrics"]
    print(json.dumps({"name": card["name"], "path": card.get("path"), "val_auc_mean": m["val_auc_mean"],
                      "per_label": {c: v.get("auc") for c, v in m["val_per_label"].items()}}, default=float))
    return 0
