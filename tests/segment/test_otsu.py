"""lesion.segment.otsu: synthetic images with known answers, every step switchable, presets on real data."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import ConfigError
from lesion.segment.otsu import (
    OtsuConfig,
    OtsuSegmenter,
    extract_channel,
    otsu_segment,
    preset,
    select_components,
    valid_region,
)

#: Every step off: the mask is exactly "channel <= Otsu threshold".
BARE = OtsuConfig(
    work_size=0, vignette="off", hair_removal=False, blur_sigma=0, open_radius=0, close_radius=0,
    fill_holes=False, selection="all", min_area_frac=0,
)


def _disc(h=120, w=160, cy=60, cx=80, r=30):
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _lesion_image(mask, skin=(210, 170, 150), lesion=(110, 70, 50)):
    img = np.empty(mask.shape + (3,), np.uint8)
    img[:] = skin
    img[mask] = lesion
    return img


def test_two_level_image_gives_exact_mask_and_threshold_between_levels():
    m = _disc()
    res = otsu_segment(_lesion_image(m, skin=(200,) * 3, lesion=(60,) * 3), BARE.replace(channel="grey"))
    np.testing.assert_array_equal(res.mask, m)
    assert 60 <= res.threshold < 200
    assert res.steps == {}  # only with return_steps


def test_invert_false_segments_the_bright_object():
    m = _disc()
    img = _lesion_image(m, skin=(60,) * 3, lesion=(200,) * 3)
    np.testing.assert_array_equal(otsu_segment(img, BARE.replace(channel="grey", invert=False)).mask, m)
    np.testing.assert_array_equal(otsu_segment(img, BARE.replace(channel="grey", invert=True)).mask, ~m)


def test_derm_preset_on_synthetic_lesion_with_hair_and_vignette():
    m = _disc(h=300, w=400, cy=150, cx=200, r=70)
    img = _lesion_image(m)
    rng = np.random.default_rng(0)
    img = np.clip(img.astype(int) + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    # Dark microscope corners and two thin hairs crossing the skin.
    yy, xx = np.ogrid[:300, :400]
    img[(yy - 150) ** 2 + (xx - 200) ** 2 > 215**2] = 5
    img[100:102, 20:380] = 30
    img[20:280, 330:332] = 30
    res = otsu_segment(img, preset("derm").replace(hair_removal=True), return_steps=True)
    assert res.mask.shape == (300, 400) and res.mask.dtype == np.bool_
    inter, union = (res.mask & m).sum(), (res.mask | m).sum()
    assert inter / union > 0.9
    assert not res.mask[100, 40] and not res.mask[5, 5]  # hair and vignette are not lesion
    names = list(res.steps)
    assert names[0] == "input" and names[-1] == "mask"
    for want in ("valid region", "hair", "hair removed", "channel (blue)", "blurred", "threshold", "opened",
                 "closed", "holes filled", "selected"):
        assert want in names
    assert all(v.dtype == np.uint8 for v in res.steps.values())
    assert res.steps["input"].shape[:2] == (192, 256)  # working size: long side 256


def test_steps_switched_off_are_absent():
    cfg = preset("derm").replace(vignette="off", blur_sigma=0, open_radius=0, close_radius=0,
                                 fill_holes=False)
    res = otsu_segment(_lesion_image(_disc()), cfg, return_steps=True)
    assert set(res.steps) == {"input", "channel (blue)", "threshold", "selected", "mask"}  # no resize: 160 <= 256


def test_hair_mask_finds_thin_line_not_blob():
    from lesion.segment.otsu import hair_mask

    img = np.full((100, 100, 3), 200, np.uint8)
    img[50, 5:95] = 40  # 1-px hair
    img[10:40, 10:40] = 40  # big dark blob (a lesion, wider than the kernel)
    for kernel in ("ellipse", "lines"):
        hm = hair_mask(img, kernel=kernel, size=9, threshold=12)
        assert hm[50, 70]
        assert not hm[25, 25]


def test_vignette_modes():
    img = np.full((100, 100, 3), 180, np.uint8)
    img[:10, :10] = 5  # dark corner touching the border
    img[45:55, 45:55] = 5  # dark spot in the middle: a lesion, not vignette
    v = valid_region(img, "border_dark", 40)
    assert not v[0, 0] and v[50, 50] and v[99, 99]
    assert valid_region(img, "off", 40).all()
    c = valid_region(np.full((50, 50, 3), 180, np.uint8), "circle", 40)
    assert c[25, 25] and not c[0, 0]


def test_component_selection_modes():
    m = np.zeros((100, 100), bool)
    m[0:40, 0:40] = True  # big, in a corner (1600 px)
    m[40:60, 45:65] = True  # central (400 px)
    m[80:90, 80:90] = True  # small (100 px)
    central = select_components(m, "central", 0, False)
    assert central[50, 55] and not central[10, 10]
    largest = select_components(m, "largest", 0, False)
    assert largest[10, 10] and not largest[50, 55]
    two = select_components(m, "two_largest", 0, False)
    assert two[10, 10] and two[50, 55] and not two[85, 85]
    np.testing.assert_array_equal(select_components(m, "all", 0, False), m)
    no_border = select_components(m, "all", 0, True)
    assert not no_border[10, 10] and no_border[50, 55]
    big_only = select_components(m, "all", 500, False)
    assert big_only[10, 10] and not big_only[50, 55]


def test_channels_on_0_255_scale():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    assert extract_channel(img, "red")[0, 0] == 255
    assert extract_channel(img, "min_rgb")[0, 0] == 0
    assert extract_channel(img, "saturation")[0, 0] == 255
    assert extract_channel(np.full((2, 2, 3), 255, np.uint8), "L")[0, 0] == 255


def test_flat_image_gives_empty_mask():
    res = otsu_segment(np.full((50, 50, 3), 128, np.uint8))
    assert not res.mask.any()


def test_config_validation_lists_options():
    with pytest.raises(ConfigError, match="Supported"):
        OtsuConfig(channel="bleu")
    with pytest.raises(ConfigError, match="two_largest"):
        OtsuConfig(selection="biggest")
    with pytest.raises(ConfigError):
        OtsuConfig(open_radius=-1)
    with pytest.raises(ConfigError, match="derm"):
        preset("mri")
    assert hash(preset("derm")) == hash(OtsuConfig())  # frozen: usable as a cache key


def test_segmenter_protocol_and_grey_input():
    m = _disc()
    img = _lesion_image(m)
    seg = OtsuSegmenter()
    out = seg(img)
    assert out.dtype == np.bool_ and out.shape == m.shape
    grey = otsu_segment(img[..., 0], preset("derm").replace(hair_removal=False))
    assert grey.mask.shape == m.shape


def test_cxr_preset_keeps_two_lungs():
    # Synthetic chest: black surround, bright body, two dark lungs.
    img = np.full((256, 256), 5, np.uint8)
    img[20:250, 30:226] = 190
    lungs = np.zeros((256, 256), bool)
    lungs[50:200, 50:115] = True
    lungs[50:200, 140:205] = True
    img[lungs] = 70
    res = otsu_segment(np.repeat(img[..., None], 3, 2), preset("cxr"))
    inter, union = (res.mask & lungs).sum(), (res.mask | lungs).sum()
    assert inter / union > 0.9
    assert not res.mask[5, 5]


# --------------------------------------------------------------------------------------------- real data
def _ham(root, n):
    import glob

    imgs = sorted(glob.glob(str(root / "HAM10000" / "HAM10000_images_part_1" / "*.jpg")))[:n]
    seg = root / "HAM10000" / "HAM10000_segmentations_lesion_tschandl"
    return [(p, seg / (p.rsplit("/", 1)[1][:-4] + "_segmentation.png")) for p in imgs]


def _cxr(root, n):
    import glob
    from pathlib import Path

    base = root / "ChestXrayMasksAndLabels" / "Lung Segmentation"
    out = []
    files = sorted(glob.glob(str(base / "CXR_png" / "*.png")))
    for p in files[:: max(1, len(files) // n)][:n]:  # spread over both sources (Shenzhen, Montgomery)
        stem = Path(p).stem
        m = base / "masks" / f"{stem}.png"
        out.append((p, m if m.exists() else base / "masks" / f"{stem}_mask.png"))
    return out


@pytest.mark.realdata
@pytest.mark.parametrize("domain,pairs,floor", [("derm", _ham, 0.5), ("cxr", _cxr, 0.5)])
def test_presets_on_real_data(shared_data, domain, pairs, floor):
    from lesion.data.io import read_image, read_mask
    from lesion.metrics import seg_metrics

    if not (shared_data / ("HAM10000" if domain == "derm" else "ChestXrayMasksAndLabels")).is_dir():
        pytest.skip("data set missing")
    ious = []
    for ip, mp in pairs(shared_data, 40):
        img = read_image(ip)
        ious.append(seg_metrics(otsu_segment(img, preset(domain)).mask, read_mask(mp, img.shape[:2]))["iou"])
    # Full-set means are in PRESET_SCORES; 40 images vary, so the floor sits well below them.
    assert np.mean(ious) > floor
