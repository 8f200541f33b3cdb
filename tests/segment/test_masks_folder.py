"""A folder of masks made elsewhere is a segmentation method: matched by id, the one mask rule, known IoU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.cli import main as cli


@pytest.fixture()
def data(tmp_path) -> tuple[Path, Path, list[float]]:
    """Three images with square lesions; predicted masks shifted by known amounts (IoU computed by hand)."""
    import cv2

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    pred = tmp_path / "pred"
    pred.mkdir()
    ious = []
    for i, shift in enumerate((0, 4, 8)):
        img = np.full((40, 40, 3), 200, np.uint8)
        truth = np.zeros((40, 40), np.uint8)
        truth[10:30, 10:30] = 255
        img[truth > 0] = 60
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), truth)
        p = np.zeros((40, 40, 3), np.uint8)
        p[10:30, 10 + shift:30 + shift] = (0, 7, 0)  # any non-zero pixel of any channel is lesion
        ext = ("png", "bmp", "tif")[i]
        cv2.imwrite(str(pred / f"im{i}_segmentation.{ext}"), p)
        inter = 20 * (20 - shift)
        ious.append(inter / (2 * 400 - inter))
    pd.DataFrame({"image": [f"im{i}" for i in range(3)], "diagnosis": ["nv"] * 3}).to_csv(root / "labels.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"name": "squares", "domain": "derm", "synthetic": True}))
    return root, pred, ious


def test_masks_folder_gives_the_known_iou(data, tmp_path, capsys):
    root, pred, ious = data
    out = tmp_path / "rows.csv"
    assert cli(["evaluate", "seg", "--masks", str(pred), "--data", str(root), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["iou"] == pytest.approx(np.mean(ious), abs=1e-9)
    rows = pd.read_csv(out).set_index("id")
    np.testing.assert_allclose(rows.loc[["im0", "im1", "im2"], "iou"], ious, atol=1e-9)
    assert set(rows["method"]) == {"masks:pred"}


def test_missing_masks_are_counted_and_named(data, capsys):
    root, pred, ious = data
    (pred / "im2_segmentation.tif").unlink()
    assert cli(["evaluate", "seg", "--masks", str(pred), "--data", str(root)]) == 0
    out = capsys.readouterr()
    assert "1 image(s) have no mask in pred/" in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["n"] == 2


def test_one_method_only_and_bad_folders(data, tmp_path, capsys):
    root, pred, _ = data
    assert cli(["evaluate", "seg", "--masks", str(pred), "--model", "otsu", "--data", str(root)]) == 2
    assert "one method" in capsys.readouterr().err
    assert cli(["evaluate", "seg", "--masks", str(tmp_path / "nope"), "--data", str(root)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    import cv2

    cv2.imwrite(str(other / "zzz.png"), np.zeros((4, 4), np.uint8))
    assert cli(["evaluate", "seg", "--masks", str(other), "--data", str(root)]) == 2
    assert "matches an image id" in capsys.readouterr().err
