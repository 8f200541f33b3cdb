"""The prediction cache is keyed by content (images and weights), survives corrupt files, and can be cleared."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.card import ModelCard, Preprocessing
from lesion.classify.classifier import create_model
from lesion.classify.models import ClsModelConfig
from lesion.data.records import Dataset, Record
from lesion.errors import CheckpointError
from lesion.infer.cache import CacheSpec, clear_cache, prediction_files
from lesion.infer.cache import CacheSpec
from lesion.infer.engine import predict
from lesion.weights import save_checkpoint
from lesion.zoo import load_model

PREP = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), center_crop=False, clahe=False)


def _cached(members, data, cache_root=None, warn=None, refresh=False, **kw):
    """The one entry point with the disk cache under ``cache_root``."""
    return predict(members, data, cache=CacheSpec(root=cache_root, warn=warn, refresh=refresh), **kw)


class _MeanLogit(torch.nn.Module):
    """Logit = mean of the normalised image: p = sigmoid((level / 255 - 0.5) / 0.5) for a flat image."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3)) * self.scale)[:, None]


def _expected(levels) -> np.ndarray:
    return 1 / (1 + np.exp(-((np.asarray(levels, np.float64) / 255 - 0.5) / 0.5)))


def _write_flat_images(root: Path, levels, mtimes=None) -> list[Path]:
    """Flat grey BMPs (uncompressed: the file size depends only on the image size, never on the pixels)."""
    import cv2

    paths = []
    for i, level in enumerate(levels):
        p = root / f"img{i}.bmp"
        cv2.imwrite(str(p), np.full((16, 16, 3), level, np.uint8))
        if mtimes is not None:
            os.utime(p, ns=(mtimes[i], mtimes[i]))
        paths.append(p)
    return paths


def _dataset(root: Path, paths) -> Dataset:
    recs = [Record(id=p.stem, image_path=p, diagnosis="mel" if i % 2 else "nv", target=i % 2)
            for i, p in enumerate(paths)]
    return Dataset("flat", "plain", "derm", root, recs, ("mel", "nv"))


def test_images_overwritten_under_same_names_are_recomputed(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    before = [30, 220, 60, 200]
    paths = _write_flat_images(root, before)
    stats = [p.stat() for p in paths]
    ds = _dataset(root, paths)
    pair = (_MeanLogit().eval(), ModelCard(name="mean", task="classification", classes=("melanoma",), preprocessing=PREP))
    first = _cached([pair], ds, tta="hflip", device="cpu", cache_root=tmp_path / "cache")
    np.testing.assert_allclose(first.probs[:, 0], _expected(before), atol=1e-5)
    assert _cached([pair], ds, tta="hflip", device="cpu", cache_root=tmp_path / "cache").notes == \
        ["mean: from cache"]
    content_before = ds.content_fingerprint()

    # The same names, the same sizes and the same mtimes, other pixels (labels now run the other way).
    after = [210, 40, 190, 20]
    _write_flat_images(root, after, mtimes=[s.st_mtime_ns for s in stats])
    assert [(p.stat().st_size, p.stat().st_mtime_ns) for p in paths] == [(s.st_size, s.st_mtime_ns) for s in stats]
    ds_again = _dataset(root, paths)
    assert ds_again.fingerprint() == ds.fingerprint()  # same folder (review tags stay) ...
    assert ds_again.content_fingerprint() != content_before  # ... another content key, in this process too
    second = _cached([pair], ds_again, tta="hflip", device="cpu", cache_root=tmp_path / "cache")
    assert second.notes == []  # recomputed, not from the cache
    np.testing.assert_allclose(second.probs[:, 0], _expected(after), atol=1e-5)


def _classifier(seed: int):
    torch.manual_seed(seed)
    cfg = ClsModelConfig("resnet10t", num_classes=1, size=16)
    model = create_model(cfg).eval()
    with torch.no_grad():
        model.net.fc.bias.fill_(float(seed))  # outputs far apart, whatever the random features
    return model, ModelCard(name="clf", task="classification", classes=("melanoma",), model=asdict(cfg),
                            preprocessing=PREP)


def test_replaced_checkpoint_same_size_and_mtime_is_recomputed(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    ds = _dataset(root, _write_flat_images(root, [30, 220, 60, 200]))
    cache = tmp_path / "cache"
    stem = tmp_path / "weights" / "clf"
    save_checkpoint(_classifier(0)[0], stem, _classifier(0)[1])
    wpath = stem.with_suffix(".safetensors")
    old = wpath.stat()
    a = _cached([load_model(stem)], ds, tta="none", device="cpu", cache_root=cache)

    # Another model of the same architecture (same file size) copied over it, the mtime set back.
    save_checkpoint(_classifier(3)[0], tmp_path / "other" / "clf", _classifier(3)[1])
    for suffix in (".safetensors", ".json"):
        os.replace(tmp_path / "other" / f"clf{suffix}", stem.with_suffix(suffix))
    os.utime(wpath, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (wpath.stat().st_size, wpath.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    b = _cached([load_model(stem)], ds, tta="none", device="cpu", cache_root=cache)
    assert b.notes == []  # recomputed
    fresh = predict([load_model(stem)], ds, tta="none", device="cpu")
    np.testing.assert_allclose(b.probs, fresh.probs, atol=1e-6)
    assert np.abs(b.probs - a.probs).max() > 0.1

    # Only the weights replaced (the card kept), same size, mtime set back: the stale case. Refused on
    # the sha256 unless verify=False, and then recomputed, never the old cache.
    save_checkpoint(_classifier(-2)[0], tmp_path / "edit" / "clf", _classifier(-2)[1])
    os.replace(tmp_path / "edit" / "clf.safetensors", wpath)
    os.utime(wpath, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (wpath.stat().st_size, wpath.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    with pytest.raises(CheckpointError, match=r"weights .*clf\.safetensors do not match their card's sha256.*verify=False"):
        load_model(stem)
    c = _cached([load_model(stem, verify=False)], ds, tta="none", device="cpu", cache_root=cache)
    assert c.notes == [] and np.abs(c.probs - b.probs).max() > 0.1
    np.testing.assert_allclose(c.probs, predict([load_model(stem, verify=False)], ds, tta="none", device="cpu").probs,
                               atol=1e-6)


def test_truncated_cache_file_is_rebuilt_with_a_note(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    ds = _dataset(root, _write_flat_images(root, [30, 220, 60]))
    pair = (_MeanLogit().eval(), ModelCard(name="mean", task="classification", classes=("melanoma",), preprocessing=PREP))
    cache = tmp_path / "cache"
    first = _cached([pair], ds, tta="none", device="cpu", cache_root=cache)
    (entry,) = prediction_files(cache)
    entry.write_bytes(entry.read_bytes()[:40])  # truncated
    notes: list[str] = []
    second = _cached([pair], ds, tta="none", device="cpu", cache_root=cache, warn=notes.append)
    assert len(notes) == 1 and "truncated or corrupt" in notes[0] and entry.name in notes[0]
    assert "\n" not in notes[0] and notes[0] in second.notes
    np.testing.assert_allclose(second.probs, first.probs)
    assert _cached([pair], ds, tta="none", device="cpu", cache_root=cache).notes == ["mean: from cache"]
    entry.write_bytes(b"not a zip at all")  # corrupt; the default note is a warning
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        third = _cached([pair], ds, tta="none", device="cpu", cache_root=cache)
    np.testing.assert_allclose(third.probs, first.probs)
    assert [p.name for p in prediction_files(cache)] == [entry.name]  # no temporary files left


def test_cache_clear_and_info_from_the_command_line(tmp_path, capsys):
    from lesion.cli import main
    from lesion.review import TagStore

    root = tmp_path / "data"
    root.mkdir()
    ds = _dataset(root, _write_flat_images(root, [30, 220]))
    pair = (_MeanLogit().eval(), ModelCard(name="mean", task="classification", classes=("melanoma",), preprocessing=PREP))
    cache = tmp_path / "cache"
    for tta in ("none", "hflip"):
        _cached([pair], ds, tta=tta, device="cpu", cache_root=cache)
    tags = TagStore(cache / "datasets" / ds.fingerprint() / "review_tags.json")
    tags.set("img0", "label error")
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "predictions: 2 files" in out and "review tag stores: 1" in out
    assert main(["cache", "clear", "--dry-run", "--cache-dir", str(cache)]) == 0
    assert "would delete 2 prediction files" in capsys.readouterr().out and len(prediction_files(cache)) == 2
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "deleted 2 prediction files" in capsys.readouterr().out
    assert prediction_files(cache) == [] and TagStore(tags.path).get("img0")["tag"] == "label error"
    assert clear_cache(cache) == (0, 0)
    assert _cached([pair], ds, tta="none", device="cpu", cache_root=cache).notes == []  # rebuilt
