"""Image and mask reading: every pixel format users hand us comes back as RGB uint8 / bool, or a typed error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion.data import read_image, read_mask
from lesion.errors import ImageReadError, MaskShapeError


def test_grey_becomes_three_equal_channels(tmp_path: Path) -> None:
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8
    assert (img == 77).all()


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (2, 3, 3)
    assert img[0, 0].tolist() == [10, 20, 30]


def test_16bit_png_is_rescaled_to_full_range(tmp_path: Path) -> None:
    # Half the pixels 0, half 4000: the 0.5/99.5 percentiles are 0 and 4000, so they map to 0 and 255.
    arr = np.zeros((10, 10), np.uint16)
    arr[:, 5:] = 4000
    Image.fromarray(arr).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    img = read_image(tmp_path / "x16.png")
    assert img.dtype == np.uint8
    assert (img[:, :5] == 0).all() and (img[:, 5:] == 255).all()


def test_palette_image_is_mapped_through_palette(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img[0, 0].tolist() == [255, 0, 0] and img[0, 1].tolist() == [0, 0, 255]


def test_inverted_palette_mask_reads_lesion_as_true(tmp_path: Path) -> None:
    # HAM10000: some masks store the lesion as palette index 0 whose colour is white; raw indices would invert it.
    idx = np.ones((6, 8), np.uint8)
    idx[1:3, 2:5] = 0  # 2 x 3 = 6 lesion pixels
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    im.save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == np.bool_ and mask.shape == (6, 8)
    assert mask.sum() == 6 and mask[1:3, 2:5].all()


def test_mask_of_another_size_raises(tmp_path: Path) -> None:
    Image.new("L", (8, 6), 255).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", shape=(6, 8)).all()
    with pytest.raises(MaskShapeError, match="8x6"):
        read_mask(tmp_path / "m.png", shape=(6, 9))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_raises_image_read_error(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / f"t{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=path.name):
        read_image(path)


def test_missing_and_non_image_files(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError):
        read_mask(tmp_path / "text.png")
