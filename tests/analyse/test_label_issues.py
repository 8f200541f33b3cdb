"""Label issues with planted answers: flipped labels rank at the top (cleanlab), a re-saved copy in another folder
is a near duplicate (imagehash) while different images are not, a lesion split across train and test is a leak."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesion.analyse.label_issues import lesion_leaks, near_duplicates, perceptual_hashes, rank_label_issues
from lesion.data.records import Record
from lesion.errors import DataError


def test_planted_label_flips_rank_high():
    rng = np.random.default_rng(0)
    n = 600
    y_true = (rng.random(n) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(3.0 * (2 * y_true - 1) + rng.normal(0, 1.2, n))))  # a good out-of-fold model
    flipped = rng.choice(n, 20, replace=False)
    y = y_true.astype(float)
    y[flipped] = 1 - y[flipped]
    y[5] = np.nan  # unlabelled: left out
    ids = [f"im{i}" for i in range(n)]
    df = rank_label_issues(ids, y, p)
    assert len(df) == n - (5 not in flipped) and df["rank"].tolist() == list(range(1, len(df) + 1))
    top = set(df.head(25)["id"])
    planted = {f"im{i}" for i in flipped if i != 5}
    assert len(top & planted) >= 0.9 * len(planted)
    assert df["score"].is_monotonic_decreasing and df["score"].between(0, 1).all()
    assert df[df["id"].isin(planted)]["issue"].mean() > 0.8 and df["issue"].sum() < 40


def test_one_class_labels_are_refused():
    with pytest.raises(DataError, match="both classes"):
        rank_label_issues(["a", "b"], [1, 1], [0.2, 0.9])


def test_near_duplicates_across_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths, folders = [], []
    for i in range(5):
        # smooth random images (different low frequencies: phash looks at the DCT's low band)
        small = rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)
        im = Image.fromarray(small).resize((128, 128), Image.BICUBIC)
        p = tmp_path / "a" / f"x{i}.png"
        im.save(p)
        paths.append(p)
        folders.append("a")
    copy = tmp_path / "b" / "copy.jpg"
    Image.open(paths[2]).resize((100, 100)).save(copy, quality=80)  # re-saved, resized copy
    paths.append(copy)
    folders.append("b")
    hashes = perceptual_hashes(paths)
    assert hashes == perceptual_hashes(paths)  # cached by content, same answer
    dup = near_duplicates([p.stem for p in paths], hashes, folders, max_distance=6)
    assert len(dup) == 1
    row = dup.iloc[0]
    assert {row["id_a"], row["id_b"]} == {"x2", "copy"} and row["across"]


def test_lesion_leaks():
    recs = [Record(f"i{k}", Path(f"i{k}.png"), meta={"lesion_id": lid})
            for k, lid in enumerate(["L1", "L1", "L2", "L3", "L3"])]
    leaks = lesion_leaks(recs, train_ids=["i0", "i2", "i3"], test_ids=["i1", "i4"])
    assert leaks["lesion"].tolist() == ["L1", "L3"]
    assert leaks.iloc[0]["train_ids"] == "i0" and leaks.iloc[0]["test_ids"] == "i1"
