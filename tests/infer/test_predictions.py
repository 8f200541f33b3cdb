"""A predictions file as a member: read by id, its AUC computed by hand, missing ids counted, bad files refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.cli import main as cli
from lesion.errors import ConfigError, DataError
from lesion.infer.engine import predict
from lesion.infer.predictions import PredictionsMember


def _auc_by_hand(y, s) -> float:
    """Share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = s[y == 1], s[y == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("plain")
    (root / "images").mkdir()
    rows = []
    for i in range(12):
        cv2.imwrite(str(root / "images" / f"case{i:02d}.png"), np.full((8, 8, 3), 20 * i, np.uint8))
        rows.append({"image": f"case{i:02d}", "diagnosis": "mel" if i % 3 == 0 else "nv"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"name": "twelve", "domain": "derm", "synthetic": True}))
    return root


def _probs() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([1 if i % 3 == 0 else 0 for i in range(12)])
    p = np.array([0.9, 0.2, 0.4, 0.35, 0.1, 0.5, 0.8, 0.3, 0.6, 0.45, 0.05, 0.25])
    return y, p


def test_csv_auc_equals_the_hand_computed_one(folder, tmp_path, capsys):
    y, p = _probs()
    f = tmp_path / "preds.csv"
    pd.DataFrame({"image_name": [f"images/case{i:02d}.jpg" for i in range(12)], "melanoma_prob": p}).to_csv(f, index=False)
    assert cli(["evaluate", "cls", "--predictions", str(f), "--data", str(folder), "--tta", "none"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["auc"] == pytest.approx(_auc_by_hand(y, p), abs=1e-4) and summary["n"] == 12
    assert "id column 'image_name'" in out.err and "melanoma=melanoma_prob" in out.err  # the guess, said


def test_parquet_with_named_columns_and_missing_ids_counted(folder, tmp_path, capsys):
    y, p = _probs()
    f = tmp_path / "preds.parquet"
    keep = list(range(10))  # two images have no row; one row names an image not in the data
    pd.DataFrame({"key": [f"case{i:02d}" for i in keep] + ["stranger"], "s": list(p[keep]) + [0.5]}).to_parquet(f)
    assert cli(["evaluate", "cls", "--predictions", str(f), "--id-column", "key", "--columns", "s",
                "--data", str(folder), "--tta", "none"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["n"] == 10 and summary["auc"] == pytest.approx(_auc_by_hand(y[keep], p[keep]), abs=1e-4)
    assert "no row for 2 of 12 image(s)" in out.err and "1 row(s) name images that are not in" in out.err


def test_joins_an_ensemble_as_a_member(tmp_path):
    f = tmp_path / "p.csv"
    pd.DataFrame({"id": ["image_00000", "image_00001"], "p": [0.2, 0.7]}).to_csv(f, index=False)
    m = PredictionsMember(f)
    res = predict([m], [np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)], tta="d4")
    np.testing.assert_allclose(res.probs[:, 0], [0.2, 0.7], atol=1e-6)
    assert not m.gradients and not m.features and m.identity.startswith("sha256:")


def test_bad_files_are_one_line(tmp_path, folder, capsys):
    f = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["case00", "case01"], "p": [0.2, 1.7]}).to_csv(f, index=False)
    with pytest.raises(DataError, match="not probabilities"):
        PredictionsMember(f)
    pd.DataFrame({"what": ["case00"], "p": [0.2]}).to_csv(f, index=False)
    with pytest.raises(ConfigError, match="No id column"):
        PredictionsMember(f)
    pd.DataFrame({"id": ["case00", "case00"], "p": [0.2, 0.3]}).to_csv(f, index=False)
    with pytest.raises(DataError, match="more than once"):
        PredictionsMember(f)
    assert cli(["evaluate", "cls", "--predictions", str(tmp_path / "none.csv"), "--data", str(folder)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["evaluate", "cls", "--data", str(folder)]) == 2
    assert "--models or --predictions" in capsys.readouterr().err


def test_one_unreadable_image_is_named_and_the_rest_scored(folder, tmp_path, capsys):
    """The one rule for a bad image (as evaluate seg): score the rest, name it and why, fail only when nothing
    could be scored."""
    import shutil

    bad = tmp_path / "with_bad"
    shutil.copytree(folder, bad)
    (bad / "images" / "case03.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    y, p = _probs()
    f = tmp_path / "p.csv"
    pd.DataFrame({"id": [f"case{i:02d}" for i in range(12)], "p": p}).to_csv(f, index=False)
    from lesion.zoo import load_model

    out = tmp_path / "o.parquet"
    # a network member reads the pixels: the corrupt image is named, the other 11 are scored
    net = "derm_cls_efficientnet_lite0_focal"
    assert cli(["evaluate", "cls", "--models", net, "--data", str(bad), "--tta", "none", "--no-cache",
                "--out", str(out)]) == 0
    res = capsys.readouterr()
    summary = json.loads(res.out.strip().splitlines()[-1])
    assert summary["n"] == 11 and summary["n_unreadable"] == 1 and "case03" in res.err
    rows = pd.read_parquet(out).set_index("id")
    assert rows.loc["case03", "error"] and np.isnan(rows.loc["case03", "p_melanoma"])
    assert rows.drop(index="case03")["error"].isna().all()
    assert load_model(net)  # (the shipped model was only read)
    for i in range(12):
        (bad / "images" / f"case{i:02d}.png").write_bytes(b"not an image")
    assert cli(["evaluate", "cls", "--models", net, "--data", str(bad), "--tta", "none", "--no-cache"]) == 2
    assert "None of the 12 image(s) could be read" in capsys.readouterr().err
