"""Segmentation training end to end on generated blobs (24 images, 64 px, tiny random U-Net), plus splits."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lesion.card import EXTERNAL, TRAIN_VAL
from lesion.data.records import Record
from lesion.errors import ConfigError
from lesion.train.common import EarlyStopping, grouped_split
from lesion.train.seg import SegTrainConfig, config_from_argv, main, train_segmentation


def _blob_folder(root, n: int = 24, size: int = 64, seed: int = 0):
    """Plain layout: dark elliptical 'lesions' on noisy skin; lesion_id groups pairs of images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    rows = ["image,lesion_id,diagnosis"]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.12, 0.3, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        skin = np.array([220, 170, 150]) + rng.normal(0, 12, (size, size, 3))
        lesion = np.array([110, 70, 50]) + rng.normal(0, 12, (size, size, 3))
        img = np.where(mask[..., None], lesion, skin).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"b{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"b{i:02d}_mask.png")
        rows.append(f"b{i:02d}.png,L{i // 2:02d},{'mel' if i % 4 == 0 else 'nv'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"name": "Blobs", "domain": "derm", "synthetic": True}))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    data = _blob_folder(root / "data")
    ext = _blob_folder(root / "ext", n=6, seed=1)
    cfg = SegTrainConfig(
        data=(str(data),), external=(str(ext),), arch="unet", encoder="resnet18", encoder_depth=3, init="random",
        size=64, loss="bce_jaccard", lr=3e-3, epochs=4, batch_size=4, patience=0, val_fraction=0.25, augment=0.0,
        out=str(root / "weights" / "blob_unet"), runs_dir=str(root / "runs"), seed=0, device="cpu",
    )
    calls = []
    card = train_segmentation(cfg, progress=lambda d, t: calls.append((d, t)))
    return cfg, card, root, calls


def test_loss_falls_and_val_iou_beats_trivial_masks(trained):
    cfg, card, root, _ = trained
    hist = card.history
    assert len(hist) == 4 == card.training.epochs
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # All-background scores IoU 0 on every image (each has a lesion); all-foreground scores the lesion's
    # share of the image, at most pi * 0.3 * 0.3 = 0.28 here.
    assert card.headline().name == "iou" and card.headline().value > 0.5
    assert card.headline().data == "Blobs" and card.headline().split == "val"
    # strata by label of a lesion's first image: 6 "mel" + 6 "nv" lesions; round(0.25 * 6) = 2 of each
    # -> 4 lesions of two images = 8 validation images.
    assert card.metric("iou").n == 8
    assert {(m.data, m.n) for m in card.metrics_where(split="external")} == {("Blobs", 6)}


def test_card_log_and_files(trained):
    cfg, card, root, calls = trained
    w = root / "weights" / "blob_unet.safetensors"
    assert w.is_file() and (root / "weights" / "blob_unet.json").is_file()
    assert card.provenance.file_size_bytes == w.stat().st_size and card.path == str(w)
    saved = json.loads((root / "weights" / "blob_unet.json").read_text())
    assert saved["schema"] == 2 and saved["provenance"]["sha256"] == card.sha256
    assert card.task == "segmentation" and card.domain == "derm" and card.init == "random"
    assert card.preprocessing.size == 64 and card.licences and card.synthetic_only
    assert {d.role for d in card.data} == {TRAIN_VAL, EXTERNAL}
    assert set(card.provenance.versions) >= {"python", "torch", "timm", "segmentation_models_pytorch"}
    assert card.provenance.device.startswith("CPU") and card.provenance.command.startswith("lesion train seg")
    assert card.training.loss == "bce_jaccard" and card.training.config["epochs"] == 4
    run = Path(card.extra["run_dir"])  # the run's own folder: runs/seg/<name>-<UTC time>/
    assert run.parent == root / "runs" / "seg" and run.name.startswith("blob_unet-20")
    assert {p.name for p in run.iterdir()} == {"log.csv", "best.safetensors", "best.json"}
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # 16 train images // batch 4 = 4 steps per epoch, 4 epochs: progress counts 16 steps, one at a time
    assert calls == [(i, 16) for i in range(1, 17)]


def test_split_groups_never_straddle(trained):
    cfg, card, root, _ = trained
    val_ids = set(card.split.sets["Blobs"]["val_ids"])
    lesion_of = {f"b{i:02d}": f"L{i // 2:02d}" for i in range(24)}
    val_lesions = {lesion_of[i] for i in val_ids}
    assert all((lesion_of[i] in val_lesions) == (i in val_ids) for i in lesion_of)


def test_reload_reproduces_the_card_metrics(trained):
    from lesion.data import load_dataset
    from lesion.data.io import read_image, read_mask
    from lesion.metrics import seg_metrics
    from lesion.zoo import load_segmenter

    cfg, card, root, _ = trained
    seg = load_segmenter(root / "weights" / "blob_unet", device="cpu")
    ds = load_dataset(root / "ext")
    ious = [seg_metrics(seg(read_image(r.image_path)) > 0.5, read_mask(r.mask_path))["iou"] for r in ds.records]
    assert np.mean(ious) == pytest.approx(card.metric("iou", split="external").value, abs=0.01)


def test_refuses_to_overwrite_before_training(trained):
    cfg, card, root, _ = trained
    with pytest.raises(ConfigError, match="already exists"):
        train_segmentation(replace(cfg, epochs=1))


def test_init_from_continues_training_and_refuses_another_architecture(trained):
    cfg, card, root, _ = trained
    src = str(root / "weights" / "blob_unet")
    more = train_segmentation(replace(cfg, init_from=src, epochs=1, lr=1e-4, out=src + "_more", external=()))
    assert more.init == "continued from blob_unet" and more.extra["init_from"]["epochs"] == 4
    assert more.training.init_from == "blob_unet"
    # one gentle epoch from the trained weights starts where the first run ended, not from scratch
    assert more.history[0]["val_iou"] > card.history[0]["val_iou"]
    assert more.history[0]["val_iou"] > 0.5
    with pytest.raises(ConfigError, match="linknet"):
        train_segmentation(replace(cfg, arch="linknet", init_from=src, epochs=1, out=src + "_linknet"))


def test_cli_reports_bad_options(tmp_path):
    from lesion.cli import main as lesion_main

    assert lesion_main(["train", "seg", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"),
                       "--runs-dir", str(tmp_path / "runs")]) == 2
    with pytest.raises(SystemExit):
        main(["--data", "x", "--loss", "nope"])


def test_cli_options_are_the_config_fields(tmp_path):
    cfg, threads = config_from_argv(["--data", "a", "--data", "demo:derm", "--batch-size", "3", "--no-aug",
                                     "--overwrite", "--threads", "2", "--out", "w/x", "--ema-decay", "0.9"])
    assert cfg.data == ("a", "demo:derm") and cfg.batch_size == 3 and cfg.augment == 0.0 and cfg.overwrite
    assert threads == 2 and cfg.out == "w/x" and cfg.ema_decay == 0.9
    assert cfg.command.startswith("lesion train seg --data a")
    # the old spellings still land in --out
    assert config_from_argv(["--data", "a", "--name", "n", "--out-dir", str(tmp_path)])[0].out == str(tmp_path / "n")


def _rec(i: int, group: str, label: int) -> Record:
    return Record(id=f"r{i}", image_path=f"r{i}.png", group=group, target=label)


def test_grouped_split_fraction_per_stratum():
    # 20 groups of label 0 and 10 of label 1, two images per group: 20 % -> 4 + 2 groups = 12 images.
    recs = [_rec(i, f"g{i // 2}", int(i >= 40)) for i in range(60)]
    train, val = grouped_split(recs, 0.2, seed=3, stratify=lambda r: r.target)
    assert len(val) == 12 and len(train) == 48
    assert sum(recs[i].target for i in val) == 4
    assert not {recs[i].group for i in train} & {recs[i].group for i in val}
    assert grouped_split(recs, 0.2, seed=3, stratify=lambda r: r.target) == (train, val)
    with pytest.raises(ConfigError):
        grouped_split(recs, 1.0, seed=0)


def test_early_stopping_counts_epochs_without_gain():
    stop = EarlyStopping(patience=2)
    assert [stop.step(v, e) for e, v in enumerate([0.5, 0.6, 0.6, 0.59], 1)] == [True, True, False, False]
    assert stop.should_stop and stop.best_epoch == 2 and stop.best == 0.6


def test_cosine_schedule_follows_the_time_budget():
    import torch

    from lesion.train.common import cosine_schedule

    now = [0.0]
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = cosine_schedule(opt, total_steps=1000, warmup_steps=0, min_lr_ratio=0.01, time_budget_s=10, clock=lambda: now[0])
    now[0] = 5.0  # half the budget, only 1 of 1000 steps: time wins -> 0.01 + 0.99 * 0.5 * (1 + cos(pi/2)) = 0.505
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.505)
    now[0] = 12.0  # past the budget: the floor
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
