"""``lesion evaluate cls`` on each backend: the same per-image predictions and AUC as the in-process engine."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lesion.cli import main as cli

MODEL = "derm_cls_efficientnet_lite0_focal"


def _run(tmp_path, capsys, name, *extra):
    out = tmp_path / f"{name}.parquet"
    rc = cli(["evaluate", "cls", "--models", MODEL, "--data", "demo:derm", "--tta", "hflip", "--device", "cpu",
              "--no-cache", "--out", str(out), *extra])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return pd.read_parquet(out), summary


def test_onnx_backend_equals_torch(tmp_path, capsys):
    torch_df, torch_sum = _run(tmp_path, capsys, "torch")
    onnx_df, onnx_sum = _run(tmp_path, capsys, "onnx", "--backend", "onnx")
    assert list(onnx_df["id"]) == list(torch_df["id"])
    assert np.abs(onnx_df["p_melanoma"].to_numpy() - torch_df["p_melanoma"].to_numpy()).max() <= 1e-4
    assert abs(onnx_sum["auc"] - torch_sum["auc"]) <= 1e-3 and onnx_sum["backend"] == "onnx"


def test_ray_engine_equals_torch(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("LESION_RAY_THREADS", "1")
    torch_df, _ = _run(tmp_path, capsys, "torch")
    ray_df, ray_sum = _run(tmp_path, capsys, "ray", "--engine", "ray", "--actors", "1")
    assert list(ray_df["id"]) == list(torch_df["id"])
    assert np.abs(ray_df["p_melanoma"].to_numpy() - torch_df["p_melanoma"].to_numpy()).max() <= 1e-5
    assert ray_sum["backend"].startswith("ray")


@pytest.mark.parametrize("extra,message", [
    (["--backend", "remote"], "--backend remote needs --url"),
    (["--backend", "tpu"], "Supported: torch, onnx, remote"),
    (["--engine", "ray", "--backend", "onnx"], "--engine ray runs the PyTorch backend"),
    (["--engine", "spark"], "Supported: local, ray"),
])
def test_bad_backend_options_are_one_line(capsys, extra, message):
    assert cli(["evaluate", "cls", "--models", MODEL, "--data", "demo:derm", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
