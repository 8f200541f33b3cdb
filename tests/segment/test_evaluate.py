"""lesion.segment.evaluate on a tiny hand-built data set (no loaders): perfect/empty segmenters, errors, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion.data.records import Dataset, Record
from lesion.errors import ConfigError, DataError
from lesion.segment.evaluate import evaluate_segmentation, main, resolve_segmenter, to_mask


def _square_mask(i: int, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[4 + i : 20 + i, 6 : 22 + i] = True
    return m


def _dataset(tmp_path: Path, n: int = 3, corrupt: int | None = None) -> Dataset:
    records = []
    for i in range(n):
        m = _square_mask(i)
        img = np.full((32, 32, 3), 200, np.uint8)
        img[m] = (90, 60, 40)  # dark lesion on light skin
        ip, mp = tmp_path / f"img{i}.png", tmp_path / f"img{i}_mask.png"
        if i == corrupt:
            ip.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
        else:
            Image.fromarray(img).save(ip)
        Image.fromarray(m.astype(np.uint8) * 255).save(mp)
        records.append(Record(id=f"img{i}", image_path=ip, mask_path=mp))
    records.append(Record(id="nomask", image_path=tmp_path / "img0.png", mask_path=None))
    return Dataset(name="tiny", layout="plain", domain="derm", root=tmp_path, records=records)


def _truth_segmenter(ds: Dataset):
    """Returns the reference mask of the image it is given (looked up by pixel content)."""
    from lesion.data.io import read_image, read_mask

    table = {read_image(r.image_path).tobytes(): read_mask(r.mask_path) for r in ds.records if r.mask_path}
    return lambda img: table[img.tobytes()]


def test_perfect_segmenter_scores_one_and_progress_called(tmp_path):
    ds = _dataset(tmp_path)
    calls = []
    df = evaluate_segmentation(ds, _truth_segmenter(ds), progress=lambda d, t: calls.append((d, t)), method_name="truth")
    assert list(df["id"]) == ["img0", "img1", "img2"]  # the record without a mask is skipped
    assert (df["iou"] == 1.0).all() and (df["dice"] == 1.0).all()
    assert df["error"].isna().all() and (df["method"] == "truth").all()
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_empty_segmenter_scores_zero(tmp_path):
    ds = _dataset(tmp_path)
    df = evaluate_segmentation(ds, lambda img: np.zeros(img.shape[:2], bool))
    assert (df["iou"] == 0.0).all() and (df["recall"] == 0.0).all()


def test_probabilities_thresholded_and_resized(tmp_path):
    ds = _dataset(tmp_path, n=1)
    truth = _square_mask(0)
    # A half-resolution probability map (nearest-upsampled back) of the truth: 0.6 inside, 0.4 outside.
    small = np.where(truth[::2, ::2], 0.6, 0.4).astype(np.float32)
    df = evaluate_segmentation(ds, lambda img: small, threshold=0.5)
    assert df["iou"].iloc[0] == pytest.approx(1.0)
    df = evaluate_segmentation(ds, lambda img: small, threshold=0.7)  # nothing above 0.7
    assert df["iou"].iloc[0] == 0.0


def test_corrupt_image_gives_error_row(tmp_path):
    ds = _dataset(tmp_path, corrupt=1)
    df = evaluate_segmentation(ds, lambda img: np.ones(img.shape[:2], bool))
    assert len(df) == 3
    bad = df.set_index("id").loc["img1"]
    assert "img1.png" in bad["error"] and np.isnan(bad["iou"])
    assert df.set_index("id").loc[["img0", "img2"], "error"].isna().all()
    assert (df.set_index("id").loc[["img0", "img2"], "iou"] > 0).all()


def test_no_masks_raises(tmp_path):
    ds = _dataset(tmp_path, n=1)
    ds.records = [r for r in ds.records if r.mask_path is None]
    with pytest.raises(DataError, match="no masks"):
        evaluate_segmentation(ds, lambda img: img[..., 0] > 0)


def test_to_mask_squeezes_and_validates():
    assert to_mask(np.ones((1, 4, 4)), (4, 4)).all()
    assert to_mask(np.zeros((4, 4, 1), np.uint8), (4, 4)).sum() == 0
    with pytest.raises(DataError):
        to_mask(np.ones((2, 4, 4)), (4, 4))


def test_resolve_segmenter_otsu_and_missing_model():
    name, seg = resolve_segmenter("otsu", "derm")
    assert name == "otsu"
    img = np.full((40, 40, 3), 200, np.uint8)
    img[10:30, 10:30] = 60
    assert seg(img)[20, 20] and not seg(img)[2, 2]
    try:
        import lesion.segment.models  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="otsu"):
            resolve_segmenter("unet-that-does-not-exist", "derm")


def test_cli_writes_csv_refuses_overwrite_and_prints_json(tmp_path, monkeypatch, capsys):
    ds = _dataset(tmp_path)
    import lesion.segment.evaluate

    monkeypatch.setattr(lesion.segment.evaluate, "open_data", lambda spec: ds)
    out = tmp_path / "res.csv"
    assert main(["--model", "otsu", "--data", str(tmp_path), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["method"] == "otsu" and summary["n"] == 3
    # The derm preset's closing (radius 9, tuned on 200x150 HAM10000 images) grows these 16-px squares on a 32-px
    # image towards the border, so the figure is modest; the summary must be the mean of the CSV's rows.
    assert summary["iou"] > 0.5 and len(summary["iou_ci"]) == 2
    assert out.exists() and out.read_text().startswith("id,method,iou")
    import pandas as pd

    assert summary["iou"] == pytest.approx(pd.read_csv(out)["iou"].mean(), abs=1e-12)
    with pytest.raises(DataError, match="--overwrite"):
        main(["--model", "otsu", "--data", str(tmp_path), "--out", str(out)])
    assert main(["--model", "otsu", "--data", str(tmp_path), "--out", str(out), "--overwrite"]) == 0


def test_segmenter_with_predict_many_runs_in_batches(tmp_path):
    """A batched segmenter (MedSAM's protocol) gets the readable images in chunks; a corrupt one is an error row."""
    ds = _dataset(tmp_path, n=5, corrupt=1)
    good = Dataset(name="good", layout="plain", domain="derm", root=tmp_path,
                   records=[r for r in ds.records if r.id not in ("img1", "nomask")])
    truth = _truth_segmenter(good)
    calls = []

    class Batched:
        def __call__(self, img):  # never used when predict_many exists
            raise AssertionError("called one by one")

        def predict_many(self, images, boxes=None):
            calls.append(len(images))
            return [truth(im) for im in images]

    progress = []
    df = evaluate_segmentation(ds, Batched(), batch_size=2, progress=lambda d, t: progress.append(d)).set_index("id")
    assert calls == [1, 2, 1]  # chunks of 2 records; img1 (corrupt) never reaches the segmenter
    assert progress == [2, 4, 5]
    assert (df.drop(index="img1")["iou"] == 1.0).all() and "img1.png" in df.loc["img1", "error"]


def test_network_segmenter_with_predict_many_is_scored(tmp_path):
    """A trained network (SegModelSegmenter.predict_many(images, batch_size)) goes through the batched path: a
    regression test for a batch of boxes handed to it as its batch size."""
    import torch

    from lesion.card import ModelCard
    from lesion.segment.models import SegModelConfig, SegModelSegmenter, cfg_to_card, create_seg_model

    cfg = SegModelConfig(arch="unet", encoder="resnet18", encoder_depth=3, init="random", size=32)
    torch.manual_seed(0)
    seg = SegModelSegmenter(create_seg_model(cfg).eval(), ModelCard(name="tiny", task="segmentation",
                                                                  **cfg_to_card(cfg)), device="cpu")
    df = evaluate_segmentation(_dataset(tmp_path), seg, method_name="tiny", batch_size=2)
    assert len(df) == 3 and df["error"].isna().all() and df["iou"].between(0, 1).all()


def test_cli_reports_non_binary_masks_and_unwritable_out(tmp_path, monkeypatch, capsys):
    ds = _dataset(tmp_path)
    soft = np.asarray(Image.open(ds.records[0].mask_path)).copy()
    soft[soft > 0] = 200
    soft[0, 0] = 90  # a third value: anti-aliased edge
    Image.fromarray(soft).save(ds.records[0].mask_path)
    import lesion.segment.evaluate

    monkeypatch.setattr(lesion.segment.evaluate, "open_data", lambda spec: ds)
    assert main(["--model", "otsu", "--data", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "not binary" in err and "img0" in err
    with pytest.raises(ConfigError, match="cannot write into"):
        main(["--model", "otsu", "--data", str(tmp_path), "--out", "/proc/self/nowhere/x.csv"])
