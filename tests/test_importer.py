"""``lesion import``: a timm / torchvision state dict, an ONNX file and a TorchScript file, trained inside the test,
become members whose AUC through lesion-lab equals the same model's AUC computed directly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lesion.cli import main as cli
from lesion.metrics import binary_auc

SIZE = 32
MEAN = STD = (0.5, 0.5, 0.5)


def _images(n: int, seed: int):
    """Flat-ish images whose class is their brightness (noise added): bright = melanoma."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = np.where(y == 1, 170, 80)[:, None, None, None]
    x = np.clip(base + rng.normal(0, 40, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    return x, y


def _to_input(x_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def _train(net: torch.nn.Module, steps: int = 25) -> torch.nn.Module:
    x, y = _images(128, 0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for s in range(steps):
        i = np.arange(s * 16, s * 16 + 16) % len(x)
        out = net(_to_input(x[i]))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.tensor(y[i], dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("plain")
    (root / "images").mkdir()
    x, y = _images(40, 1)
    rows = []
    for i, (im, t) in enumerate(zip(x, y)):
        cv2.imwrite(str(root / "images" / f"im{i:03d}.png"), im[:, :, ::-1])
        rows.append({"image": f"im{i:03d}", "diagnosis": "mel" if t else "nv"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"name": "bright", "domain": "derm", "synthetic": True}))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    net = _train(timm.create_model("resnet10t", pretrained=False, num_classes=1))
    d = tmp_path_factory.mktemp("files")
    torch.save(net.state_dict(), d / "bright.pth")
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, SIZE, SIZE)), d / "bright_traced.pt")
    torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE), str(d / "bright.bin"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return net, d


def _direct_auc(predict_logits, folder: Path) -> float:
    """The AUC computed with plain torch / onnxruntime, no lesion-lab code in the path."""
    import cv2

    labels = pd.read_csv(folder / "labels.csv")
    x = np.stack([cv2.imread(str(folder / "images" / f"{n}.png"))[:, :, ::-1] for n in labels["image"]])
    z = predict_logits(_to_input(x).numpy())
    return binary_auc((labels["diagnosis"] == "mel").astype(int).to_numpy(), z.ravel())


def _evaluate(capsys, model: Path, folder: Path) -> dict:
    assert cli(["evaluate", "cls", "--models", str(model), "--data", str(folder), "--tta", "none",
                "--no-cache"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _import(capsys, *args) -> dict:
    code = cli(["import", *map(str, args)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


STATE = ("--classes", "melanoma", "--size", str(SIZE), "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")


def test_state_dict_torchscript_and_onnx_give_the_direct_auc(trained, folder, tmp_path, capsys):
    import onnxruntime as ort

    net, d = trained
    with torch.no_grad():
        want = _direct_auc(lambda x: net(torch.from_numpy(x)).numpy(), folder)
    sess = ort.InferenceSession(str(d / "bright.bin"), providers=["CPUExecutionProvider"])
    want_onnx = _direct_auc(lambda x: sess.run(None, {"x": x.astype(np.float32)})[0], folder)
    assert want > 0.8 and abs(want_onnx - want) < 1e-4  # the tiny model learnt the planted rule
    out = tmp_path / "models"

    a = _import(capsys, d / "bright.pth", "--arch", "resnet10t", *STATE, "--out", out, "--name", "sd")
    b = _import(capsys, d / "bright_traced.pt", *STATE, "--out", out, "--name", "ts")
    c = _import(capsys, d / "bright.bin", *STATE, "--out", out, "--name", "ox")
    assert (a["kind"], b["kind"], c["kind"]) == ("state_dict", "torchscript", "onnx")  # by content, not suffix
    for info in (a, b, c):
        card = json.loads(Path(info["card"]).read_text())
        assert card["extra"]["source"] == "imported" and card["provenance"]["sha256"]
        assert card["preprocessing"]["size"] == SIZE and card["classes"] == ["melanoma"]
    assert (d / "bright.pth").read_bytes() == (out / "sd.pth").read_bytes()  # a copy; the original untouched
    for name, target in (("sd", want), ("ts", want), ("ox", want_onnx)):
        got = _evaluate(capsys, out / name, folder)
        assert abs(got["auc"] - target) < 1e-4, (name, got["auc"], target)


def test_torchvision_state_dict(folder, tmp_path, capsys):
    import torchvision

    torch.manual_seed(1)
    net = _train(torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=1), steps=30)
    torch.save(net.state_dict(), tmp_path / "tv.pt")
    with torch.no_grad():
        want = _direct_auc(lambda x: net(torch.from_numpy(x)).numpy(), folder)
    info = _import(capsys, tmp_path / "tv.pt", "--arch", "torchvision:mobilenet_v3_small", *STATE,
                   "--out", tmp_path / "m")
    assert abs(_evaluate(capsys, Path(info["path"]).with_suffix(""), folder)["auc"] - want) < 1e-4


def test_imported_member_joins_an_ensemble_with_gradients_said(trained, tmp_path, capsys):
    from lesion.infer.members import build_members
    from lesion.zoo import load_model

    _, d = trained
    out = tmp_path / "m"
    _import(capsys, d / "bright.pth", "--arch", "resnet10t", *STATE, "--out", out, "--name", "sd")
    _import(capsys, d / "bright.bin", *STATE, "--out", out, "--name", "ox")
    sd, ox = build_members([load_model(out / "sd"), load_model(out / "ox")])
    assert sd.gradients and not ox.gradients  # an ONNX file has no layers to hook: the pages use occlusion


@pytest.mark.parametrize("args, message", [
    (("--classes", "melanoma,nevus"), "the file has 1 output; you named 2 classes"),
    (("--size", "40"), "input has 32 height; you stated 40 (--size)"),
    (("--size", "abc"), "--size is S or HxW"),
    (("--scale", "7"), "--scale is 1"),
    (("--resize", "stretch"), "--resize must be one of"),
    (("--domain", "eye"), "--domain must be one of"),
])
def test_wrong_statements_are_one_line(trained, tmp_path, capsys, args, message):
    _, d = trained
    base = dict(zip(STATE[::2], STATE[1::2]))
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [v for kv in base.items() for v in kv]
    code = cli(["import", str(d / "bright.bin"), *flat, "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())  # nothing half-written


def test_state_dict_needs_arch_and_must_fit_it(trained, tmp_path, capsys):
    _, d = trained
    assert cli(["import", str(d / "bright.pth"), *STATE, "--out", str(tmp_path)]) == 2
    assert "needs --arch" in capsys.readouterr().err
    assert cli(["import", str(d / "bright.pth"), "--arch", "resnet18", *STATE, "--out", str(tmp_path)]) == 2
    assert "does not match the model" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"certainly not a model file at all")
    assert cli(["import", str(junk), *STATE, "--out", str(tmp_path)]) == 2
    assert "not a model file" in capsys.readouterr().err


def test_never_into_the_shipped_weights_and_never_over_an_earlier_import(trained, tmp_path, capsys):
    from lesion.train.loop import SHIPPED_WEIGHTS_DIR

    _, d = trained
    assert cli(["import", str(d / "bright.bin"), *STATE, "--out", str(SHIPPED_WEIGHTS_DIR)]) == 2
    assert "shipped weights" in capsys.readouterr().err
    _import(capsys, d / "bright.bin", *STATE, "--out", tmp_path, "--name", "x")
    assert cli(["import", str(d / "bright.bin"), *STATE, "--out", str(tmp_path), "--name", "x"]) == 2
    assert "exists" in capsys.readouterr().err


def test_an_imported_state_dict_exports_to_onnx_with_the_same_logits(trained, tmp_path, capsys):
    import onnxruntime as ort

    net, d = trained
    out = tmp_path / "m"
    _import(capsys, d / "bright.pth", "--arch", "resnet10t", *STATE, "--out", out, "--name", "sd")
    assert cli(["export", str(out / "sd"), "--out", str(tmp_path / "sd.onnx")]) == 0, capsys.readouterr().err
    x = np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "sd.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got.reshape(3, -1), want, atol=1e-4)


def test_an_import_in_the_users_models_folder_is_found_by_name_and_listed(trained, capsys, monkeypatch, tmp_path):
    from lesion.paths import user_models_dir
    from lesion.weights import list_weights
    from lesion.zoo import load_model

    monkeypatch.setenv("LESION_MODELS_DIR", str(tmp_path / "mine"))
    _, d = trained
    _import(capsys, d / "bright.bin", *STATE, "--name", "my_onnx")  # no --out: the user's models folder
    assert (user_models_dir() / "my_onnx.json").is_file()
    assert load_model("my_onnx")[1].name == "my_onnx"  # a bare name, like a shipped one
    assert [c.name for c in list_weights(weights_dir=user_models_dir())] == ["my_onnx"]
