"""``lesion export``: ONNX agrees with PyTorch, the card tells the truth, int8, CLI errors, the seed-001 recipe.

A tiny resnet10t (64 px, one logit) is trained for a few steps on generated blob images (bright blob =
melanoma, dark blob = nevus) so that its outputs vary, saved as fp16 safetensors + card like every
checkpoint, and exported once per module.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.card import DataSource, Metric, ModelCard
from lesion.zoo import load_model
from lesion.classify.models import ClsModelConfig, Preprocessing, create_classifier, normalize, \
    prepare_image
from lesion.errors import ConfigError
from lesion.export import OnnxClassifier, export_onnx, read_card

SIZE = 64


def blob_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` RGB uint8 images of varied (non-square) sizes; even = bright blob (label 1), odd = dark blob."""
    rng = np.random.default_rng(seed)
    imgs, y = [], []
    for i in range(n):
        h, w = int(rng.integers(50, 120)), int(rng.integers(50, 120))
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w, rng.uniform(0.12, 0.3) * min(h, w)
        img = rng.normal(130, 20, (h, w, 3))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(190, 240) if i % 2 == 0 else rng.uniform(20, 70)
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        y.append(float(i % 2 == 0))
    return imgs, np.asarray(y, np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Weights file of a briefly trained resnet10t melanoma classifier (with its card beside it)."""
    from lesion.weights import save_checkpoint

    torch.manual_seed(0)
    cfg = ClsModelConfig(arch="resnet10t", num_classes=1, size=SIZE, init="random")
    model = create_classifier(cfg)
    prep = Preprocessing(size=SIZE)
    imgs, y = blob_images(32)
    x = torch.from_numpy(normalize(np.stack([prepare_image(im, prep) for im in imgs]), prep))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(12):
        idx = torch.randperm(len(x))[:16]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, 0], torch.from_numpy(y)[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    card = ModelCard(name="tiny_cls", task="classification", domain="derm", classes=("melanoma",), target="melanoma",
                     model=asdict(cfg), preprocessing=prep,
                     data=(DataSource("blobs", synthetic=True, licences=("synthetic test images",)),),
                     metrics=(Metric("auc", 0.9, "blobs", n=32),))
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("w") / "tiny_cls", card)


@pytest.fixture(scope="module")
def exported(tiny: Path, tmp_path_factory) -> Path:
    return Path(export_onnx(str(tiny), tmp_path_factory.mktemp("onnx") / "tiny.onnx").path)


def test_onnxruntime_matches_pytorch_for_several_batch_sizes(tiny: Path, exported: Path):
    from lesion.infer.engine import predict

    model, card = load_model(str(tiny))
    imgs, y = blob_images(11, seed=5)
    ref = predict([(model, card)], imgs, tta="none", device="cpu").probs  # the app's engine, PyTorch fp32
    assert ref.shape == (11, 1) and ref.std() > 0.01  # the model is not constant: agreement means something
    clf = OnnxClassifier(exported)
    for batch in (1, 4, 11):
        p = clf.predict(imgs, batch_size=batch)
        assert p.shape == (11, 1) and p.dtype == np.float32
        assert np.abs(p - ref).max() <= 1e-4
    logits = clf.predict(imgs, output="logits")
    np.testing.assert_allclose(1 / (1 + np.exp(-logits.astype(np.float64))), ref, atol=1e-4)


def test_card_describes_the_export(tiny: Path, exported: Path):
    import onnx

    src = json.loads(tiny.with_suffix(".json").read_text())
    card = read_card(exported)
    ex = card.extra
    assert exported.with_suffix(".json").is_file()
    assert card.preprocessing.to_dict() == src["preprocessing"]
    assert ex["source"]["name"] == "tiny_cls"
    assert ex["source"]["sha256"] == hashlib.sha256(tiny.read_bytes()).hexdigest() == src["provenance"]["sha256"]
    assert card.sha256 == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert card.provenance.file_size_bytes == exported.stat().st_size
    assert (card.task, card.classes, card.multilabel, ex["activation"]) == \
        ("classification", ("melanoma",), False, "sigmoid")
    assert ex["inputs"] == [{**ex["inputs"][0], "name": "input", "shape": ["batch", 3, SIZE, SIZE],
                             "dtype": "float32", "layout": "NCHW"}]
    assert [o["name"] for o in ex["outputs"]] == ["probabilities", "logits"]
    assert ex["check"]["max_abs_diff_probability"] <= 1e-4
    assert card.provenance.versions["onnxruntime"] and ex["opset"] == 17
    # the source's metrics (with the data they were measured on) and licences travel with the export
    assert card.metric("auc") == Metric("auc", 0.9, "blobs", n=32) and card.licences == ("synthetic test images",)
    m = onnx.load(str(exported))
    assert m.opset_import[0].version == 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch axis
    assert "/" not in json.dumps(ex["source"])  # no machine paths in the card


def test_size_override_and_overwrite(tiny: Path, exported: Path, tmp_path: Path):
    out = tmp_path / "big.onnx"
    card = export_onnx(str(tiny), out, size=96)
    assert card.preprocessing.size == 96 and card.extra["native_size"] == SIZE
    assert card.extra["inputs"][0]["shape"] == ["batch", 3, 96, 96]
    src = json.loads(tiny.with_suffix(".json").read_text())["preprocessing"]
    assert {k: v for k, v in card.preprocessing.to_dict().items() if k != "size"} == \
        {k: v for k, v in src.items() if k != "size"}
    assert OnnxClassifier(out).predict(blob_images(2)[0]).shape == (2, 1)
    with pytest.raises(ConfigError, match="already exist"):
        export_onnx(str(tiny), out)
    assert export_onnx(str(tiny), out, overwrite=True).preprocessing.size == SIZE


def test_runtime_refuses_a_file_changed_after_export(exported: Path, tmp_path: Path):
    from lesion.errors import CheckpointError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(exported.read_bytes()[:-10] + b"0123456789")
    shutil.copy(exported.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(CheckpointError, match="sha256"):
        OnnxClassifier(bad)


def test_multitask_with_metadata_input(tmp_path: Path):
    from lesion.classify.metadata import encode_metadata
    from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet

    torch.manual_seed(1)
    cfg = MultiTaskConfig(arch="resnet10t", num_classes=1, size=SIZE, use_metadata=True)
    model = MultiTaskNet(cfg).eval()
    with torch.no_grad():  # make the metadata matter
        model.meta_head.weight.normal_(0, 1.0)
    prep = Preprocessing(size=SIZE)
    card = ModelCard(name="tiny_mt", task="multitask", classes=("melanoma",), model=asdict(cfg), preprocessing=prep)
    out = tmp_path / "mt.onnx"
    written = export_onnx((model, card), out)
    assert [i["name"] for i in written.extra["inputs"]] == ["input", "metadata"] and written.uses_metadata
    clf = OnnxClassifier(out)
    imgs = blob_images(3)[0]
    x = clf.preprocess(imgs)
    meta = np.stack([encode_metadata({}), encode_metadata({"age": 70, "sex": "male", "site": "back"}),
                     encode_metadata({"age": 20, "sex": "female", "site": "face"})])
    with torch.inference_mode():
        ref = torch.sigmoid(model(torch.from_numpy(x), torch.from_numpy(meta))["logits"]).numpy()
        ref_unknown = torch.sigmoid(model(torch.from_numpy(x))["logits"]).numpy()
    assert np.abs(clf.run(x, meta)["probabilities"] - ref).max() <= 1e-4
    assert np.abs(clf.run(x)["probabilities"] - ref_unknown).max() <= 1e-4  # meta None = all unknown
    assert np.abs(ref - ref_unknown).max() > 1e-3  # the metadata input is really used


def _calib_folder(root: Path, n: int = 24) -> Path:
    import cv2

    (root / "images").mkdir(parents=True)
    for i, img in enumerate(blob_images(n, seed=9)[0]):
        cv2.imwrite(str(root / "images" / f"c{i:02d}.png"), img[..., ::-1])
    return root


def test_cli_int8_is_smaller_and_ranks_like_fp32(tiny: Path, tmp_path: Path, capsys):
    from scipy.stats import spearmanr

    from lesion.cli import main

    out = tmp_path / "m.onnx"
    rc = main(["export", str(tiny), "--format", "onnx", "--out", str(out), "--int8",
               "--calibrate", str(_calib_folder(tmp_path / "calib")), "--calib-images", "16"])
    assert rc == 0
    q = tmp_path / "m.int8.onnx"
    assert q.is_file() and q.with_suffix(".json").is_file()
    assert "m.int8.onnx" in capsys.readouterr().out
    assert q.stat().st_size < 0.4 * out.stat().st_size
    qcard = read_card(q)
    assert qcard.provenance.dtype == "int8" and qcard.extra["quantization"]["method"] == "static"
    assert qcard.extra["quantization"]["calibration_images"] == 16
    assert qcard.extra["quantization"]["from"]["sha256"] == read_card(out).sha256
    assert qcard.preprocessing == read_card(out).preprocessing
    assert qcard.metrics == read_card(out).metrics
    # how the file was made, with machine paths cut to their last part (the card travels with the file)
    assert read_card(out).provenance.command.startswith(f"lesion export {tiny.name} --format onnx")
    assert read_card(out).provenance.versions["torch"] and qcard.provenance.command == read_card(out).provenance.command
    imgs, y = blob_images(24, seed=11)
    p32, p8 = OnnxClassifier(out).predict(imgs)[:, 0], OnnxClassifier(q).predict(imgs)[:, 0]
    assert spearmanr(p32, p8).statistic >= 0.9
    assert np.abs(p32 - p8).max() < 0.1


@pytest.mark.parametrize("case, args, message", [
    ("unknown model", ["no_such_model_xyz"], "No weights file found"),
    ("segmentation", ["derm_unet_efficientnet_lite0"], "segmentation model"),
    ("format", ["TINY", "--format", "tflite"], "Supported: onnx"),
    ("suffix", ["TINY", "--out", "OUTDIR/model.json"], "must name a .onnx file"),
    ("int8 without data", ["TINY", "--int8"], "--int8 needs --calibrate"),
])
def test_cli_errors_are_one_readable_line(tiny: Path, tmp_path: Path, capsys, case, args, message):
    from lesion.cli import main

    args = [a.replace("TINY", str(tiny)).replace("OUTDIR", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "x.onnx")]
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress lines may come first; the error is one line
    assert last.startswith("lesion: error:") and message in last and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_never_overwrites_without_flag_nor_the_source(tiny: Path, tmp_path: Path, capsys):
    from lesion.cli import main

    out = tmp_path / "x.onnx"
    out.write_bytes(b"precious bytes")
    assert main(["export", str(tiny), "--out", str(out)]) == 2
    assert out.read_bytes() == b"precious bytes" and not out.with_suffix(".json").exists()
    assert "--overwrite" in capsys.readouterr().err
    # FILE.onnx beside the source would write its card over the source card: refused even with --overwrite
    src_card = tiny.with_suffix(".json").read_bytes()
    assert main(["export", str(tiny), "--out", str(tiny.with_suffix(".onnx")), "--overwrite"]) == 2
    assert tiny.with_suffix(".json").read_bytes() == src_card and not tiny.with_suffix(".onnx").exists()
    assert "source model file" in capsys.readouterr().err


def test_cli_corrupt_weights(tiny: Path, tmp_path: Path, capsys):
    from lesion.cli import main

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(tiny.read_bytes()[:1000])
    shutil.copy(tiny.with_suffix(".json"), bad.with_suffix(".json"))
    assert main(["export", str(bad), "--out", str(tmp_path / "b.onnx")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not (tmp_path / "b.onnx").exists()


def test_seed001_recipe_resolves_and_its_inception_v3_exports(tmp_path: Path):
    from lesion.train.cls import RECIPES, build_model, config_from_args, parse_args

    cfg = config_from_args(parse_args(["--recipe", "seed001-inception-v3", "--size", "80", "--data", "x"]))
    assert (cfg.arch, cfg.init, cfg.target, cfg.loss, cfg.recipe) == \
        ("inception_v3", "random", "malignant", "bce", "seed001-inception-v3")
    assert cfg.size == 80  # explicit options override the recipe
    assert config_from_args(parse_args(["--recipe", "seed001-inception-v3"])).size == 299
    assert set(RECIPES["seed001-inception-v3"]["values"]) <= set(vars(parse_args([])))  # every key is an option
    with pytest.raises(ConfigError, match="seed001-inception-v3"):
        parse_args(["--recipe", "seed01"])

    prep = Preprocessing(size=cfg.size)
    torch.manual_seed(0)
    model, section = build_model(cfg, 1, prep)
    card = ModelCard(name="seed001", task="classification", classes=("malignant",), model=section, preprocessing=prep)
    written = export_onnx((model.eval(), card), tmp_path / "seed001.onnx")
    assert written.extra["check"]["max_abs_diff_probability"] <= 1e-4
    assert OnnxClassifier(tmp_path / "seed001.onnx").predict(blob_images(2)[0]).shape == (2, 1)
