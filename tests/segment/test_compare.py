"""Threshold-grid counts give the same metrics as scoring each threshold directly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion.data.records import Dataset, Record
from lesion.errors import DataError
from lesion.metrics import seg_metrics
from lesion.segment.compare import THRESHOLDS, counts_over_thresholds, metrics_at, nearest_threshold, paired, threshold_counts
from lesion.segment.evaluate import evaluate_segmentation


def _dataset(tmp_path: Path, n: int = 4) -> Dataset:
    recs = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        mask = np.zeros((20, 24), np.uint8)
        mask[4 + i : 12 + i, 5:15] = 255
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        Image.fromarray(mask).save(tmp_path / f"im{i}_mask.png")
        recs.append(Record(id=f"im{i}", image_path=tmp_path / f"im{i}.png", mask_path=tmp_path / f"im{i}_mask.png"))
    return Dataset(name="t", layout="plain", domain="derm", root=tmp_path, records=recs)


def ramp(image: np.ndarray) -> np.ndarray:
    """A probability map that is a horizontal ramp 0..1: thresholds cut it at known columns."""
    h, w = image.shape[:2]
    return np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1))


def test_counts_match_direct_scoring_at_every_threshold(tmp_path):
    ds = _dataset(tmp_path)
    counts = threshold_counts(ds, ramp, "ramp")
    assert len(counts) == len(ds) * len(THRESHOLDS)
    for t in (0.1, 0.5, 0.85):
        fast = metrics_at(counts, t).set_index("id")
        direct = evaluate_segmentation(ds, ramp, threshold=t, method_name="ramp").set_index("id")
        for m in ("iou", "dice", "precision", "recall", "specificity"):
            np.testing.assert_allclose(fast[m].to_numpy(float), direct.loc[fast.index, m].to_numpy(float))


def test_counts_sum_to_pixels_and_bool_output_is_threshold_free():
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True
    c = counts_over_thresholds(truth.copy(), truth)
    assert (c.sum(axis=1) == 100).all()
    assert (c[:, 0] == 16).all() and (c[:, 1:3] == 0).all()


def test_nearest_threshold_and_paired(tmp_path):
    assert nearest_threshold(0.52) == 0.5 and nearest_threshold(0.99) == 0.95
    ds = _dataset(tmp_path, 3)

    def truth_seg(image):  # perfect for im0 only is not needed: compare ramp with a constant-empty method
        return np.zeros(image.shape[:2], bool)

    per = metrics_at(pd_concat(threshold_counts(ds, ramp, "ramp"), threshold_counts(ds, truth_seg, "empty")), 0.5)
    pair = paired(per, "empty", "ramp")
    assert list(pair.columns) == ["id", "empty", "ramp", "difference"]
    assert (pair["empty"] == 0).all() and (pair["difference"] > 0).all()
    with pytest.raises(DataError):
        paired(per, "empty", "nope")


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_manual_iou_for_ramp():
    """IoU of the ramp cut at 0.5 against the right half is 1 (hand-computed)."""
    truth = np.zeros((4, 11), bool)
    truth[:, 6:] = True  # linspace(0,1,11) > 0.5 -> columns 6..10
    c = counts_over_thresholds(ramp(np.zeros((4, 11, 3))), truth, thresholds=(0.5,))
    assert tuple(c[0]) == (20, 0, 0, 24)
    assert seg_metrics(truth, truth)["iou"] == 1.0
