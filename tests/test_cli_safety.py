"""Issue 12, training side: nothing of the user's overwritten or lost, every option checked before any work,
no model saved from a run that learnt nothing, a warning for a model used on the other image domain.

Everything runs on generated data whose answer is known (the demo generator, or blobs whose masks are
drawn), with tiny networks, inside ``tmp_path``: no test writes into the repository (the shipped weights are
only ever read, and their bytes are checked to be unchanged).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lesion.cli import main as cli
from lesion.data.demo import ensure_demo
from lesion.errors import ConfigError, DataError
from lesion.train import loop
from lesion.train.cls import ClsTrainConfig
from lesion.train.cxr import CxrTrainConfig
from lesion.train.seg import SegTrainConfig, train_segmentation

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights"
TINY_SEG = ["--arch", "unet", "--encoder", "resnet18", "--encoder-depth", "3", "--init", "random", "--size", "64",
            "--batch-size", "4", "--patience", "0", "--augment", "0", "--device", "cpu", "--val-fraction", "0.25"]


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``lesion …`` in this process: (exit code, stderr); argparse's own errors exit through SystemExit."""
    try:
        rc = cli(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    return [line for line in err.replace("\r", "\n").splitlines() if "error" in line]


def warnings_in(err: str) -> list[str]:
    """The ``lesion: warning:`` lines of stderr (a progress bar may share the line)."""
    return ["lesion: warning:" + line.split("lesion: warning:", 1)[1] for line in err.splitlines()
            if "lesion: warning:" in line]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def derm(tmp_path_factory) -> Path:
    """12 generated dermoscopy images (64 px) with their lesion masks."""
    return ensure_demo(tmp_path_factory.mktemp("derm") / "derm", "derm", seed=3, n=12, size=64)


@pytest.fixture(scope="module")
def xrays(tmp_path_factory) -> Path:
    """6 generated chest X-rays (64 px) with lung masks and findings."""
    return ensure_demo(tmp_path_factory.mktemp("cxr") / "cxr", "cxr", seed=3, n=6, size=64)


def _tiny_seg_cfg(data: Path, tmp: Path, **kw) -> SegTrainConfig:
    base = dict(data=(str(data),), arch="unet", encoder="resnet18", encoder_depth=3, init="random", size=64,
                epochs=1, batch_size=4, patience=0, augment=0.0, val_fraction=0.25, device="cpu",
                runs_dir=str(tmp / "runs"))
    return SegTrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------------------
# options: one line, exit code 2, before any work
# ---------------------------------------------------------------------------------------------------------
def test_batch_size_zero_is_exit_2_for_every_command(tmp_path, capsys):
    runs = ["--runs-dir", str(tmp_path / "runs")]
    for argv in (["train", "seg", "--data", "demo:derm", "--batch-size", "0", *runs],
                 ["train", "cls", "--data", "demo:derm", "--batch-size", "0", *runs],
                 ["train", "cxr", "--data", "demo:cxr", "--batch-size", "0", *runs],
                 ["evaluate", "cls", "--models", "derm_cls_efficientnet_lite0_focal", "--data", "demo:derm",
                  "--batch-size", "0"],
                 ["evaluate", "cls", "--models", "derm_cls_efficientnet_lite0_focal", "--data", "demo:derm",
                  "--batch-size", "-3"]):
        rc, err = run(argv, capsys)
        assert rc == 2, argv
        assert len(error_lines(err)) == 1 and "--batch-size must be >= " in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


BAD_OPTIONS = [
    (["train", "seg", "--data", "demo:derm", "--size", "0"], "--size must be >= 1"),
    (["train", "seg", "--data", "demo:derm", "--size", "-64"], "--size must be >= 1"),
    (["train", "seg", "--data", "demo:derm", "--size", "100"], "multiple of 32"),
    (["train", "seg", "--data", "demo:derm", "--size", "abc"], "invalid int value"),
    (["train", "seg", "--data", "demo:derm", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "seg", "--data", "demo:derm", "--lr", "0"], "--lr must be > 0"),
    (["train", "seg", "--data", "demo:derm", "--patience", "-1"], "--patience must be >= 0"),
    (["train", "seg", "--data", "demo:derm", "--val-fraction", "1"], "--val-fraction must be > 0 and < 1"),
    (["train", "seg", "--data", "demo:derm", "--ema-decay", "1.5"], "--ema-decay must be >= 0 and < 1"),
    (["train", "seg", "--data", "demo:derm", "--threads", "-2"], "--threads: must be >= 0"),
    (["train", "cls", "--size", "0"], "--size must be >= 16"),
    (["train", "cls", "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "cls", "--lr=-1e-3"], "--lr must be > 0"),
    (["train", "cls", "--fold", "5"], "--fold must be in 0..4"),
    (["train", "cls", "--n-splits", "1"], "--n-splits must be >= 2"),
    (["train", "cls", "--name", "../up"], "--name must be a plain file name"),
    (["train", "cxr", "--size", "-1"], "--size must be >= 16"),
    (["train", "cxr", "--val-fraction", "0"], "--val-fraction must be > 0 and < 1"),
    (["train", "cxr", "--runs-dir", ""], "--runs-dir '' needs --out"),
    (["evaluate", "seg", "--model", "otsu", "--data", "demo:derm", "--threshold", "2"], "--threshold must be in"),
    (["export", "derm_cls_efficientnet_lite0_focal", "--out", "x.onnx", "--size", "8"], "--size must be >= 32"),
    (["export", "derm_cls_efficientnet_lite0_focal", "--out", "x.onnx", "--opset", "99"], "--opset must be"),
    (["export", "derm_cls_efficientnet_lite0_focal", "--out", "x.onnx", "--int8", "--calibrate", "demo:derm",
      "--calib-images", "0"], "--calib-images must be >= 1"),
    (["demo", "data", "--seed", "-1"], "--seed must be >= 0"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a[:2] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line_and_exit_2_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder or output would land here, not in the repository
    rc, err = run(argv, capsys)
    assert rc == 2 and message in err, err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_python_callers_get_the_same_range_check_as_the_cli():
    with pytest.raises(ConfigError, match="--batch-size must be >= 1, got 0"):
        SegTrainConfig(data=("demo:derm",), batch_size=0)
    with pytest.raises(ConfigError, match="--size must be a whole number, got 'big'"):
        ClsTrainConfig(size="big")
    with pytest.raises(ConfigError, match="--epochs must be >= 1"):
        CxrTrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="--val-fraction"):
        SegTrainConfig(data=("demo:derm",), val_fraction=1.0)


# ---------------------------------------------------------------------------------------------------------
# destinations: refused before the data is read, shipped checkpoints never replaced, every run its own folder
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["seg", "cls", "cxr"])
def test_train_refuses_existing_destination_before_loading_data(task, tmp_path, capsys):
    """The data path does not exist: an error about the destination proves it came first."""
    for existing in ("m.safetensors", "m.json"):
        (tmp_path / existing).write_text("keep")
        rc, err = run(["train", task, "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "m"),
                       "--runs-dir", str(tmp_path / "runs")], capsys)
        assert rc == 2 and "already exists" in err and "--overwrite" in err, err
        assert (tmp_path / existing).read_text() == "keep"
        (tmp_path / existing).unlink()
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_folder_where_a_file_goes_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "m.safetensors").mkdir()
    (tmp_path / "afile").write_text("keep")
    missing = str(tmp_path / "no-such-data")
    for argv, message in (
        (["train", "seg", "--data", missing, "--out", str(tmp_path / "m"), "--overwrite"], "is a folder"),
        (["train", "cls", "--data", missing, "--out", str(tmp_path / "afile" / "m")], "is a file"),
        (["train", "seg", "--data", missing, "--runs-dir", str(tmp_path / "afile")], "is a file, not a folder"),
        (["evaluate", "seg", "--model", "otsu", "--data", missing, "--out", str(tmp_path)], "is a folder"),
        (["evaluate", "cls", "--models", "x", "--data", missing, "--out", str(tmp_path / "afile" / "p.parquet")],
         "is a file"),
        (["export", "x", "--out", str(tmp_path / "afile" / "m.onnx")], "is a file"),
    ):
        rc, err = run(argv, capsys)
        assert rc == 2 and message in err, (argv, err)
    assert (tmp_path / "afile").read_text() == "keep"


def test_shipped_checkpoint_is_never_replaced(tmp_path, capsys, monkeypatch):
    # the real shipped folder: refused (with --overwrite) before the (missing) data is even looked at
    target = SHIPPED / "derm_unet_efficientnet_lite0"
    before = {p: sha(p) for p in (target.with_suffix(".safetensors"), target.with_suffix(".json"))}
    rc, err = run(["train", "seg", "--data", str(tmp_path / "no-such-data"), "--out", str(target), "--overwrite",
                   "--runs-dir", str(tmp_path / "runs")], capsys)
    assert rc == 2 and "shipped with lesion-lab" in err and "derm_unet_efficientnet_lite0" in err, err
    assert {p: sha(p) for p in before} == before
    # a stand-in shipped folder, so that a real run reaches the save: still refused, files unchanged
    fake = tmp_path / "shipped"
    fake.mkdir()
    (fake / "mine.safetensors").write_bytes(b"shipped weights")
    (fake / "mine.json").write_text("{}")
    monkeypatch.setattr(loop, "SHIPPED_WEIGHTS_DIR", fake)
    assert loop.is_shipped(fake / "mine.json") and not loop.is_shipped(tmp_path / "mine.json")
    with pytest.raises(ConfigError, match="shipped with lesion-lab"):
        loop.plan_destination("seg", "x", str(fake / "mine"), str(tmp_path / "runs"), overwrite=True)
    assert (fake / "mine.safetensors").read_bytes() == b"shipped weights"


def test_default_run_writes_its_own_run_folder_never_weights(derm, tmp_path, monkeypatch, capsys):
    from lesion.zoo import load_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LESION_WEIGHTS_DIR", str(tmp_path / "weights"))
    shipped = {p.name: sha(p) for p in SHIPPED.glob("*.safetensors")}
    rc, err = run(["train", "seg", "--data", str(derm), "--epochs", "1", "--name", "blob", *TINY_SEG], capsys)
    assert rc == 0, err
    folders = sorted((tmp_path / "runs" / "seg").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("blob-20") and folders[0].name.endswith("Z")
    first = folders[0]
    assert {p.name for p in first.iterdir()} == {"blob.safetensors", "blob.json", "log.csv", "best.safetensors",
                                                 "best.json"}
    model, card = load_model(str(first / "blob"))
    assert card.name == "blob" and card.provenance.sha256 == sha(first / "blob.safetensors")
    assert not (tmp_path / "weights").exists()
    kept = {p.name: sha(p) for p in first.iterdir()}
    # the same name again: a second folder; the first run's log, best and checkpoint are untouched
    rc, err = run(["train", "seg", "--data", str(derm), "--epochs", "1", "--name", "blob", "--seed", "1",
                   *TINY_SEG], capsys)
    assert rc == 0, err
    folders = sorted((tmp_path / "runs" / "seg").iterdir())
    assert len(folders) == 2 and {p.name: sha(p) for p in first.iterdir()} == kept
    assert {p.name: sha(p) for p in SHIPPED.glob("*.safetensors")} == shipped


def test_overwrite_replaces_a_users_checkpoint_but_keeps_every_earlier_runs_log(derm, tmp_path):
    out = tmp_path / "models" / "mine"
    a = train_segmentation(_tiny_seg_cfg(derm, tmp_path, out=str(out)))
    with pytest.raises(ConfigError, match="already exists"):
        train_segmentation(_tiny_seg_cfg(derm, tmp_path, out=str(out), seed=1))
    b = train_segmentation(_tiny_seg_cfg(derm, tmp_path, out=str(out), seed=1, overwrite=True))
    assert a.sha256 != b.sha256 and sha(out.with_suffix(".safetensors")) == b.sha256
    assert json.loads(out.with_suffix(".json").read_text())["provenance"]["sha256"] == b.sha256
    logs = sorted((tmp_path / "runs" / "seg").glob("mine-*/log.csv"))
    assert len(logs) == 2  # each run its own log; the refused run left no folder behind
    assert a.extra["run_dir"] != b.extra["run_dir"]


# ---------------------------------------------------------------------------------------------------------
# a run that took no optimiser step saves nothing
# ---------------------------------------------------------------------------------------------------------
def test_zero_step_run_saves_nothing(derm, tmp_path, capsys):
    # 12 images, 25 % held out -> 9 training images; a batch of 16 never fills (the last batch is dropped)
    rc, err = run(["train", "seg", "--data", str(derm), "--out", str(tmp_path / "m"), "--runs-dir",
                   str(tmp_path / "runs"), *TINY_SEG, "--batch-size", "16"], capsys)
    assert rc == 2 and "no optimiser step" in err and "--batch-size" in err, err
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.json").exists()
    assert not (tmp_path / "runs").exists()


def test_a_loop_whose_epoch_took_no_step_writes_nothing(tmp_path):
    import torch

    from lesion.card import ModelCard

    class NoSteps:
        model = torch.nn.Linear(1, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        steps_per_epoch = 1

        def train_epoch(self, epoch, after_step):
            return {"train_loss": 0.0}

        def validate(self, model):
            return {"val_loss": 0.0, "val_score": 1.0}

    card = ModelCard(name="x", task="segmentation", domain="derm")
    with pytest.raises(DataError, match="no optimiser step"):
        loop.fit(NoSteps(), loop.LoopConfig(epochs=2, monitor="val_score"), run_dir=tmp_path / "run", card=card)
    assert not (tmp_path / "run").exists()


def test_cls_with_one_training_image_per_epoch_is_refused_before_training(tmp_path):
    from lesion.data.records import Dataset, Record
    from lesion.train.cls import train_classifier

    from PIL import Image

    recs = []
    for i, split in enumerate(("train", "val", "val")):  # one training image: no step of two images exists
        p = tmp_path / f"i{i}.png"
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(p)
        recs.append(Record(id=f"i{i}", image_path=p, diagnosis="mel" if i < 2 else "nv", group=f"g{i}",
                           meta={"split": split}))
    ds = Dataset("three", "plain", "derm", tmp_path, recs, ("mel", "nv"), synthetic=True)
    cfg = ClsTrainConfig(arch="resnet10t", size=32, epochs=1, batch_size=2, device="cpu", split="column",
                         runs_dir=str(tmp_path / "runs"), balance=False)
    with pytest.raises(DataError, match="needs two"):
        train_classifier(cfg, dataset=ds)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------
# a model on the other image domain
# ---------------------------------------------------------------------------------------------------------
def test_lung_model_on_dermoscopy_warns(derm, capsys):
    rc, err = run(["evaluate", "seg", "--model", str(SHIPPED / "lung_unet_efficientnet_lite0"), "--data", str(derm)],
                  capsys)
    assert rc == 0
    warning = warnings_in(err)
    assert len(warning) == 1 and "chest X-rays" in warning[0] and "dermoscopy" in warning[0]
    rc, err = run(["evaluate", "seg", "--model", "otsu", "--data", str(derm)], capsys)
    assert rc == 0 and "lesion: warning:" not in err  # Otsu has no training domain


def test_skin_classifier_on_xrays_warns(xrays, capsys):
    rc, err = run(["evaluate", "cls", "--models", str(SHIPPED / "derm_cls_efficientnet_lite0_focal"), "--data",
                   str(xrays), "--tta", "none", "--no-cache", "--device", "cpu"], capsys)
    warning = [w for w in warnings_in(err) if "trained on" in w]
    assert warning and "dermoscopy" in warning[0] and "chest X-rays" in warning[0], err


# ---------------------------------------------------------------------------------------------------------
# export: a bad --calibrate leaves no fp32 file behind
# ---------------------------------------------------------------------------------------------------------
def test_int8_bad_calibration_leaves_no_fp32_file(tmp_path, capsys):
    model = str(SHIPPED / "derm_cls_efficientnet_lite0_focal")
    out = tmp_path / "e" / "m.onnx"
    # a calibration folder that does not exist: refused before the fp32 export
    rc, err = run(["export", model, "--out", str(out), "--size", "32", "--int8", "--calibrate",
                   str(tmp_path / "missing")], capsys)
    assert rc == 2 and "missing" in err, err
    assert not out.parent.exists() or not any(out.parent.iterdir())
    # a folder of files that are not images: found only while calibrating, after the fp32 export
    bad = tmp_path / "bad" / "images"
    bad.mkdir(parents=True)
    for i in range(3):
        (bad / f"x{i}.png").write_bytes(b"not a png")
    (out.parent).mkdir(parents=True, exist_ok=True)
    (out.parent / "m.json").write_text("an earlier card of the user's")
    rc, err = run(["export", model, "--out", str(out), "--size", "32", "--int8", "--calibrate", str(bad.parent),
                   "--overwrite"], capsys)
    assert rc == 2 and "x" in err and "Traceback" not in err, err
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == ["m.json"]  # this run's m.onnx is gone; the file that was there before is not removed


# ---------------------------------------------------------------------------------------------------------
# demo data: --out never replaces a folder the generator did not write
# ---------------------------------------------------------------------------------------------------------
def test_demo_data_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "out" / "derm"
    mine.mkdir(parents=True)
    (mine / "my_image.png").write_bytes(b"user data")
    rc, err = run(["demo", "data", "--domain", "derm", "--out", str(tmp_path / "out"), "--n", "2", "--force"], capsys)
    assert rc == 2 and "never replaced" in err, err
    assert (mine / "my_image.png").read_bytes() == b"user data"
    (tmp_path / "file").write_text("x")
    rc, err = run(["demo", "data", "--out", str(tmp_path / "file")], capsys)
    assert rc == 2 and "is a file" in err
    assert os.listdir(mine) == ["my_image.png"]
