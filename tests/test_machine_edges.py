"""Issue "Hold under careless clients", the edges of the machine: each of them is one readable error line (CLI
exit 2, never a traceback), checked before the long work where it can be (a writable destination, free space),
with nothing half-written left looking valid; and the advice given is true (``--no-verify`` when it was not
passed). A full disk is simulated (a write that raises ``OSError(ENOSPC)``), a file-size limit is real
(``RLIMIT_FSIZE`` in a subprocess), a read-only folder is ``/sys/kernel`` (not writable even by root).
"""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lesion.cli import main as cli
from lesion.data.demo import ensure_demo
from lesion.errors import CheckpointError, ConfigError, StorageError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights"
FOCAL = "derm_cls_efficientnet_lite0_focal"
DERM_UNET = "derm_unet_efficientnet_lite0"
READ_ONLY = Path("/sys/kernel")


def _read_only() -> Path:
    try:
        with tempfile.NamedTemporaryFile(dir=READ_ONLY):
            pytest.skip(f"{READ_ONLY} is writable here")
    except OSError:
        return READ_ONLY


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = cli(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def sub(args: list[str], tmp_path: Path, fsize: int | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` in a subprocess (in ``tmp_path``), optionally under ``RLIMIT_FSIZE = fsize`` bytes."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    e = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit)


@pytest.fixture(scope="module")
def derm(tmp_path_factory) -> Path:
    return ensure_demo(tmp_path_factory.mktemp("derm") / "derm", "derm", seed=3, n=12, size=64)


# ------------------------------------------------------------------------------------ the cache folder
def test_lesion_cache_naming_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setenv("LESION_CACHE", str(tmp_path / "afile"))
    rc, err = run(["cache", "info"], capsys)
    assert rc == 2 and "LESION_CACHE" in err and "is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_read_only_cache_folder_is_one_line(derm, monkeypatch, capsys):
    monkeypatch.setenv("LESION_CACHE", str(_read_only()))
    rc, err = run(["evaluate", "cls", "--models", FOCAL, "--data", str(derm), "--tta", "none", "--device", "cpu"],
                  capsys)
    assert rc == 2 and "LESION_CACHE" in err and "cannot be written" in err


# ------------------------------------------------------------------------------------ disk full, size limit
def _tiny_card():
    from lesion.card import ModelCard

    return ModelCard(name="m", task="classification")


def test_disk_full_while_saving_a_checkpoint_is_one_line_nothing_left(tmp_path, monkeypatch):
    import torch

    from lesion.weights import save_checkpoint

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError, match="disk is full"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m", _tiny_card())
    assert list(tmp_path.iterdir()) == []  # no weights, no card, no temporary file


def test_disk_full_between_weights_and_card_leaves_no_weights(tmp_path, monkeypatch):
    import torch

    from lesion.weights import save_checkpoint

    real = Path.write_bytes

    def full_for_cards(self, data):
        if ".json." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_cards)
    with pytest.raises(StorageError):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m", _tiny_card())
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_training_is_one_line(derm, tmp_path, monkeypatch, capsys):
    real = Path.write_bytes

    def full_for_weights(self, data):
        if ".safetensors" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_weights)
    rc, err = run(["train", "seg", "--data", str(derm), "--arch", "unet", "--encoder", "resnet18",
                   "--encoder-depth", "3", "--init", "random", "--size", "64", "--epochs", "1", "--batch-size", "4",
                   "--patience", "0", "--augment", "0", "--device", "cpu", "--val-fraction", "0.5",
                   "--out", str(tmp_path / "out" / "m"), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert rc == 2 and "disk is full" in err
    assert not list((tmp_path / "out").glob("m.*"))


def test_file_size_limit_while_saving_a_checkpoint_is_one_line(tmp_path):
    code = ("import sys, torch\nfrom lesion.card import ModelCard\nfrom lesion.errors import LesionError\n"
            "from lesion.weights import save_checkpoint\n"
            "try:\n    save_checkpoint(torch.nn.Linear(1000, 1000), 'm', ModelCard(name='m', task='classification'))\n"
            "except LesionError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n")
    p = sub(["-c", code], tmp_path, fsize=256 * 1024)
    assert p.returncode == 2 and "file-size limit (EFBIG" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_file_size_limit_while_exporting_onnx_is_one_line(tmp_path):
    p = sub(["-m", "lesion.cli", "export", FOCAL, "--out", str(tmp_path / "m.onnx")], tmp_path, fsize=2 * 1024 * 1024)
    assert p.returncode == 2 and "file-size limit" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []  # no .onnx, no card, no temporary file


def test_export_to_a_read_only_folder_is_refused_before_the_work(capsys):
    rc, err = run(["export", FOCAL, "--out", str(_read_only() / "m.onnx")], capsys)
    assert rc == 2 and "--out: cannot write into" in err and "loading" not in err  # before the model is read


def test_export_without_free_space_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    import lesion.paths

    monkeypatch.setattr(lesion.paths.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    rc, err = run(["export", FOCAL, "--out", str(tmp_path / "m.onnx")], capsys)
    assert rc == 2 and "MB free" in err and "loading" not in err
    assert list(tmp_path.iterdir()) == []


def test_training_without_free_space_is_refused_before_the_data(tmp_path, monkeypatch):
    import lesion.paths
    from lesion.train.loop import plan_destination

    monkeypatch.setattr(lesion.paths.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    with pytest.raises(ConfigError, match="MB free"):
        plan_destination("seg", "m", str(tmp_path / "out" / "m"), str(tmp_path / "runs"), False)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ data and cards
def test_symlink_loop_in_a_data_folder_is_one_line(derm, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(derm, data)
    os.symlink("loop.png", data / "images" / "loop.png")
    rc, err = run(["evaluate", "seg", "--model", "otsu", "--data", str(data)], capsys)
    assert rc == 2 and "loop.png is a symbolic link that loops" in err


def test_card_classes_not_matching_the_network_is_one_line(tmp_path, capsys):
    from lesion.zoo import load_model, read_model_card

    name = "cxr_demo_findings_efficientnet_lite0"
    for suf in (".safetensors", ".json"):
        shutil.copy2(SHIPPED / f"{name}{suf}", tmp_path / f"{name}{suf}")
    card = json.loads((tmp_path / f"{name}.json").read_text())
    card["classes"] = card["classes"][:4]  # the network has 5 outputs
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    path = str(tmp_path / name)
    with pytest.raises(CheckpointError, match="lists 4 classes .* but its network has 5 outputs"):
        read_model_card(path)
    with pytest.raises(CheckpointError, match="5 outputs"):
        load_model(path)
    rc, err = run(["evaluate", "cls", "--models", path, "--data", "demo:cxr", "--tta", "none", "--no-cache",
                   "--device", "cpu"], capsys)
    assert rc == 2 and "5 outputs" in err


# ------------------------------------------------------------------------------------ advice and seg CLI
def _edited_copy(name: str, folder: Path) -> Path:
    """A checkpoint whose bytes no longer match its card's sha256 (one weight nudged): a user's own edit."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = load_file(str(SHIPPED / f"{name}.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1e-3
    save_file(state, str(folder / f"{name}.safetensors"))
    shutil.copy2(SHIPPED / f"{name}.json", folder / f"{name}.json")
    return folder / name


def test_engine_ray_no_verify_is_passed_on_not_advised(tmp_path, monkeypatch, capsys):
    """``--engine ray --no-verify``: the actors load with verify=False (before, they refused and told the user to
    pass --no-verify, which was passed)."""
    pytest.importorskip("ray")
    import lesion.serving.batch as batch
    import lesion.serving.evaluate_cls as ev

    edited = _edited_copy(FOCAL, tmp_path / "w")
    seen = {}

    class Stop(Exception):
        pass

    def fake_init(**kw):
        raise Stop

    real = batch.ray_predict

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(ev, "ray_predict", spy)
    monkeypatch.setattr(batch, "init_local_ray", fake_init)
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # so the local instance would be started here
    with pytest.raises(Stop):  # past the driver's load of the edited checkpoint, stopped before Ray starts
        ev.main(["--models", str(edited), "--data", "demo:derm", "--tta", "none", "--engine", "ray", "--no-verify",
                 "--device", "cpu", "--no-cache"])
    assert seen["verify"] is False
    rc, err = run(["evaluate", "cls", "--models", str(edited), "--data", "demo:derm", "--tta", "none", "--engine",
                   "ray", "--device", "cpu"], capsys)
    assert rc == 2 and "--no-verify" in err  # without the flag the advice is right


def test_evaluate_seg_no_verify_loads_an_edited_checkpoint(derm, tmp_path, capsys):
    edited = _edited_copy(DERM_UNET, tmp_path / "w")
    rc, err = run(["evaluate", "seg", "--model", str(edited), "--data", str(derm)], capsys)
    assert rc == 2 and "--no-verify" in err
    rc, _ = run(["evaluate", "seg", "--model", str(edited), "--data", str(derm), "--no-verify"], capsys)
    assert rc == 0


def test_evaluate_seg_every_image_failed_is_exit_2_with_the_first_reason(derm, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(derm, data)
    for p in (data / "images").iterdir():
        p.write_text("not an image")
    out = tmp_path / "res.csv"
    rc, err = run(["evaluate", "seg", "--model", "otsu", "--data", str(data), "--out", str(out)], capsys)
    assert rc == 2 and "All 12 images failed" in err and "the first:" in err
    assert not out.exists()  # no CSV of NaN rows that looks like a result


def test_serve_edited_checkpoint_is_one_line_and_its_no_verify_exists(tmp_path, monkeypatch, capsys):
    """``lesion serve`` checks each checkpoint before Ray starts (not as a replica that fails to start), and the
    ``--no-verify`` the message advises is one of its options."""
    import socket

    import lesion.weights

    _edited_copy(FOCAL, tmp_path / "w")
    monkeypatch.setattr(lesion.weights, "WEIGHTS_DIR", tmp_path / "w")
    monkeypatch.chdir(tmp_path)
    with socket.socket() as holder:  # so that a serve that got past the checks stops at the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        rc, err = run(["serve", "--models", FOCAL, "--port", port], capsys)
        assert rc == 2 and "do not match their card's sha256" in err and "--no-verify" in err
        rc, err = run(["serve", "--models", FOCAL, "--port", port, "--no-verify"], capsys)
        assert rc == 2 and "already in use" in err  # past the weights check
    rc, err = run(["serve", "--models", FOCAL, "--port", "many"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1  # argparse's error is one line too
