"""``lesion evaluate cls`` end to end on a tiny plain-layout folder with two saved (untrained) models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lesion.cli import main as cli_main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import cv2

    from lesion.classify.models import ClsModelConfig, create_classifier
    from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet
    from lesion.card import ModelCard, Preprocessing
    from lesion.weights import save_checkpoint

    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        cv2.imwrite(str(data / "images" / f"x{i}.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        rows.append({"image": f"x{i}.png", "diagnosis": "mel" if i < 3 else "nv"})
    pd.DataFrame(rows).to_csv(data / "labels.csv", index=False)
    unlabelled = root / "unlabelled"
    (unlabelled / "images").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(unlabelled / "images" / f"u{i}.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    prep = Preprocessing(size=32, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=False)
    torch.manual_seed(0)
    paths = []
    for name in ("m_a", "m_b"):
        cfg = ClsModelConfig("resnet10t", num_classes=1, size=32)
        card = ModelCard(name=name, task="classification", domain="derm", classes=("melanoma",), target="melanoma",
                         arch="resnet10t", model={**cfg.__dict__}, preprocessing=prep)
        paths.append(str(save_checkpoint(create_classifier(cfg), root / "w" / name, card)))
    mcfg = MultiTaskConfig(arch="resnet10t", size=32)
    card = ModelCard(name="m_mt", task="multitask", domain="derm", classes=("melanoma",), target="melanoma",
                     arch="resnet10t", model={**mcfg.__dict__}, preprocessing=prep)
    mt = str(save_checkpoint(MultiTaskNet(mcfg), root / "w" / "m_mt", card))
    return {"root": root, "data": data, "unlabelled": unlabelled, "models": paths, "mt": mt}


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_evaluate_writes_parquet_and_json(setup, capsys):
    out = setup["root"] / "preds.parquet"
    args = ["evaluate", "cls", "--models", ",".join(setup["models"]), "--data", str(setup["data"]),
            "--tta", "hflip", "--out", str(out), "--device", "cpu"]
    assert cli_main(args) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["n"] == 6 and 0.0 <= summary["auc"] <= 1.0 and len(summary["auc_ci"]) == 2
    assert set(summary["members"]) == {"m_a", "m_b"} and summary["device"] == "cpu"
    df = pd.read_parquet(out)
    assert len(df) == 6 and {"id", "p_melanoma", "m_a:p_melanoma", "label"} <= set(df.columns)
    assert df["label"].tolist() == [1, 1, 1, 0, 0, 0]
    # refuse to overwrite: readable error, exit code 2, no traceback
    assert cli_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_target_mismatch_and_bad_names(setup, capsys):
    base = ["evaluate", "cls", "--models", setup["models"][0], "--data", str(setup["data"]), "--device", "cpu"]
    assert cli_main(base + ["--target", "malignant"]) == 2
    assert "predict 'melanoma'" in capsys.readouterr().err
    assert cli_main(base + ["--merge", "median"]) == 2
    assert "mean_prob" in capsys.readouterr().err
    assert cli_main(["evaluate", "cls", "--models", "no_such_model", "--data", str(setup["data"])]) == 2
    assert "No weights file" in capsys.readouterr().err


def test_no_labels_and_missing_metadata(setup, capsys):
    args = ["evaluate", "cls", "--models", f"{setup['models'][0]},{setup['mt']}", "--data", str(setup["unlabelled"]),
            "--tta", "none", "--device", "cpu"]
    assert cli_main(args) == 0
    cap = capsys.readouterr()
    summary = _last_json(cap.out)
    assert summary["labels"] is False and "auc" not in summary and summary["n"] == 3
    assert "m_mt" in cap.err and "image-only" in cap.err
    assert "no labels" in cap.err
