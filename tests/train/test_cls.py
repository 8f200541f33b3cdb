"""A tiny classification run on generated blob images (bright blob = 'mel', dark blob = 'nv')."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.data.records import Dataset, Record
from lesion.train.cls import ClsTrainConfig, train_classifier
from lesion.train.cls_augment import AugmentConfig

NO_AUG = AugmentConfig(flips=True, affine=False, rgb_shift=False, brightness_contrast=False, gamma=False,
                       microscope=False, cutout=False)


def blob_dataset(root: Path, n: int = 48, size: int = 48, seed: int = 0) -> Dataset:
    """``n`` images: even ids a bright blob ('mel'), odd a dark one ('nv'); two images per patient group."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    recs = []
    for i in range(n):
        mel = i % 2 == 0
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.15, 0.25) * size
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img = rng.normal(120, 15, (size, size, 3))
        img[mask] = 230 if mel else 30
        img = np.clip(img, 0, 255).astype(np.uint8)
        ip, mp = root / "images" / f"b{i:03d}.png", root / "masks" / f"b{i:03d}.png"
        cv2.imwrite(str(ip), img[..., ::-1])
        cv2.imwrite(str(mp), mask.astype(np.uint8) * 255)
        recs.append(Record(id=f"b{i:03d}", image_path=ip, mask_path=mp, diagnosis="mel" if mel else "nv",
                           group=f"g{i // 4}_{i % 2}", meta={"age": 40 + i, "sex": "male" if i % 3 else "female"}))
    return Dataset("blobs", "plain", "derm", root, recs, ("mel", "nv"), synthetic=True)


def test_tiny_classifier_learns_and_reloads(tmp_path: Path):
    from lesion.zoo import load_model

    ds = blob_dataset(tmp_path / "data")
    out = tmp_path / "w" / "blob_cls"
    cfg = ClsTrainConfig(target="melanoma", arch="resnet10t", size=32, epochs=4, patience=0, batch_size=8,
                         lr=3e-3, augment=NO_AUG, n_splits=4, ema_decay=0.9, drop_rate=0.0, device="cpu",
                         out=str(out), runs_dir=str(tmp_path / "runs"))
    card = train_classifier(cfg, dataset=ds)
    auc = card.metric("auc")
    assert auc.value > 0.9 and auc.data == "blobs" and auc.n == 12 and auc.positives == 6 and auc.ci is not None
    assert card.task == "classification" and card.classes == ("melanoma",) and card.target == "melanoma"
    assert card.preprocessing.size == 32 and card.split.method == "stratified_group_kfold" and card.split.fold == 0
    assert len(card.history) == 4 and all("val_auc" in h for h in card.history)
    assert card.extra["ema_decay"] == 0.9 and card.training.optimizer == "radam"
    run = Path(card.extra["run_dir"])  # the run's own folder, runs/cls/<name>-<UTC time>/
    assert run.parent == tmp_path / "runs" / "cls" and run.name.startswith("blob_cls-20")
    assert (run / "log.csv").read_text().count("\n") == 5  # header + 4 epochs
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["schema"] == 2 and card.licences and card.path == str(out.with_suffix(".safetensors"))
    assert [m for m in saved["metrics"] if m["name"] == "auc"][0]["value"] == auc.value
    # the checkpoint reloads strictly and still separates the classes
    model, card2 = load_model(str(out), task="classification")
    from lesion.infer.engine import predict

    res = predict([(model, card2)], ds, tta="none", device="cpu")
    y = np.array([r.diagnosis == "mel" for r in ds.records])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, res.probs[:, 0]) > 0.9


def test_tiny_multitask_with_masks_runs(tmp_path: Path):
    ds = blob_dataset(tmp_path / "data", n=24)
    cfg = ClsTrainConfig(target="melanoma", model="multitask", arch="resnet10t", size=32, epochs=1, batch_size=8,
                         augment=AugmentConfig(p=0.5), n_splits=3, loss="ohem", flood=0.01, device="cpu", runs_dir="")
    card = train_classifier(cfg, dataset=ds)
    assert card.task == "multitask" and card.uses_metadata and card.path is None  # no --out, no run folder: not saved
    assert "val_mask_dice" in card.history[0]
    assert 0.0 <= card.history[0]["val_mask_dice"] <= 1.0
    assert card.metric("mask_dice").value == card.history[0]["val_mask_dice"]


def test_output_layer_starts_at_the_prior():
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.classify.multitask import MultiTaskConfig
    from lesion.train.cls import init_output_layer
    from lesion.train.splits import prior_logit

    prior = prior_logit(np.array([1, 0, 0, 0]))  # 25 % positives
    x = torch.randn(3, 3, 32, 32)
    for model in (create_model(ClsModelConfig("resnet10t")), create_model(MultiTaskConfig(arch="resnet10t"))):
        init_output_layer(model, prior, weight_std=0.0)
        logits = model.eval()(x).logits
        torch.testing.assert_close(torch.sigmoid(logits), torch.full((3, 1), 0.25))


def test_init_from_continues_a_checkpoint_at_a_larger_size_and_guards_the_split(tmp_path: Path):
    """--init-from: the weights carry over (lr ≈ 0 still separates the classes at a new size); another
    architecture or another validation fold is refused, since the old model trained on those images."""
    from lesion.errors import ConfigError

    ds = blob_dataset(tmp_path / "data")
    first = tmp_path / "w" / "first"
    base = dict(target="melanoma", arch="resnet10t", epochs=3, patience=0, batch_size=8, lr=3e-3, augment=NO_AUG,
                n_splits=4, drop_rate=0.0, device="cpu", runs_dir=str(tmp_path / "runs"))
    card = train_classifier(ClsTrainConfig(**base, size=32, out=str(first)), dataset=ds)
    assert card.metric("auc").value > 0.9
    cont = ClsTrainConfig(**{**base, "epochs": 1, "lr": 1e-12}, size=48, init_from=str(first))
    card2 = train_classifier(cont, dataset=ds)
    # a fresh start at lr ≈ 0 would predict the prior for every image (AUC 0.5); the loaded weights do not
    assert card2.metric("auc").value > 0.9
    assert card2.init.startswith("continued from first") and card2.training.init_from == "first"
    assert card2.extra["init_from"]["size"] == 32 and card2.preprocessing.size == 48
    with pytest.raises(ConfigError, match="arch"):
        train_classifier(ClsTrainConfig(**{**base, "arch": "resnet18"}, size=48, init_from=str(first)), dataset=ds)
    with pytest.raises(ConfigError, match="another split"):
        train_classifier(ClsTrainConfig(**{**base, "fold": 1}, size=48, init_from=str(first)), dataset=ds)


def test_cli_spells_every_field_and_keeps_the_old_spellings():
    from lesion.train.cls import config_from_argv

    cfg, threads = config_from_argv(["--data", "x", "--no-aug", "flips,cutout", "--ema", "0.99", "--no-metadata",
                                     "--no-center-crop", "--external", "a", "--external", "b", "--threads", "1"])
    assert cfg.ema_decay == 0.99 and not cfg.use_metadata and not cfg.center_crop and threads == 1
    assert not cfg.augment.flips and not cfg.augment.cutout and cfg.augment.gamma
    assert cfg.external == ("a", "b") and cfg.command.startswith("lesion train cls --data x")
    assert not any(getattr(config_from_argv(["--no-aug"])[0].augment, n) for n in ("flips", "affine", "microscope"))
    with pytest.raises(Exception, match="flip"):
        config_from_argv(["--no-aug", "flip"])
