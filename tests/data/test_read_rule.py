"""Issue 12, item 4: masks and images read by one documented rule (lesion.data.io), on generated files whose
answer is known: any non-zero pixel of any channel is lesion, notes for non-binary masks, EXIF applied to
images and never to masks, multi-page files say which page, DICOM windowed by its VOI LUT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion.data import load_dataset, load_sample, read_image, read_mask, summarise_notes
from lesion.data.upload import decode_upload
from lesion.errors import ImageReadError, MaskShapeError
from lesion.metrics import seg_metrics

H, W = 24, 40  # non-square on purpose: a rotation changes the shape


def _box_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[4:12, 6:20] = True  # 8 x 14 = 112 pixels, off-centre so that a wrong rotation cannot line up
    return m


# ------------------------------------------------------------------------------------------ masks

def test_red_on_black_rgb_mask_is_the_lesion(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[_box_mask()] = (255, 0, 0)  # red lesion: grey 76 after L conversion, which "> 127" used to call empty
    Image.fromarray(rgb).save(tmp_path / "red.png")
    notes: list = []
    mask = read_mask(tmp_path / "red.png", notes=notes)
    assert (mask == _box_mask()).all() and mask.sum() == 112
    assert notes == []  # black + one colour is binary
    blue = np.zeros((H, W, 3), np.uint8)
    blue[_box_mask()] = (0, 0, 1)  # even the faintest channel counts
    Image.fromarray(blue).save(tmp_path / "blue.png")
    assert (read_mask(tmp_path / "blue.png") == _box_mask()).all()


def test_mask_0_100_is_binary(tmp_path: Path) -> None:
    arr = _box_mask().astype(np.uint8) * 100
    Image.fromarray(arr, mode="L").save(tmp_path / "m100.png")
    notes: list = []
    mask = read_mask(tmp_path / "m100.png", notes=notes)
    assert mask.sum() == 112 and (mask == _box_mask()).all() and notes == []
    for level in (1, 255):  # the usual {0, 1} and {0, 255} masks read the same
        Image.fromarray(_box_mask().astype(np.uint8) * level, mode="L").save(tmp_path / f"m{level}.png")
        assert (read_mask(tmp_path / f"m{level}.png") == _box_mask()).all()
    arr16 = _box_mask().astype(np.uint16) * 1000  # 16-bit masks too
    Image.fromarray(arr16).save(tmp_path / "m16.png")
    assert (read_mask(tmp_path / "m16.png") == _box_mask()).all()


def test_palette_mask_index0_white(tmp_path: Path) -> None:
    # HAM10000: some masks store the lesion as palette index 0 whose colour is white; raw indices would invert it.
    idx = np.where(_box_mask(), 0, 1).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    im.save(tmp_path / "white0.png")
    notes: list = []
    assert (read_mask(tmp_path / "white0.png", notes=notes) == _box_mask()).all() and notes == []
    # The usual palette (index 0 black, index 1 any colour) reads the same way: colours mean what they show.
    im = Image.fromarray(np.where(_box_mask(), 1, 0).astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    im.save(tmp_path / "green1.png")
    assert (read_mask(tmp_path / "green1.png") == _box_mask()).all()


def test_non_binary_mask_gets_a_note_and_every_non_zero_pixel_counts(tmp_path: Path) -> None:
    arr = np.zeros((H, W), np.uint8)
    arr[_box_mask()] = 255
    arr[0, 0], arr[0, 1] = 37, 3  # e.g. JPEG ringing or an anti-aliased edge
    Image.fromarray(arr, mode="L").save(tmp_path / "grey.png")
    notes: list = []
    mask = read_mask(tmp_path / "grey.png", notes=notes)
    assert mask.sum() == 112 + 2
    assert len(notes) == 1 and notes[0].kind == "mask_not_binary" and notes[0].file == "grey.png"
    assert "4 distinct values" in notes[0] and "not binary" in notes[0]
    # Two values with no 0 background: everything is lesion, and the note says why.
    Image.fromarray(np.where(_box_mask(), 255, 100).astype(np.uint8), mode="L").save(tmp_path / "nozero.png")
    notes = []
    assert read_mask(tmp_path / "nozero.png", notes=notes).all()
    assert len(notes) == 1 and "no 0 background" in notes[0]
    # Without a notes list nothing is printed or raised: the rule is the same.
    assert read_mask(tmp_path / "grey.png").sum() == 114


def test_mask_alpha_rule(tmp_path: Path) -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255  # every pixel red ...
    rgba[..., 3] = np.where(_box_mask(), 255, 0)  # ... but only the lesion is opaque
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    notes: list = []
    assert (read_mask(tmp_path / "alpha.png", notes=notes) == _box_mask()).all()
    assert any(n.kind == "mask_alpha" for n in notes)
    # Alpha 0 everywhere carries nothing and is ignored: the colour decides.
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[_box_mask(), 1] = 200
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    assert (read_mask(tmp_path / "clear.png") == _box_mask()).all()
    # Black paint on a transparent layer: colour is 0 everywhere, so the rule reads it empty, and says why.
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 1] = np.where(_box_mask(), 255, 0)
    Image.fromarray(la, mode="LA").save(tmp_path / "paint.png")
    notes = []
    assert not read_mask(tmp_path / "paint.png", notes=notes).any()
    assert any("alpha channel varies" in n for n in notes)
    import pickle

    assert pickle.loads(pickle.dumps(notes[0])).kind == "mask_alpha"


# ------------------------------------------------------------------------------------------- EXIF

def _scene() -> np.ndarray:
    """Upright RGB image: a dark lesion exactly where :func:`_box_mask` is, on bright skin."""
    img = np.full((H, W, 3), 210, np.uint8)
    img[_box_mask()] = (60, 30, 20)
    return img


def _save_jpeg(arr: np.ndarray, path: Path, orientation: int | None) -> Path:
    im = Image.fromarray(arr)
    if orientation is None:
        im.save(path, quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, quality=95, exif=exif)
    return path


def _iou_of_dark_threshold(image: np.ndarray, truth: np.ndarray) -> float:
    pred = image.mean(axis=2) < 128
    return seg_metrics(pred, truth)["iou"]


def test_exif_rotated_jpeg_scores_like_upright(tmp_path: Path) -> None:
    truth = _box_mask()
    # A phone stores the sensor's pixels (here: the upright scene turned 90° counter-clockwise) and EXIF
    # orientation 6 ("turn 90° clockwise to show"); the mask was drawn on the upright image, as viewers show it.
    upright = _save_jpeg(_scene(), tmp_path / "upright.jpg", None)
    rotated = _save_jpeg(np.rot90(_scene(), 1), tmp_path / "rotated.jpg", 6)
    assert Image.open(rotated).size == (H, W)  # stored sideways: W and H swapped
    notes: list = []
    img = read_image(rotated, notes=notes)
    assert img.shape == (H, W, 3)
    assert [n.kind for n in notes] == ["exif_rotated"] and "orientation 6" in notes[0]
    iou_upright = _iou_of_dark_threshold(read_image(upright), truth)
    iou_rotated = _iou_of_dark_threshold(img, truth)
    assert iou_upright > 0.95 and iou_rotated == pytest.approx(iou_upright, abs=0.02)
    # Every orientation value comes back upright.
    for o, stored in ((3, np.rot90(_scene(), 2)), (8, np.rot90(_scene(), -1)), (2, _scene()[:, ::-1])):
        path = _save_jpeg(np.ascontiguousarray(stored), tmp_path / f"o{o}.jpg", o)
        assert _iou_of_dark_threshold(read_image(path), truth) > 0.95, o
    # Through a data-set folder: the non-square rotated image loads with its upright mask (no size error).
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "masks").mkdir()
    rotated.rename(tmp_path / "ds" / "images" / "phone.jpg")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "ds" / "masks" / "phone.png")
    image, mask = load_sample(load_dataset(tmp_path / "ds")[0])
    assert image.shape[:2] == mask.shape == (H, W) and _iou_of_dark_threshold(image, mask) > 0.95


def test_mask_drawn_on_the_stored_pixels_gets_a_clear_size_message(tmp_path: Path) -> None:
    rotated = _save_jpeg(np.rot90(_scene(), 1), tmp_path / "r.jpg", 6)
    Image.fromarray(np.rot90(_box_mask(), 1).astype(np.uint8) * 255).save(tmp_path / "sideways.png")
    with pytest.raises(MaskShapeError, match="turned by 90°.*masks are never rotated"):
        read_mask(tmp_path / "sideways.png", shape=read_image(rotated).shape[:2])


def test_masks_are_never_rotated_by_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = _box_mask().astype(np.uint8) * 255
    Image.fromarray(arr).save(tmp_path / "m.png", exif=exif)
    assert Image.open(tmp_path / "m.png").getexif().get(0x0112) == 6
    notes: list = []
    assert (read_mask(tmp_path / "m.png", notes=notes) == _box_mask()).all()  # stored pixels, not turned
    assert [n.kind for n in notes] == ["mask_exif_ignored"]


def test_upload_applies_exif_like_files(tmp_path: Path) -> None:
    path = _save_jpeg(np.rot90(np.kron(_scene(), np.ones((2, 2, 1), np.uint8)), 1), tmp_path / "r.jpg", 6)
    d = decode_upload(path.read_bytes(), "r.jpg")
    assert d.image.shape == (2 * H, 2 * W, 3) and any("EXIF orientation 6" in n for n in d.notes)
    assert (d.image == read_image(path)).all()


# ------------------------------------------------------------------------------------- multi-page

def test_multipage_tiff_says_which_page(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((H, W), v, np.uint8)) for v in (11, 22, 33)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    assert Image.open(tmp_path / "stack.tif").n_frames == 3
    notes: list = []
    img = read_image(tmp_path / "stack.tif", notes=notes)
    assert (img == 11).all()  # page 1
    assert [n.kind for n in notes] == ["multipage"] and "has 3 pages; page 1 is used" in notes[0]
    masks = [Image.fromarray(a) for a in (_box_mask().astype(np.uint8) * 255, np.zeros((H, W), np.uint8))]
    masks[0].save(tmp_path / "mstack.tif", save_all=True, append_images=masks[1:])
    notes = []
    assert (read_mask(tmp_path / "mstack.tif", notes=notes) == _box_mask()).all()
    assert "has 2 pages; page 1 is used" in notes[0]
    d = decode_upload((tmp_path / "stack.tif").read_bytes(), "stack.tif", min_side=8)
    assert (d.image == 11).all() and any("3 pages" in n for n in d.notes)


def test_summarise_notes_folds_many_files_into_one_line(tmp_path: Path) -> None:
    notes: list = []
    for i in range(5):
        arr = np.zeros((H, W), np.uint8)
        arr[0, :3] = (1, 2, 3)
        Image.fromarray(arr).save(tmp_path / f"n{i}.png")
        read_mask(tmp_path / f"n{i}.png", notes=notes)
    lines = summarise_notes(notes + ["a plain line"])
    assert len(lines) == 2 and lines[0].startswith("5 masks are not binary") and "n0.png" in lines[0]
    assert lines[1] == "a plain line"


# ------------------------------------------------------------------------------------------- DICOM

def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **extra) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "SECRET-4711", "19700101"
    frames = pixels if pixels.ndim == 3 else pixels[None]
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).PatientName == "Doe^Jane"
    return path


def test_dicom_monochrome1_voi_lut(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset

    # VOI LUT: stored values 100..103 map to LUT entries 0, 1000, 3000, 4000 (12-bit output, 16 bits/entry);
    # values below 100 take the first entry, above 103 the last. Display range = the LUT's 0..4000.
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4, 100, 16])  # LUT Descriptor: entries, first stored value, bits per entry
    lut.add_new(0x00283006, "US", [0, 1000, 3000, 4000])  # LUT Data
    px = np.array([[50, 100, 101], [102, 103, 900]], np.uint16)
    path = _dicom(tmp_path / "m1.dcm", px, "MONOCHROME1", VOILUTSequence=[lut])
    notes: list = []
    img = read_image(path, notes=notes)
    assert img.shape == (2, 3, 3) and (img[..., 0] == img[..., 2]).all()
    shown = np.rint(np.array([[0, 0, 1000], [3000, 4000, 4000]]) / 4000 * 255)
    assert img[..., 0].tolist() == (255 - shown).astype(int).tolist()  # MONOCHROME1: low values are bright
    assert "VOI LUT applied; inverted" in notes[0]
    assert not any("Doe" in n or "SECRET" in n for n in notes)


def test_dicom_window_rescale_and_no_window(tmp_path: Path) -> None:
    px = np.array([[0, 1000, 1500], [2000, 3000, 4095]], np.uint16)
    # Rescale -1000 (HU-like) then window centre 1000 width 2001 over 0..2000 (after rescale: stored 1000..3000).
    path = _dicom(tmp_path / "w.dcm", px, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=1000,
                  WindowWidth=2001)
    notes: list = []
    img = read_image(path, notes=notes)[..., 0]
    assert img[0, 0] == 0 and img[0, 1] == 0 and img[1, 1] == 255 and img[1, 2] == 255
    assert img[0, 2] == pytest.approx(64, abs=1) and img[1, 0] == pytest.approx(128, abs=1)
    assert "window 1000/2001 applied" in notes[0]
    path = _dicom(tmp_path / "plain.dcm", px)  # no window in the file: its own min-max
    img = read_image(path)[..., 0]
    assert img[0, 0] == 0 and img[1, 2] == 255 and img[1, 0] == round(2000 / 4095 * 255)
    multi = _dicom(tmp_path / "multi.dcm", np.stack([px, 4095 - px]))
    notes = []
    assert (read_image(multi, notes=notes) == read_image(path)).all() and "has 2 frames; frame 1" in notes[0]


def test_dicom_in_folders_and_uploads(tmp_path: Path) -> None:
    px = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 3)
    (tmp_path / "plain" / "images").mkdir(parents=True)
    _dicom(tmp_path / "plain" / "images" / "cx1.dcm", px, WindowCenter=2000, WindowWidth=4000)
    ds = load_dataset(tmp_path / "plain")
    assert [r.id for r in ds] == ["cx1"] and ds.domain == "cxr"
    image, _ = load_sample(ds[0])
    assert image.shape == (32, 40, 3)
    assert not any("Doe" in str(v) or "SECRET" in str(v) for v in ds[0].meta.values())
    # NIH layout: Data_Entry names .png, the folder holds .dcm copies: matched by stem.
    nih = tmp_path / "nih"
    (nih / "images").mkdir(parents=True)
    (nih / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID,Patient Age\n"
                                             "00000001_000.png,Mass,1,40\n")
    _dicom(nih / "images" / "00000001_000.dcm", px, WindowCenter=2000, WindowWidth=4000)
    nds = load_dataset(nih)
    assert len(nds) == 1 and nds[0].findings == ("Mass",) and (load_sample(nds[0])[0] == image).all()
    # Chest X-ray Masks and Labels layout lists .dcm X-rays too.
    seg = tmp_path / "cxr" / "Lung Segmentation"
    (seg / "CXR_png").mkdir(parents=True)
    (seg / "masks").mkdir()
    _dicom(seg / "CXR_png" / "MCUCXR_0001_0.dcm", px)
    Image.fromarray(np.full((32, 40), 255, np.uint8)).save(seg / "masks" / "MCUCXR_0001_0.png")
    cds = load_dataset(tmp_path / "cxr")
    assert len(cds) == 1 and load_sample(cds[0])[1].all()
    # Upload decodes the same pixels by the same rule.
    data = (tmp_path / "plain" / "images" / "cx1.dcm").read_bytes()
    assert (decode_upload(data, "cx1.dcm").image == image).all()


def test_bad_dicom_is_one_readable_error(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    (tmp_path / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    with pytest.raises(ImageReadError, match="x.dcm"):
        read_image(tmp_path / "x.dcm")
    (tmp_path / "t.dcm").write_text("not dicom at all")
    with pytest.raises(ImageReadError, match="t.dcm"):
        read_image(tmp_path / "t.dcm")
    with pytest.raises(ImageReadError, match="DICOM"):
        read_mask(tmp_path / "t.dcm")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.dcm")
