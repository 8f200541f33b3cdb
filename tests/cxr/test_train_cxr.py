"""`lesion train cxr` on the demo radiographs: learns something, writes a card the page and engine can use,
and refuses bad input clearly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lesion.cli import main as cli
from lesion.classify.models import prepare_image
from lesion.metrics import per_label_auc
from lesion.train.cxr import CxrTrainConfig, config_from_argv, train_cxr
from lesion.zoo import load_model


def test_per_label_auc_against_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (80, 3)).astype(float)
    y[:, 2] = 0  # no positives: AUC undefined
    s = y + rng.normal(0, 1, y.shape)
    res = per_label_auc(y, s, ["a", "b", "c"])
    assert res["a"]["auc"] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert np.isnan(res["c"]["auc"]) and res["c"]["positives"] == 0  # the one-class rule: NaN


def make_findings_folder(root, n=96, seed=0):
    """A plain-layout X-ray folder whose findings are drawn exactly: 'Nodule' = a bright disc in the upper
    left, 'Effusion' = a bright band at the bottom; independent, so every combination occurs."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = ["image,findings,patient_id"]
    for i in range(n):
        img = rng.normal(90, 20, (96, 96)).clip(0, 255).astype(np.uint8)
        found = []
        if rng.random() < 0.5:
            cv2.circle(img, (int(rng.integers(18, 34)), int(rng.integers(18, 34))), 9, 230, -1)
            found.append("Nodule")
        if rng.random() < 0.5:
            img[78:, :] = np.clip(img[78:, :].astype(int) + 110, 0, 255).astype(np.uint8)
            found.append("Effusion")
        cv2.imwrite(str(root / "images" / f"x{i:03d}.png"), img)
        rows.append(f"x{i:03d}.png,{'|'.join(found)},p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    data = make_findings_folder(tmp_path_factory.mktemp("cxrdata") / "xr")
    out = tmp_path_factory.mktemp("cxr") / "cxr_tiny"
    card = train_cxr(CxrTrainConfig(data=(str(data),), labels="all", arch="resnet10t", size=48, epochs=6,
                                    batch_size=8, lr=3e-3, patience=0, val_fraction=0.25, out=str(out),
                                    runs_dir=str(out.parent / "runs")))
    return out, card


def test_training_writes_a_multilabel_card(trained):
    out, card = trained
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["schema"] == 2 and saved["multilabel"] is True and saved["domain"] == "cxr"
    assert saved["classes"] == ["Effusion", "Nodule"] and card.classes == ("Effusion", "Nodule")
    assert card.preprocessing.channels == 1 and card.preprocessing.size == 48
    split = card.split.sets["xr"]
    assert split["n_val"] == 24 and split["n_train"] == 72 and card.split.n_val == 24
    assert set(card.extra["pos_weight"]) == {"Effusion", "Nodule"}
    assert len(card.history) == 6 == card.training.epochs and card.training.optimizer == "adam"
    assert card.provenance.command.startswith("lesion train cxr") and card.provenance.versions["torch"]


def test_trained_model_learns_each_finding_on_held_out_images(trained):
    _, card = trained
    eff, nod = card.metric("auc", label="Effusion"), card.metric("auc", label="Nodule")
    assert eff.value > 0.8 and nod.value > 0.7, card.metrics
    assert eff.data == "xr" and eff.n == 24 and eff.ci is not None
    assert card.metric("auc_mean").value == pytest.approx((eff.value + nod.value) / 2)


def test_demo_xrays_train_end_to_end(tmp_path):
    card = train_cxr(CxrTrainConfig(data=("demo:cxr",), labels="merge", arch="resnet10t", size=32, epochs=1,
                                    batch_size=8, out=str(tmp_path / "demo"), runs_dir=""))
    assert card.classes[-1] == "Other"  # Cardiomegaly is one of seed 002's small classes
    assert {r["finding"]: r["becomes"] for r in card.extra["class_table"]}["Cardiomegaly"] == "merged into 'Other'"


def test_engine_predicts_independent_sigmoids(trained):
    from lesion.data.demo import load_demo
    from lesion.infer.engine import predict

    out, _ = trained
    model, card = load_model(str(out), task="classification")
    ds = load_demo("cxr")
    res = predict([(model, card)], ds.records[:6], tta="hflip", batch_size=4, device="cpu")
    assert res.probs.shape == (6, 2)
    assert not np.allclose(res.probs.sum(axis=1), 1.0)  # not a softmax
    # one-channel input really is grey: the first conv takes 1 channel
    x = prepare_image(np.zeros((50, 70, 3), np.uint8), card.preprocessing)
    assert x.shape == (48, 48, 1)


def test_cli_bad_input(tmp_path, capsys):
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert cli(["train", "cxr", "--data", "demo:derm", "--epochs", "1", "--arch", "resnet10t", "--size", "32", *runs]) == 2
    assert "chest X-rays" in capsys.readouterr().err
    assert cli(["train", "cxr", "--data", str(tmp_path / "missing"), "--epochs", "1", *runs]) == 2
    assert "error" in capsys.readouterr().err
    existing = tmp_path / "m.json"
    existing.write_text("keep")
    assert cli(["train", "cxr", "--data", "demo:cxr", "--out", str(tmp_path / "m"), "--epochs", "1", *runs]) == 2
    assert existing.read_text() == "keep"
    assert not (tmp_path / "runs").exists()  # every refusal came before the run folder was kept


def test_cli_options_match_the_other_trainers():
    cfg, threads = config_from_argv(["--data", "a", "--data", "b", "--no-aug", "--ema", "0.9", "--threads", "3"])
    assert cfg.data == ("a", "b") and not cfg.augment and cfg.ema_decay == 0.9 and threads == 3
    assert config_from_argv([])[0].data == ("demo:cxr",)  # a repeatable option keeps its default when absent


def test_seed002_recipe_trains_on_the_real_nih_sample(shared_data, tmp_path):
    """DenseNet-121, one channel, merged label set, on the 17-image NIH sample: the plumbing, not the quality."""
    import torch

    from lesion.classify.cxr import OTHER
    from lesion.explain.cam import find_target_layer, label_heatmap

    folder = shared_data / "NIH_ChestXray14_mini"
    if not folder.is_dir():
        pytest.skip("NIH_ChestXray14_mini is not in the shared data")
    torch.set_num_threads(1)
    card = train_cxr(CxrTrainConfig(data=(str(folder),), labels="merge", arch="densenet121", size=64, epochs=1,
                                    batch_size=4, val_fraction=0.3, out=str(tmp_path / "nih_dn121"),
                                    runs_dir=str(tmp_path / "runs")))
    assert card.arch == "densenet121" and card.multilabel and card.classes[-1] == OTHER
    assert card.training.optimizer == "adam" and card.training.loss == "weighted_bce"
    model, card = load_model(str(tmp_path / "nih_dn121"), task="classification")
    assert model.net.features.conv0.in_channels == 1
    assert find_target_layer(model, 64) is model.net.features.norm5
    from lesion.data.io import read_image

    image = read_image(next((folder / "images").glob("*.png")))
    heat = label_heatmap(model, card, image, class_index=len(card.classes) - 1)
    assert heat.shape == image.shape[:2] and 0.0 <= heat.min() and heat.max() <= 1.0


def test_inception_resnet_v2_is_the_seed002_option():
    from lesion.classify.models import check_arch

    check_arch("inception_resnet_v2")  # raises ConfigError when timm lacks it


def test_evaluate_cls_reports_per_finding_auc_for_multilabel_models(trained, tmp_path, monkeypatch, capsys):
    out, _ = trained
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "cache"))
    assert cli(["evaluate", "cls", "--models", str(out), "--tta", "none", "--data", "demo:cxr"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 60 and set(summary["per_label"]) == {"Effusion", "Nodule"}
    assert all(0.0 <= v <= 1.0 for v in summary["per_label"].values())
    assert summary["auc"] == pytest.approx(np.mean(list(summary["per_label"].values())), abs=1e-3)
