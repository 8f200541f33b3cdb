"""Checkpoints + cards (save, resolve, strict load, corrupt files) and the offline EfficientNet-Lite port."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from lesion.card import ModelCard
from lesion.errors import CheckpointError, ConfigError
from lesion.weights import (
    LITE_MEAN,
    LITE_STD,
    init_encoder_from_imagenet,
    list_weights,
    load_strict,
    port_efficientnet_lite,
    read_state_file,
    resolve_weights,
    save_checkpoint,
    state_digest,
)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


@pytest.fixture(scope="module")
def lite0():
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_strict(model, port_efficientnet_lite(0), what="ported lite0")
    return model


def _imagenet_top5(model, image: np.ndarray) -> list[int]:
    """Centre crop, resize to 224, scale to 0..1 and normalise with the port's mean/std (0.5, 0.5)."""
    import cv2

    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.array(LITE_MEAN, np.float32)) / np.array(LITE_STD, np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
    return logits[0].topk(5).indices.tolist()


def test_port_lite0_recognises_a_cat_and_a_coffee_cup(lite0):
    from skimage import data

    # ImageNet ids: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat.
    cat = _imagenet_top5(lite0, data.chelsea())
    assert cat[0] in range(281, 286), cat
    # 967 espresso, 968 cup, 504 coffee mug.
    cup = _imagenet_top5(lite0, data.coffee())
    assert cup[0] in (967, 968, 504), cup


def test_port_keys_are_timm_keys_and_first_tensor_is_the_stem():
    import timm

    ported = port_efficientnet_lite(0)
    ref = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert list(ported) == list(ref)
    assert ported["conv_stem.weight"].shape == (32, 3, 3, 3)
    assert ported["classifier.weight"].shape == (1000, 1280)


def test_port_unknown_variant_lists_the_supported_ones():
    with pytest.raises(ConfigError, match="0, 1, 2"):
        port_efficientnet_lite(5)


def test_init_encoder_from_imagenet_loads_the_smp_lite_encoder():
    import segmentation_models_pytorch as smp

    model = smp.Unet("tu-efficientnet_lite0", encoder_weights=None, classes=1)
    report = init_encoder_from_imagenet(model, "tu-efficientnet_lite0")
    assert report["init"] == "imagenet-lite-port"
    assert report["missing"] == []
    assert report["unexpected_non_head"] == []  # only conv_head / bn2 / classifier are left over
    assert {k.split(".")[0] for k in report["unexpected"]} == {"conv_head", "bn2", "classifier"}
    ported = port_efficientnet_lite(0)
    assert torch.equal(model.encoder.model.conv_stem.weight, ported["conv_stem.weight"])


def test_init_encoder_other_encoder_stays_random():
    import segmentation_models_pytorch as smp

    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=1)
    before = model.encoder.conv1.weight.clone()
    report = init_encoder_from_imagenet(model, "resnet18")
    assert report["init"] == "random"
    assert torch.equal(model.encoder.conv1.weight, before)


def test_load_strict_names_missing_unexpected_and_shape():
    model = _tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"] = torch.zeros(4, 3, 5, 5)
    state["extra.weight"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(CheckpointError) as err:
        load_strict(model, state)
    msg = str(err.value)
    assert "1 missing keys: 1.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "0.weight: checkpoint (4, 3, 5, 5) vs model (4, 3, 3, 3)" in msg


def load_state_and_card(name_or_path):
    wpath, card = resolve_weights(name_or_path)
    return read_state_file(wpath), card


def _card(task="segmentation", domain="", **kw) -> ModelCard:
    return ModelCard(name="x", task=task, domain=domain, **kw)


def test_save_and_load_roundtrip_fp16(tmp_path):
    model = _tiny()
    path = save_checkpoint(model, tmp_path / "tiny", _card(domain="derm"))
    assert path == tmp_path / "tiny.safetensors"
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["schema"] == 2 and card["name"] == "tiny" and card["provenance"]["dtype"] == "float16"
    assert card["provenance"]["file_size_bytes"] == path.stat().st_size
    assert card["provenance"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    state, card2 = load_state_and_card(tmp_path / "tiny")
    assert card2.path == str(path) and card2.name == "tiny"
    w = model.state_dict()["0.weight"]
    assert state["0.weight"].dtype == torch.float32
    # fp16 keeps ~3 significant digits: |x| < 1 -> error < 2**-11.
    assert torch.allclose(state["0.weight"], w, atol=1e-3)
    assert state["1.num_batches_tracked"].dtype == torch.int64


def test_save_refuses_to_overwrite(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "m", _card())
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(_tiny(), tmp_path / "m", _card())
    save_checkpoint(_tiny(), tmp_path / "m", _card(notes="second"), overwrite=True)
    assert json.loads((tmp_path / "m.json").read_text())["notes"] == "second"
    assert not list(tmp_path.glob(".*.tmp*"))  # the atomic writes leave no temporary file behind


def test_state_digest_is_the_sha256_of_names_and_bytes():
    a, b = _tiny(), _tiny()
    d = state_digest(a)
    assert len(d) == 64 and int(d, 16) >= 0  # sha256 hex
    assert state_digest(b) == d == state_digest(a.state_dict())  # same weights: same digest; module or state dict
    assert state_digest(dict(reversed(list(a.state_dict().items())))) == d  # key order does not matter
    assert state_digest(a.to(memory_format=torch.channels_last)) == d  # memory format does not matter
    sd = a.state_dict()
    by_hand = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        by_hand.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode() + t.numpy().tobytes())
    assert d == by_hand.hexdigest()
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-3
    assert state_digest(b) != d  # one changed value
    assert state_digest(_tiny().half()) != d  # another dtype
    assert state_digest({"x": torch.zeros(2)}) != state_digest({"y": torch.zeros(2)})  # another name


def test_resolve_by_bare_name_and_by_path(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "net", _card())
    by_name, _ = resolve_weights("net", weights_dir=tmp_path)
    by_stem, _ = resolve_weights(tmp_path / "net")
    by_file, _ = resolve_weights(str(tmp_path / "net.safetensors"))
    by_card, _ = resolve_weights(tmp_path / "net.json")
    assert by_name == by_stem == by_file == by_card == tmp_path / "net.safetensors"


def test_resolve_missing_file_and_missing_card(tmp_path):
    with pytest.raises(CheckpointError, match="No weights file found for 'nope'"):
        resolve_weights("nope", weights_dir=tmp_path)
    save_checkpoint(_tiny(), tmp_path / "lonely", _card())
    (tmp_path / "lonely.json").unlink()
    with pytest.raises(CheckpointError, match="has no card lonely.json"):
        resolve_weights(tmp_path / "lonely")


def test_truncated_and_corrupt_files_raise_checkpoint_error(tmp_path):
    path = save_checkpoint(_tiny(), tmp_path / "cut", _card())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_and_card(tmp_path / "cut")
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_and_card(tmp_path / "cut")


def test_pth_state_dict_with_module_prefix(tmp_path):
    model = _tiny()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "user.pth")
    (tmp_path / "user.json").write_text(json.dumps({"task": "segmentation"}))  # an old, schema-less card
    state, card = load_state_and_card(tmp_path / "user.pth")
    assert set(state) == set(model.state_dict())
    assert card.name == "user" and card.task == "segmentation"


def test_list_weights_filters_by_task_and_domain(tmp_path):
    save_checkpoint(_tiny(), tmp_path / "a", _card(domain="derm"))
    save_checkpoint(_tiny(), tmp_path / "b", _card("classification", "derm"))
    save_checkpoint(_tiny(), tmp_path / "c", _card(domain="cxr"))
    (tmp_path / "orphan.json").write_text("{}")  # a card without weights is skipped
    assert [c.name for c in list_weights(weights_dir=tmp_path)] == ["a", "b", "c"]
    assert [c.name for c in list_weights("segmentation", weights_dir=tmp_path)] == ["a", "c"]
    assert [c.name for c in list_weights("segmentation", "cxr", weights_dir=tmp_path)] == ["c"]


def test_cards_name_data_sets_not_machine_paths():
    from lesion.weights import portable

    card = {"data": [{"source": "/srv/lab/data/HAM10000"}], "command": "lesion train seg --data /home/u/PH2 --out weights/x",
            "url": "https://doi.org/10.1038/sdata", "id": "ISIC_1/2", "n": 3,
            "rel": ["../lab/data/ChestXrayMasksAndLabels", "../../PH2", "..", "a/../b", "v0.1.2"]}
    out = portable(card)
    assert out == {"data": [{"source": "HAM10000"}], "command": "lesion train seg --data PH2 --out weights/x",
                   "url": "https://doi.org/10.1038/sdata", "id": "ISIC_1/2", "n": 3,
                   "rel": ["ChestXrayMasksAndLabels", "PH2", "..", "a/../b", "v0.1.2"]}


def test_read_state_file_by_the_kind_not_the_suffix(tmp_path):
    """A state dict is read by what its bytes are (the importer's file_kind), whatever its name: no temporary
    copy under another suffix."""
    import torch
    from safetensors.torch import save_file

    from lesion.weights import read_state_file

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_file(state, str(tmp_path / "weights.bin"))
    torch.save(state, tmp_path / "weights.safetensors")  # a torch.save under a misleading name
    assert torch.equal(read_state_file(tmp_path / "weights.bin", "safetensors")["w"], state["w"])
    assert torch.equal(read_state_file(tmp_path / "weights.safetensors", "state_dict")["w"], state["w"])
