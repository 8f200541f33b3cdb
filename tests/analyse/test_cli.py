"""``lesion analyse …`` on the demo set with predictions files whose answers are planted: the site made worse is
the first finding; planted confident disagreements lead the label-issue CSV; a known ΔAUC lies in its CI; bad
input is one line with exit code 2."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lesion.cli import main
from lesion.data.spec import open_data
from lesion.infer.evaluate import label_vector


@pytest.fixture(scope="module")
def demo():
    ds = open_data("demo:derm")
    frame = ds.to_frame()
    y = label_vector(ds.records, "melanoma")
    return ds, frame, y


def write_preds(path, ids, p):
    pd.DataFrame({"image_id": ids, "prob": np.clip(p, 0, 1)}).to_csv(path, index=False)
    return str(path)


def last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_slices_finds_the_site_made_worse(demo, tmp_path, capsys):
    ds, frame, y = demo
    rng = np.random.default_rng(0)
    p = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.12, len(y)), 0, 1)
    bad = (frame["site"] == "torso").to_numpy()
    p[bad] = rng.random(bad.sum())
    f = write_preds(tmp_path / "p.csv", frame["id"], p)
    assert main(["analyse", "slices", "--predictions", f, "--data", "demo:derm", "--by", "site,sex,age,sex*site",
                 "--min-n", "15", "--n-boot", "200"]) == 0
    out = last_json(capsys)
    g = out["groups"][0]
    assert {"column", "value", "n", "positives", "auc", "ci"} <= set(g)
    torso = [g for g in out["groups"] if g["column"] == "site" and g["value"] == "torso"][0]
    assert torso["n"] == int(bad.sum()) and torso["auc"] < 0.75
    small = [g for g in out["groups"] if g["too_small"]]
    assert small and all(g["auc"] is None for g in small)
    first = out["findings"][0]
    assert (first["column"], first["value"], first["direction"]) == ("site", "torso", "worse") and first["significant"]
    assert out["n"] == int(np.isfinite(y).sum()) and out["threshold_rule"].startswith("Youden")


def test_label_issues_csv_puts_planted_flips_first(demo, tmp_path, capsys):
    ds, frame, y = demo
    rng = np.random.default_rng(1)
    p = np.clip(0.1 + 0.8 * y + rng.normal(0, 0.05, len(y)), 0.01, 0.99)
    flip = rng.choice(len(y), 6, replace=False)
    p[flip] = 1 - p[flip]  # the model is confidently against these labels: as if they were flipped
    f = write_preds(tmp_path / "p.csv", frame["id"], p)
    out_csv = tmp_path / "issues.csv"
    assert main(["analyse", "label-issues", "--predictions", f, "--data", "demo:derm", "--out", str(out_csv),
                 "--duplicates"]) == 0
    out = last_json(capsys)
    df = pd.read_csv(out_csv)
    assert list(df.columns) == ["id", "rank", "score"] and df["rank"].iloc[0] == 1
    assert set(df.head(6)["id"]) == set(frame["id"].iloc[flip])
    assert out["issues"] >= 4 and out["near_duplicates"] >= 0 and "split_leaks" in out
    # the file exists now: a second run without --overwrite is refused in one line
    assert main(["analyse", "label-issues", "--predictions", f, "--data", "demo:derm", "--out", str(out_csv)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_diff_recovers_a_known_delta_auc(demo, tmp_path, capsys):
    ds, frame, y = demo
    rng = np.random.default_rng(2)
    shared = rng.normal(size=len(y))
    a = 1 / (1 + np.exp(-(0.8 * y + 0.6 * shared + 0.8 * rng.normal(size=len(y)))))
    b = 1 / (1 + np.exp(-(2.5 * y + 0.6 * shared + 0.8 * rng.normal(size=len(y)))))
    fa = write_preds(tmp_path / "a.csv", frame["id"], a)
    fb = write_preds(tmp_path / "b.csv", frame["id"], b)
    per = tmp_path / "per_image.csv"
    assert main(["analyse", "diff", "--predictions", fa, "--predictions", fb, "--data", "demo:derm",
                 "--n-boot", "500", "--out", str(per), "--by", "sex"]) == 0
    out = last_json(capsys)
    assert {"auc_a", "auc_b", "delta_auc", "ci", "p_delong", "n"} <= set(out)
    assert out["delta_auc"] == pytest.approx(out["auc_b"] - out["auc_a"])
    assert out["ci"][0] < out["delta_auc"] < out["ci"][1] and out["ci"][0] > 0 and out["p_delong"] < 0.01
    assert out["a"] == "a" and out["b"] == "b" and len(pd.read_csv(per)) == out["n"]


@pytest.mark.parametrize("argv, words", [
    (["analyse", "slices", "--data", "demo:derm"], "--predictions"),
    (["analyse", "diff", "--predictions", "x.csv", "--data", "demo:derm"], "two members"),
    (["analyse", "shortcuts", "--predictions", "x.csv", "--data", "demo:derm"], "needs --models"),
    (["analyse", "slices", "--predictions", "missing.csv", "--data", "demo:derm"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_unknown_by_column_and_bad_option(demo, tmp_path, capsys):
    _, frame, y = demo
    f = write_preds(tmp_path / "p.csv", frame["id"], np.full(len(y), 0.5))
    assert main(["analyse", "slices", "--predictions", f, "--data", "demo:derm", "--by", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and "nope" in err[0] and "site" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["analyse", "slices", "--predictions", f, "--data", "demo:derm", "--min-n", "many"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
