"""Integrity (issue 12): a checkpoint is checked against its card's sha256, and a model that outputs NaN or Inf
is an error, never a score."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lesion.card import ModelCard
from lesion.errors import CheckpointError, LesionError, ModelOutputError
from lesion.segment.models import SegModelConfig, cfg_to_card, create_seg_model, predict_batch
from lesion.weights import save_checkpoint, weights_file_identity
from lesion.zoo import load_model, load_segmenter

TINY = SegModelConfig(arch="unet", encoder="resnet18", encoder_depth=3, init="random", size=64)


@pytest.fixture()
def seg_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_seg_model(TINY).eval()
    return save_checkpoint(model, tmp_path / "tiny", ModelCard(name="tiny", task="segmentation", domain="derm",
                                                             **cfg_to_card(TINY)))


def _poke(path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place, keeping the file's size and mtime (what a bad disk or copy does)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_checkpoint_with_corrupt_bytes_is_refused(seg_checkpoint):
    path = seg_checkpoint
    assert path.stat().st_size > 600_000
    load_model(path, task="segmentation")  # fine, and its hash is memoised for this file version
    _poke(path, 300_000, b"\xff" * 200_000)  # 200 KB of 0xFF inside, same size, same mtime
    for load in (lambda: load_model(path), lambda: load_segmenter(path)):
        with pytest.raises(CheckpointError) as e:
            load()
        msg = str(e.value)
        assert str(path) in msg and "do not match their card's sha256" in msg
        assert "verify=False" in msg and "--no-verify" in msg and "\n" not in msg


def test_corrupt_checkpoint_loaded_without_verify_gives_an_error_not_a_mask(seg_checkpoint):
    path = seg_checkpoint
    _poke(path, 300_000, b"\xff" * 200_000)  # 0xFFFF is NaN in fp16
    seg = load_segmenter(path, device="cpu", verify=False)  # the user insists ...
    images = [np.full((48, 40, 3), 120, np.uint8), np.zeros((64, 64, 3), np.uint8)]
    with pytest.raises(ModelOutputError, match=r"'tiny' output NaN or Inf for 2 of 2 images") as e:
        seg.predict_many(images)  # ... and gets an error, never an all-empty mask scored IoU 0.0
    assert isinstance(e.value, LesionError)
    with pytest.raises(ModelOutputError, match="1 of 1 images"):
        seg(images[0])


def test_nan_segmenter_is_an_error_not_a_score():
    torch.manual_seed(0)
    model = create_seg_model(TINY).eval()
    card = ModelCard(name="nanseg", task="segmentation", **cfg_to_card(TINY))
    images = [np.full((64, 64, 3), v, np.uint8) for v in (10, 100, 200)]
    ok = predict_batch(model, images, card, device="cpu", batch_size=2)
    assert all(np.isfinite(p).all() and p.shape == (64, 64) for p in ok)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ModelOutputError, match=r"'nanseg' output NaN or Inf for 3 of 3 images \(e\.g\. image #1, #2, #3\)"):
        predict_batch(model, images, card, device="cpu", batch_size=2)


def test_card_without_sha256_loads_without_a_check(seg_checkpoint):
    path = seg_checkpoint
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["provenance"].pop("sha256")
    card_path.write_text(json.dumps(card))
    torch.manual_seed(1)
    save_checkpoint(create_seg_model(TINY), path.parent / "other", ModelCard(name="tiny", task="segmentation",
                                                                            **cfg_to_card(TINY)))
    os.replace(path.parent / "other.safetensors", path)  # other weights, the card has nothing to check them by
    net, loaded = load_model(path)
    assert loaded.sha256 is None and len(net.weights_sha256) == 64


def test_weights_are_hashed_once_per_file_version(seg_checkpoint, monkeypatch):
    import lesion.data.records as records

    calls = []
    real_new = records.hashlib.new
    monkeypatch.setattr(records.hashlib, "new", lambda *a, **k: calls.append(a) or real_new(*a, **k))
    ident = weights_file_identity(seg_checkpoint)
    for _ in range(3):  # an app rerun asks again and again
        load_model(seg_checkpoint)
    assert len(calls) == 1  # once for this file version, however often it is loaded
    assert weights_file_identity(seg_checkpoint) == ident
    st = seg_checkpoint.stat()
    os.utime(seg_checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new file version: hashed again
    n = len(calls)
    load_model(seg_checkpoint)
    assert len(calls) == n + 1 and weights_file_identity(seg_checkpoint) != ident


def test_shipped_checkpoints_match_their_cards():
    from lesion.weights import list_weights, verify_weights

    cards = list_weights()
    assert cards
    for card in cards:
        assert card.sha256 and verify_weights(card.path, card) == card.sha256


def test_running_app_reloads_a_replaced_checkpoint(tmp_path):
    """The app's cached loaders key on the file's identity: a checkpoint replaced by another of the same size,
    its mtime set back, is loaded again (and verified), never served from the old cache entry."""
    from dataclasses import asdict

    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.card import Preprocessing
    from ui.classify import load_classifier_cached
    from ui.segment import load_segmenter_cached

    cfg = ClsModelConfig("resnet10t", num_classes=1, size=16)

    def save(seed: int, stem):
        torch.manual_seed(seed)
        model = create_model(cfg).eval()
        card = ModelCard(name="appclf", task="classification", classes=("melanoma",), model=asdict(cfg),
                         preprocessing=Preprocessing(size=16))
        return save_checkpoint(model, stem, card)

    path = save(0, tmp_path / "appclf")
    st = path.stat()
    first, _ = load_classifier_cached(str(path))
    assert load_classifier_cached(str(path))[0] is first  # a rerun: the same object, nothing re-read
    save(1, tmp_path / "new" / "appclf")
    for suffix in (".safetensors", ".json"):
        os.replace(tmp_path / "new" / f"appclf{suffix}", path.with_suffix(suffix))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    second, _ = load_classifier_cached(str(path))
    assert second is not first
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(first(x).logits, second(x).logits)
    _poke(path, 1000, b"\xff" * 64)  # corrupted while the app runs: refused on the next rerun
    with pytest.raises(CheckpointError, match="do not match their card's sha256"):
        load_classifier_cached(str(path))

    seg_path = save_checkpoint(create_seg_model(TINY).eval(), tmp_path / "seg",
                               ModelCard(name="seg", task="segmentation", **cfg_to_card(TINY)))
    seg = load_segmenter_cached(str(seg_path))
    assert load_segmenter_cached(str(seg_path)) is seg
    _poke(seg_path, 1000, b"\xff" * 64)
    with pytest.raises(CheckpointError, match="do not match their card's sha256"):
        load_segmenter_cached(str(seg_path))
