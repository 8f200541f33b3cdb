"""The one preprocessing (lesion.preprocess) and the one image decoder (lesion.data.io.decode_image).

The old code paths are copied here verbatim as references (the classifier's ``prepare_image`` + ``normalize``, the
segmenter's ``_preprocess`` and resize-back, MedSAM's ``_prepare`` and crop-and-interpolate): the new functions
must give bit-identical arrays for the shipped cards on hand-made images of odd sizes.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lesion.card import ModelCard, Preprocessing, from_v1
from lesion.classify.models import ClsModelConfig, normalize, prepare_image
from lesion.data.io import PIXEL_LIMIT, decode_image, read_image
from lesion.data.upload import decode_upload
from lesion.errors import CheckpointError, ConfigError, DataError, ImageReadError
from lesion.preprocess import center_crop_box, geometry, prepare, prepare_batch, prepare_mask, restore, to_input
from lesion.serving import protocol
from lesion.weights import list_weights

FIXTURES = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------------------------------- the old code, as reference

def _old_center_crop_square(image):
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top: top + s, left: left + s]


def _old_apply_clahe(image, clip_limit=2.0, grid=8):
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _old_prepare_image(image, size, center_crop, clahe, channels, mask=None):
    img = _old_center_crop_square(image) if center_crop else image
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interp)
    if channels == 1:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        if clahe:
            grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
        img = grey[..., None]
    elif clahe:
        img = _old_apply_clahe(img)
    if mask is None:
        return img
    m = _old_center_crop_square(mask) if center_crop else mask
    m = cv2.resize(np.ascontiguousarray(m).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return img, m.astype(bool)


def _old_normalize(images_uint8, mean, std):
    x = images_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def _old_seg_preprocess(images, size, mean, std):
    out = np.empty((len(images), 3, size, size), np.float32)
    m = np.asarray(mean, np.float32).reshape(1, 1, 3)
    s = np.asarray(std, np.float32).reshape(1, 1, 3)
    for i, img in enumerate(images):
        interp = cv2.INTER_AREA if min(img.shape[:2]) >= size else cv2.INTER_LINEAR
        x = cv2.resize(img, (size, size), interpolation=interp).astype(np.float32) / 255.0
        out[i] = ((x - m) / s).transpose(2, 0, 1)
    return out


def _old_seg_back(p, h, w):
    return cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != p.shape else p


def _old_medsam_prepare(image, size=256):
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    scale = size / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
    out = np.zeros((size, size, 3), np.float32)
    out[:nh, :nw] = small
    return np.ascontiguousarray(out.transpose(2, 0, 1)), (nh, nw), scale


# ------------------------------------------------------------------------------------------- hand-made images

#: Odd sizes: smaller and larger than every shipped input (128, 192, 224, 256), portrait, landscape, tiny,
#: and short sides equal to a segmenter's input (192, 256: the segmenters' INTER_AREA rule).
SIZES = [(37, 53), (61, 45), (97, 131), (129, 400), (300, 301), (251, 190), (13, 7), (192, 250), (256, 300)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour field with a dark blob and noise: structure every interpolation treats differently."""
    rng = np.random.default_rng(seed + h * 1000 + w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 120 + 100 * np.sin(xx / max(w, 1) * 6.0)
    g = 80 + 150 * yy / max(h - 1, 1)
    b = 200 - 150 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2)
    img = np.stack([r, g, b], axis=2) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


IMAGES = [_image(h, w, i) for i, (h, w) in enumerate(SIZES)]
SHIPPED = {c.name: c for c in list_weights()}


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------- bit-identical to the old paths

@pytest.mark.parametrize("name", sorted(n for n, c in SHIPPED.items() if c.task != "segmentation"))
def test_shipped_classifier_inputs_are_bit_identical_to_the_old_path(name):
    p = SHIPPED[name].preprocessing
    old = _old_normalize(np.stack([_old_prepare_image(im, p.size, p.center_crop, p.clahe, p.channels)
                                   for im in IMAGES]), p.mean, p.std)
    assert _equal(prepare_batch(IMAGES, p), old)
    assert _equal(normalize(np.stack([prepare_image(im, p) for im in IMAGES]), p), old)  # the kept wrappers


@pytest.mark.parametrize("name", sorted(n for n, c in SHIPPED.items() if c.task == "segmentation"))
def test_shipped_segmenter_inputs_and_outputs_are_bit_identical_to_the_old_path(name):
    p = SHIPPED[name].preprocessing
    assert p.resize == "squash" and p.channels == 3
    assert _equal(prepare_batch(IMAGES, p), _old_seg_preprocess(IMAGES, p.size, p.mean, p.std))
    prob = np.random.default_rng(1).random((p.height, p.width), dtype=np.float32)
    for im in IMAGES:
        h, w = im.shape[:2]
        assert _equal(restore(prob, p, (h, w)), _old_seg_back(prob, h, w))


@pytest.mark.parametrize("prep", [
    Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=True),
    Preprocessing(size=48, mean=(0.5,), std=(0.5,), center_crop=False, clahe=True, channels=1),
    Preprocessing(size=96, center_crop=False),
])
def test_other_classifier_settings_are_bit_identical_too(prep):
    masks = [(im[..., 2] < 100) for im in IMAGES]
    for im, m in zip(IMAGES, masks):
        old_img, old_mask = _old_prepare_image(im, prep.size, prep.center_crop, prep.clahe, prep.channels, m)
        new_img, new_mask = prepare_image(im, prep, m)
        assert _equal(new_img, old_img) and _equal(new_mask, old_mask)
    grey = IMAGES[2][..., 1]  # a grey [H, W] radiograph through the one-channel path
    if prep.channels == 1:
        assert _equal(prepare(grey, prep), _old_prepare_image(grey, prep.size, False, prep.clahe, 1))


def test_medsam_letterbox_is_bit_identical_to_the_authors_preprocessing():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from lesion.segment.medsam import MEDSAM_PREP

    old = [_old_medsam_prepare(im) for im in IMAGES]
    assert _equal(prepare_batch(IMAGES, MEDSAM_PREP), np.stack([o[0] for o in old]))
    logits = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 1, 256, 256)).astype(np.float32))
    for im, (_, (nh, nw), scale) in zip(IMAGES, old):
        h, w = im.shape[:2]
        g = geometry((h, w), MEDSAM_PREP)
        assert g.content == (nh, nw) and g.scale == (scale, scale)  # the box is scaled by the same factor
        ref = F.interpolate(logits[:, :, :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
        assert torch.equal(restore(logits, MEDSAM_PREP, (h, w)), ref)


def test_one_interpolation_rule_where_the_old_paths_disagreed():
    """Short side equal to the input side, long side longer: the old classifier resized with INTER_LINEAR
    (``min > size``), the old segmenter with INTER_AREA (``min >= size``). One rule now: INTER_AREA whenever no
    side is enlarged. Only un-cropped classifiers (the chest X-ray ones at 224 px) meet this case, on images
    whose short side is exactly 224 px; the cropped ones copy an unchanged square either way."""
    im = _image(224, 300)
    p = Preprocessing(size=224, mean=(0.5,), std=(0.5,), center_crop=False, channels=1)
    area = cv2.cvtColor(cv2.resize(im, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)[..., None]
    assert _equal(prepare(im, p), area)
    cropped = Preprocessing(size=224, center_crop=True)
    assert _equal(prepare(im, cropped), _old_prepare_image(im, 224, True, False, 3))


# ------------------------------------------------------------------------------- H x W, letterbox, crop, scale

def test_non_square_squash_crop_and_letterbox_by_hand():
    img = np.repeat(np.arange(100, dtype=np.uint8)[:, None, None], 3, axis=2).repeat(100, axis=1)  # row index
    img = np.ascontiguousarray(img)
    squash = Preprocessing(size=(32, 48), resize="squash")
    assert squash.hw == (32, 48) and (squash.height, squash.width) == (32, 48) and squash.size_text == "32x48"
    assert _equal(prepare(img, squash), cv2.resize(img, (48, 32), interpolation=cv2.INTER_AREA))
    assert prepare_batch([img, img[:50]], squash).shape == (2, 3, 32, 48)
    # crop: the central region with aspect 48:32 = 1.5 of a 100 x 100 image is 67 rows x 100 columns, rows 16..82
    crop = Preprocessing(size=(32, 48), resize="crop")
    assert center_crop_box((100, 100), (32, 48)) == (16, 0, 67, 100)
    assert center_crop_box((100, 100), (7, 7)) == center_crop_box((100, 100), (1, 1)) == (0, 0, 100, 100)
    assert center_crop_box((60, 101), (1, 1)) == (0, 20, 60, 60)  # the old centre square: left = 41 // 2
    out = prepare(img, crop)
    assert out.shape == (32, 48, 3) and _equal(out, cv2.resize(img[16:83], (48, 32), interpolation=cv2.INTER_AREA))
    # letterbox: 20 x 40 into 32 x 48 -> scale min(1.6, 1.2) = 1.2 -> 24 x 48 at the top, 8 rows of padding
    box = Preprocessing(size=(32, 48), resize="letterbox", mean=(0.5,) * 3, std=(0.25,) * 3)
    small = _image(20, 40)
    g = geometry((20, 40), box)
    assert g.content == (24, 48) and g.scale == (1.2, 1.2) and g.crop == (0, 0, 20, 40)
    u = prepare(small, box)
    assert u.shape == (32, 48, 3) and not u[24:].any()
    assert _equal(u[:24], cv2.resize(small, (48, 24), interpolation=cv2.INTER_LINEAR))  # enlarged: linear
    x = prepare_batch([small], box)
    assert x.shape == (1, 3, 32, 48) and (x[0, :, 24:] == 0).all()  # padding = the mean colour after normalising
    assert np.allclose(x[0, :, :24], (u[:24].transpose(2, 0, 1) / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_restore_undoes_each_geometry():
    box = Preprocessing(size=(32, 48), resize="letterbox")
    out = np.full((32, 48), 99.0, np.float32)
    out[:24] = 0.25  # the image's part; the padding (99) must not reach the image
    back = restore(out, box, (20, 40))
    assert back.shape == (20, 40) and np.allclose(back, 0.25)
    crop = Preprocessing(size=(32, 48), resize="crop")
    back = restore(np.ones((32, 48), np.float32), crop, (100, 100))
    assert back.shape == (100, 100) and back[16:83].min() == 1.0 and not back[:16].any() and not back[83:].any()
    squash = Preprocessing(size=(32, 48), resize="squash")
    assert restore(np.ones((32, 48), np.float32), squash, (70, 20)).shape == (70, 20)
    # a mask goes through the same geometry (nearest): the crop's rows, padding False
    m = np.zeros((20, 40), bool)
    m[:, 20:] = True
    pm = prepare_mask(m, box)
    assert pm.shape == (32, 48) and not pm[24:].any() and pm[:24, 24:].all() and not pm[:24, :24].any()


def test_input_scale_255_and_minmax_by_hand():
    u = np.array([[[[0], [64]], [[128], [255]]]], np.uint8)  # [1, 2, 2, 1]
    raw = Preprocessing(size=2, mean=(128.0,), std=(64.0,), channels=1, scale="0-255")
    assert to_input(u, raw).tolist() == [[[[-2.0, -1.0], [0.0, 1.984375]]]]
    assert Preprocessing(size=2, scale=255) == Preprocessing(size=2, scale="0-255")
    unit = Preprocessing(size=2, mean=(0.0,), std=(1.0,), channels=1)
    assert np.allclose(to_input(u, unit), u.transpose(0, 3, 1, 2) / 255.0)
    mm = Preprocessing(size=2, mean=(0.0,), std=(1.0,), channels=1, scale="minmax")
    v = np.array([[[[10], [105]], [[200], [48]]]], np.uint8)  # min 10, max 200: (v - 10) / 190
    assert np.allclose(to_input(v, mm), [[[[0.0, 0.5], [1.0, 0.2]]]])
    with pytest.raises(ConfigError, match="Supported: 0-1, 0-255, minmax"):
        Preprocessing(scale="0-100")
    with pytest.raises(ConfigError, match="mean has 3 values for 1-channel"):
        to_input(u, Preprocessing(size=2, channels=1))


def test_preprocessing_options_are_checked_and_hashable():
    with pytest.raises(ConfigError, match="Did you mean 'letterbox'"):
        Preprocessing(resize="letterbx")
    with pytest.raises(ConfigError, match="interpolation"):
        Preprocessing(interpolation="cubic")
    with pytest.raises(ValueError):
        Preprocessing(size="big")
    with pytest.raises(ValueError):
        Preprocessing(size=(1, 2, 3))
    assert Preprocessing(size=(64, 64)) == Preprocessing(size=64) and Preprocessing(size=[64, 64]).size == 64
    assert Preprocessing(size="48x32").hw == (48, 32)
    assert len({Preprocessing(), Preprocessing(size=(224, 224)), Preprocessing(resize="squash")}) == 2
    assert Preprocessing().center_crop is True and Preprocessing(center_crop=False).resize == "squash"
    with pytest.raises(ConfigError, match="1 \\(grey\\) or 3"):
        prepare(IMAGES[0], Preprocessing(size=8, channels=2, mean=(0.5,) * 2, std=(0.5,) * 2))


# ------------------------------------------------------------------------------------------------- card format

def test_old_cards_load_identically_and_new_cards_store_each_value_once():
    old = {"schema": 2, "name": "old", "task": "classification", "classes": ["melanoma"],
           "model": {"arch": "resnet10t", "num_classes": 1, "in_chans": 3, "size": 64, "mean": [0.5] * 3,
                     "std": [0.25] * 3, "init": "random", "drop_rate": 0.0},
           "preprocessing": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "center_crop": True, "clahe": False,
                             "channels": 3, "threshold": None, "resize": ""}}
    card = ModelCard.from_dict(old)
    assert card.preprocessing == Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, resize="crop")
    assert "size" not in card.model and "mean" not in card.model and card.model["arch"] == "resnet10t"
    d = card.to_dict()
    assert "size" not in d["model"] and "center_crop" not in d["preprocessing"] and d["preprocessing"]["size"] == 64
    assert ModelCard.from_dict(json.loads(json.dumps(d))) == card
    # size / mean / std only in the model section (the old double storage): read from there
    lean = {**old, "preprocessing": {"center_crop": False}}
    p = ModelCard.from_dict(lean).preprocessing
    assert (p.size, p.mean, p.std, p.resize) == (64, (0.5,) * 3, (0.25,) * 3, "squash")
    # ... and the classifier's config takes them from the preprocessing
    from lesion.classify.classifier import config_from_card

    cfg = config_from_card(card)
    assert isinstance(cfg, ClsModelConfig) and (cfg.size, cfg.mean, cfg.std) == (64, (0.5,) * 3, (0.25,) * 3)
    made = ModelCard(name="m", task="classification", model=asdict(ClsModelConfig("resnet10t", size=32)),
                     preprocessing=Preprocessing(size=32))
    assert set(made.to_dict()["model"]) & {"size", "mean", "std"} == set()
    # a non-square card round-trips as [H, W]
    wide = card.replace(preprocessing=Preprocessing(size=(96, 128), resize="letterbox"))
    assert wide.to_dict()["preprocessing"]["size"] == [96, 128]
    assert ModelCard.from_dict(json.loads(json.dumps(wide.to_dict()))).preprocessing.hw == (96, 128)
    with pytest.raises(CheckpointError, match="does not follow schema"):
        ModelCard.from_dict({**old, "preprocessing": {"size": "big"}})
    with pytest.raises(CheckpointError, match="does not follow schema"):
        ModelCard.from_dict({**old, "preprocessing": {"resize": "fisheye"}})


def test_v1_and_shipped_cards_read_their_resize_modes():
    seg = from_v1(json.loads((FIXTURES / "card_v1_segmentation.json").read_text()))
    assert seg.preprocessing.resize == "squash" and seg.preprocessing.size == 192 and "size" not in seg.model
    cls = from_v1(json.loads((FIXTURES / "card_v1_classifier.json").read_text()))
    assert cls.preprocessing.resize == "crop"
    cxr = from_v1(json.loads((FIXTURES / "card_v1_cxr.json").read_text()))
    assert cxr.preprocessing.resize == "squash" and cxr.preprocessing.channels == 1
    for card in SHIPPED.values():
        raw = json.loads(Path(card.path).with_suffix(".json").read_text())
        if "size" not in raw["model"]:  # a card written by this version: each value stored once
            assert "size" in raw["preprocessing"] and "mean" not in raw["model"], card.name
            continue
        assert raw["preprocessing"]["size"] == raw["model"]["size"] == card.preprocessing.size  # old double storage
        want = "crop" if raw["preprocessing"].get("center_crop") and card.task != "segmentation" else "squash"
        assert card.preprocessing.resize == want, card.name
        assert "size" not in card.model


def test_segmenter_card_fields_keep_size_in_preprocessing_only():
    from lesion.segment.models import SegModelConfig, cfg_from_card, cfg_to_card

    cfg = SegModelConfig(arch="unet", encoder="resnet18", encoder_depth=3, init="random", size=(64, 96))
    fields = cfg_to_card(cfg)
    assert not set(fields["model"]) & {"size", "mean", "std"} and fields["preprocessing"].hw == (64, 96)
    assert cfg_from_card(ModelCard(name="s", task="segmentation", **fields)) == cfg


# ------------------------------------------------------------------------ one decoder: file, bytes, upload, server

def _jpeg_bytes(arr: np.ndarray, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    if orientation is None:
        im.save(buf, format="JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w x h`` grey pixels (a decompression bomb's shape: tiny file, huge image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _entries(data: bytes, tmp_path: Path, suffix: str):
    """The same bytes through every entry: file, bytes, upload, server payload -> (image, notes text)."""
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    notes: list = []
    yield "file", read_image(path, notes=notes), " ".join(notes)
    notes = []
    yield "bytes", decode_image(data, f"x{suffix}", notes).image, " ".join(notes)
    up = decode_upload(data, f"x{suffix}", min_side=1)
    yield "upload", up.image, " ".join(up.notes)
    yield "server", protocol.decode_image(base64.b64encode(data).decode("ascii"), 0), ""


def test_exif_orientation_through_every_entry(tmp_path):
    scene = _image(40, 64)
    data = _jpeg_bytes(np.ascontiguousarray(np.rot90(scene, 1)), orientation=6)  # stored sideways
    images = []
    for entry, img, notes in _entries(data, tmp_path, ".jpg"):
        assert img.shape == (40, 64, 3), entry  # upright, as viewers show it
        assert entry == "server" or "EXIF orientation 6" in notes, entry
        images.append(img)
    assert all(_equal(images[0], im) for im in images[1:])


def test_first_page_of_a_multipage_tiff_through_every_entry(tmp_path):
    pages = [Image.fromarray(np.full((36, 40), v, np.uint8)) for v in (11, 22, 33)]
    buf = io.BytesIO()
    pages[0].save(buf, format="TIFF", save_all=True, append_images=pages[1:])
    for entry, img, notes in _entries(buf.getvalue(), tmp_path, ".tif"):
        assert img.shape == (36, 40, 3) and (img == 11).all(), entry
        assert entry == "server" or "has 3 pages; page 1 is used" in notes, entry


@pytest.mark.parametrize("w,h", [(20000, 20000), (10000, 10000)])  # over 2x Pillow's limit (its error) / over 1x
def test_decompression_bomb_is_one_clear_line_through_every_entry(tmp_path, w, h):
    data = _png_header(w, h)
    (tmp_path / "bomb.png").write_bytes(data)
    payload = base64.b64encode(data).decode("ascii")
    calls = [lambda: read_image(tmp_path / "bomb.png"), lambda: decode_image(data, "bomb.png"),
             lambda: decode_upload(data, "bomb.png"), lambda: protocol.decode_image(payload, 3)]
    for call in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
            with pytest.raises(DataError) as err:
                call()
        msg = str(err.value)
        assert "\n" not in msg and "DecompressionBomb" not in type(err.value).__name__
        assert isinstance(err.value, ImageReadError)
        assert "limit" in msg and ("bomb" in msg or "4096-px" in msg), msg
    with pytest.raises(ImageReadError, match="image 3"):
        protocol.decode_image(payload, 3)


def test_pixel_limit_names_the_size_and_is_checked_before_decoding(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_image(50, 100)).save(buf, format="PNG")
    with pytest.raises(ImageReadError, match=r"big.png is 100x50 px \(0.005 MP\), over the 0.005 MP limit"):
        decode_image(buf.getvalue(), "big.png", pixel_limit=4999)
    assert decode_image(buf.getvalue(), "big.png", pixel_limit=5000).image.shape == (50, 100, 3)
    assert PIXEL_LIMIT == Image.MAX_IMAGE_PIXELS or Image.MAX_IMAGE_PIXELS is None
    with pytest.raises(ImageReadError, match="over the 64-px limit"):
        decode_image(buf.getvalue(), "big.png", max_side=64)
    with pytest.raises(DataError, match="not base64"):
        protocol.decode_image("%%%", 0)
    with pytest.raises(ImageReadError, match="image 0: the file is corrupt"):
        protocol.decode_image(base64.b64encode(b"not an image at all").decode("ascii"), 0)
