"""Reading images and masks by one documented rule, with readable errors and notes instead of silent choices.

**Images** come back as RGB ``uint8`` arrays ``[H, W, 3]`` whatever the file holds:

* palette (``P``/``PA``), CMYK, YCbCr... are converted to RGB through PIL (palette colours mean what they show);
  grey is repeated to three channels; alpha is dropped; 16-bit is rescaled (0.5-99.5 percentile window) and
  float by its range (see :func:`to_uint8_rgb`);
* the **EXIF orientation is applied** (``PIL.ImageOps.exif_transpose``): a phone JPEG stored sideways comes
  back upright, as every viewer shows it, so a mask drawn on the upright image fits it;
* a **multi-page** file (TIFF, animated GIF/PNG) uses **page 1**, and a note names the page count;
* a file over :data:`PIXEL_LIMIT` pixels (Pillow's decompression-bomb threshold, about 89 MP) is refused with one
  line before its pixels are decoded (never Pillow's ``DecompressionBombError`` or a warning);
* **DICOM** (``.dcm`` or a ``DICM`` preamble; needs ``pydicom``): the modality LUT (rescale slope/intercept),
  then the file's VOI LUT or window (``pydicom.pixels.apply_voi_lut``) are applied and the window's output range
  is scaled to 0-255 (no window in the file: its min-max); ``MONOCHROME1`` is inverted so bone is bright;
  a multi-frame file uses frame 1 (with a note). Only pixel-module attributes are read: no patient or study
  field is parsed, logged or returned.

The one decoder is :func:`decode_image` (a path **or the file's bytes**: folders, uploads and the server's payloads
all go through it); :func:`read_image` is its pixels. :mod:`lesion.data.upload` and :mod:`lesion.serving.protocol`
call it.

**Masks** come back as ``bool`` ``[H, W]`` by one rule: **any non-zero pixel in any colour channel is lesion**
(or lung), after a palette image is converted through its palette to RGB(A). So 0/255, 0/1 and 0/100 masks,
a red-on-black RGB mask and a HAM10000 palette mask whose index 0 is white all read right.

* **Alpha**: a fully transparent pixel (alpha 0) is background whatever its colour; when the alpha channel is
  0 everywhere (it carries nothing) it is ignored. Other alpha values do not matter.
* A mask that is **not binary** (more than two distinct values, or two values of which neither is 0) is still
  read by the rule, with a note (JPEG masks usually are: compression adds values; save masks as PNG).
* Masks are **never rotated**: their EXIF orientation, if any, is ignored (with a note). A mask that is the
  image's size turned by 90° gets an error saying so.
* A multi-page mask uses page 1, with a note.

**Notes** never print: pass a list as ``notes=`` to :func:`read_image` / :func:`read_mask` and
:class:`ReadNote` strings (``"<file>: <what>"``, with ``.kind`` and ``.file``) are appended to it;
:func:`summarise_notes` folds many of them into a few lines for a summary.
"""
from __future__ import annotations

import io as _io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from lesion.errors import ImageReadError, MaskShapeError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
DICOM_EXTENSIONS = (".dcm",)
#: Most pixels one image may have: Pillow's own decompression-bomb threshold (the default of
#: ``PIL.Image.MAX_IMAGE_PIXELS``). Larger files are refused from their header, before decoding.
PIXEL_LIMIT = 89_478_485

#: What :func:`decode_image` reads: a file path, or the file's bytes (an upload, a server payload).
ImageSource = Union[str, Path, bytes, bytearray, memoryview]

#: Note kinds and how :func:`summarise_notes` names a group of them.
NOTE_KINDS = {
    "mask_not_binary": "masks are not binary (every non-zero pixel was read as lesion)",
    "multipage": "files have several pages or frames (page 1 was used)",
    "exif_rotated": "images were turned upright by their EXIF orientation",
    "mask_exif_ignored": "masks carry an EXIF orientation, which masks never get (not rotated)",
    "exif_unreadable": "images have an unreadable EXIF orientation (used as stored)",
    "dicom_window": "DICOM images were windowed",
    "mask_alpha": "masks have transparent pixels (read as background)",
}

#: DICOM attributes read (pixel module, modality and VOI LUT modules): nothing about the patient or study.
_DICOM_TAGS = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PlanarConfiguration", "NumberOfFrames", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "VOILUTSequence", "PixelPaddingValue", "PixelPaddingRangeLimit", "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
)


class ReadNote(str):
    """One note about how a file was read: the text ``"<file>: <what>"`` plus ``.kind`` and ``.file``."""

    kind: str
    file: str

    def __new__(cls, file: str, kind: str, text: str) -> "ReadNote":
        s = super().__new__(cls, f"{file}: {text}")
        s.kind, s.file = kind, file
        return s

    def __reduce__(self):  # keep kind and file through pickling (st.cache_data, multiprocessing)
        return (ReadNote, (self.file, self.kind, str(self)[len(self.file) + 2:]))


def _note(notes: list | None, file: str, kind: str, text: str) -> None:
    if notes is not None:
        notes.append(ReadNote(file, kind, text))


def summarise_notes(notes: Iterable[str], examples: int = 3) -> list[str]:
    """Fold notes into one line per kind: a single note stays as it is, several become
    ``"N masks are not binary (...) (e.g. a.png: 3 values ...; b.png ...)"``. Plain strings pass through once."""
    groups: dict[str, list[str]] = {}
    for n in notes:
        groups.setdefault(getattr(n, "kind", "") or str(n), []).append(n)
    out = []
    for kind, items in groups.items():
        if len(items) == 1 or kind not in NOTE_KINDS:
            out.extend(dict.fromkeys(str(i) for i in items))
            continue
        eg = "; ".join(str(i).rstrip(".") for i in items[:examples]) + ("; ..." if len(items) > examples else "")
        out.append(f"{len(items)} {NOTE_KINDS[kind]} (e.g. {eg}).")
    return out


def _dicom_available() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _unreadable(name: str, e: Exception | None = None) -> ImageReadError:
    from PIL import UnidentifiedImageError

    why = "" if e is None or isinstance(e, UnidentifiedImageError) else f" ({str(e)[:160]})"
    kinds = "PNG, JPEG, BMP, TIFF" + (", DICOM" if _dicom_available() else "")
    return ImageReadError(f"Cannot read {name}: the file is corrupt, truncated or not a supported image "
                          f"({kinds}){why}.")


def check_pixels(name: str, w: int, h: int, pixel_limit: int | None = PIXEL_LIMIT, max_side: int | None = None) -> None:
    """Refuse an image of ``w x h`` pixels over ``max_side`` per side or ``pixel_limit`` in all, in one line."""
    if max_side is not None and max(w, h) > max_side:
        raise ImageReadError(f"{name}: {w}x{h} px, over the {max_side}-px limit.")
    if pixel_limit is not None and w * h > pixel_limit:
        raise ImageReadError(f"{name} is {w}x{h} px ({w * h / 1e6:.3g} MP), over the {pixel_limit / 1e6:.3g} MP limit "
                             "for one image (a guard against decompression bombs); downscale it first.")


def _open(source, name: str | None = None, pixel_limit: int | None = PIXEL_LIMIT, max_side: int | None = None):
    """A decoded (``load()``-ed) PIL image of a path or bytes; the caller closes it.

    Raises:
        ImageReadError: missing, folder, corrupt / truncated / not an image, or over the pixel limits (checked from
            the header, before decoding; Pillow's own bomb check never escapes as its error or a warning).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        src, name = _io.BytesIO(bytes(source)), name or "image"
    else:
        path = _existing(Path(source))
        src, name = path, name or path.name
    bomb = getattr(Image, "DecompressionBombError", MemoryError)
    with warnings.catch_warnings():
        # Pillow warns above its threshold and raises above twice it; our own limit below is the one rule.
        warnings.simplefilter("ignore", getattr(Image, "DecompressionBombWarning", Warning))
        try:
            im = Image.open(src)
        except bomb as e:
            raise ImageReadError(f"{name} is over the {(pixel_limit or PIXEL_LIMIT) / 1e6:.3g} MP limit for one image "
                                 f"(a guard against decompression bombs: {e}); downscale it first.") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise _unreadable(name, e) from e
        try:
            check_pixels(name, int(im.size[0]), int(im.size[1]), pixel_limit, max_side)
            im.load()  # decode now, so that a truncated file fails here
        except ImageReadError:
            im.close()
            raise
        except (OSError, SyntaxError, ValueError, bomb) as e:
            im.close()
            raise _unreadable(name, e) from e
    return im


def first_page(im, name: str, notes: list | None):
    """Page 1 of a multi-page file, with a note naming the page count."""
    n = int(getattr(im, "n_frames", 1) or 1)
    if n > 1:
        im.seek(0)
        _note(notes, name, "multipage", f"has {n} pages; page 1 is used.")
    return im


def to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    """Convert any 2-D or 3-D array (grey, grey+alpha, RGB, RGBA; uint8/uint16/int/float) to RGB uint8.

    16-bit and float images are rescaled by their own min/max range (robust 0.5–99.5 percentiles for
    16-bit, which keeps X-ray contrast); alpha is dropped (composited on black is wrong for dermoscopy,
    so we simply ignore it).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 2:  # grey + alpha
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] >= 4:
        a = a[..., :3]
    if a.ndim not in (2, 3):
        raise ImageReadError(f"Expected a 2-D or 3-D image array, got shape {a.shape}.")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if a.dtype == np.bool_:
            f = f * 255.0
        elif np.issubdtype(a.dtype, np.integer) and f.max() > 255:
            lo, hi = np.percentile(f, [0.5, 99.5])
            f = (f - lo) / max(hi - lo, 1e-9) * 255.0
        elif np.issubdtype(a.dtype, np.floating) and f.max() <= 1.0:
            f = f * 255.0
        a = np.clip(f, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


# ------------------------------------------------------------------------------------------------ DICOM

def _existing(path: Path) -> Path:
    if not path.exists():
        raise ImageReadError(f"Image file not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image file.")
    return path


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm`` name or a file with the ``DICM`` marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_to_array(source, name: str, notes: list | None = None, pixel_limit: int | None = PIXEL_LIMIT,
                   max_side: int | None = None) -> np.ndarray:
    """Display pixels of a DICOM file (path or bytes) as uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (colour).

    Modality LUT, then VOI LUT / window, scaled from the window's output range to 0-255 (min-max without a
    window); MONOCHROME1 inverted; frame 1 of a multi-frame file. Only the pixel-module attributes are parsed.
    Rows x Columns over the limits (:func:`check_pixels`) are refused before the pixels are decoded.

    Raises:
        ImageReadError: pydicom is missing, the file is not a readable DICOM image, or it is too large.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as e:
        raise ImageReadError(f"{name} is a DICOM file, but reading DICOM needs the package 'pydicom' "
                             "(pip install pydicom). Or export the image as PNG or TIFF.") from e
    src = _io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        ds = pydicom.dcmread(src, specific_tags=list(_DICOM_TAGS))
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ImageReadError(f"DICOM file {name} holds no image (no pixel data).")
        check_pixels(name, int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0), pixel_limit, max_side)
        arr = ds.pixel_array
    except ImageReadError:
        raise
    except Exception as e:  # pydicom raises many types (InvalidDicomError, missing decoders, bad lengths...)
        # The message names the file and pydicom's reason, never a data element's value.
        raise ImageReadError(f"Cannot read DICOM {name}: {type(e).__name__}: {str(e)[:200]}") from e
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
        _note(notes, name, "multipage", f"has {frames} frames; frame 1 is used.")
    if samples > 1:  # colour (pydicom already converted YBR to RGB)
        return to_uint8_rgb(np.asarray(arr))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        values = apply_modality_lut(np.asarray(arr), ds)
        shown = apply_voi_lut(values, ds)
        lo, hi, how = _voi_range(ds, values, shown, apply_voi_lut)
    except Exception as e:  # a malformed window or LUT
        raise ImageReadError(f"Cannot apply the window of DICOM {name}: {type(e).__name__}: {str(e)[:200]}") from e
    out = (np.asarray(shown, np.float64) - lo) / max(hi - lo, 1e-12) * 255.0
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        out = 255 - out
    _note(notes, name, "dicom_window", f"DICOM {photometric} {how}" + ("; inverted" if photometric == "MONOCHROME1" else "") + ".")
    return out


def _voi_range(ds, values: np.ndarray, shown: np.ndarray, apply_voi_lut) -> tuple[float, float, str]:
    """The output range of the file's VOI transform (what maps to black and white), and how it was found."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        n, first = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
        if first >= 2**15:  # the descriptor's first value is US or SS: undo the unsigned reading
            first -= 2**16
        lut = apply_voi_lut(np.arange(first, first + n, dtype=np.int64), ds)
        return float(lut.min()), float(lut.max()), "VOI LUT applied"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        ends = apply_voi_lut(np.array([-1e300, 1e300]), ds)
        c, w = ds["WindowCenter"].value, ds["WindowWidth"].value
        c = c[0] if ds["WindowCenter"].VM > 1 else c
        w = w[0] if ds["WindowWidth"].VM > 1 else w
        return float(np.min(ends)), float(np.max(ends)), f"window {float(c):g}/{float(w):g} applied"
    v = np.asarray(values, np.float64)
    return float(v.min()), float(v.max()), "has no window; scaled by its min-max"


# ----------------------------------------------------------------------------------------------- images

@dataclass(frozen=True)
class Decoded:
    """What :func:`decode_image` read.

    Attributes:
        image: RGB uint8 ``[H, W, 3]``, upright, page 1.
        mode: what the file held: a PIL mode (``RGB``, ``I;16``, ``P``, ``RGBA``...) or ``DICOM``.
        conversions: pixel-type conversions applied, for a page to show (palette converted, 16-bit rescaled,
            grey repeated, alpha dropped); the :class:`ReadNote` notes (EXIF, pages, DICOM window) go to ``notes``.
    """

    image: np.ndarray
    mode: str
    conversions: tuple[str, ...] = ()


def _has_dicm(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def decode_image(source: ImageSource, name: str | None = None, notes: list | None = None, *,
                 pixel_limit: int | None = PIXEL_LIMIT, max_side: int | None = None) -> Decoded:
    """The one image decoder: a path or a file's bytes -> RGB uint8 ``[H, W, 3]``, by the module's rule.

    EXIF orientation applied, page 1 of a multi-page file (with a note), DICOM by its window (a ``.dcm`` name or a
    ``DICM`` preamble), palette / 16-bit / float / alpha converted (:func:`to_uint8_rgb`), and a pixel limit
    checked from the header before anything is decoded.

    Args:
        source: a file path, or the file's bytes.
        name: the name messages and notes use (default: the file's name; ``"image"`` for bytes).
        notes: optional list; :class:`ReadNote` strings are appended (EXIF rotation, page used, DICOM window).
        pixel_limit: most pixels accepted (default :data:`PIXEL_LIMIT`); None = no limit.
        max_side: longest side accepted (the server's limit); None = no limit.

    Returns:
        :class:`Decoded` (the image, the file's mode, the conversions applied).

    Raises:
        ImageReadError: missing file or folder, 0 bytes, corrupt / truncated / unsupported, DICOM without pydicom,
            no pixels, or over ``pixel_limit`` / ``max_side`` (one line, never a Pillow traceback).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, src = bytes(source), bytes(source)
        name = name or "image"
        if not data:
            raise ImageReadError(f"{name} is empty (0 bytes).")
        dicom = name.lower().endswith(DICOM_EXTENSIONS) or _has_dicm(data[:132])
    else:
        src = _existing(Path(source))
        name = name or src.name
        if src.stat().st_size == 0:
            raise ImageReadError(f"{name} is empty (0 bytes).")
        dicom = src.suffix.lower() in DICOM_EXTENSIONS or is_dicom(src)  # also a DICOM file named .png
    conversions: list[str] = []
    if dicom:
        arr, mode = dicom_to_array(src, name, notes, pixel_limit, max_side), "DICOM"
    else:
        opened = _open(src, name, pixel_limit, max_side)
        try:
            im = upright(first_page(opened, name, notes), name, notes)
            mode = str(im.mode)
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
                conversions.append(f"converted from {mode} to RGB")
            arr = np.asarray(im)
        finally:
            opened.close()
    if arr.size == 0 or min(arr.shape[:2]) < 1:
        raise ImageReadError(f"Image {name} is empty.")
    if arr.dtype != np.uint8:
        conversions.append(f"{arr.dtype} pixels rescaled to 8-bit (0.5-99.5 percentile window)"
                           if np.issubdtype(arr.dtype, np.integer) else f"{arr.dtype} pixels rescaled to 8-bit")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 2)):
        conversions.append("grey image repeated to three channels")
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        conversions.append("alpha channel dropped")
    return Decoded(to_uint8_rgb(arr), mode, tuple(conversions))


def read_image(source: ImageSource, notes: list | None = None, *, name: str | None = None,
               pixel_limit: int | None = PIXEL_LIMIT, max_side: int | None = None) -> np.ndarray:
    """Read an image (a file, or its bytes) as RGB uint8 ``[H, W, 3]``, upright (EXIF orientation applied), page 1:
    the pixels of :func:`decode_image` (same arguments).

    Raises:
        ImageReadError: the file is missing, corrupt or truncated, has zero size, is DICOM without pydicom, or is
            over the pixel limit.
    """
    return decode_image(source, name, notes, pixel_limit=pixel_limit, max_side=max_side).image


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a malformed EXIF block: treat as no orientation
        return 1


_TURNS = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "transposed", 6: "rotated 90°", 7: "transversed",
          8: "rotated 270°"}


def upright(im, name: str, notes: list | None):
    """Apply the EXIF orientation (tag 274) the way viewers show the image."""
    from PIL import ImageOps

    o = _orientation(im)
    if o == 1 or o not in _TURNS:
        return im
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # corrupt EXIF: keep the stored pixels and say so
        _note(notes, name, "exif_unreadable", "EXIF orientation could not be applied; the image is used as stored.")
        return im
    _note(notes, name, "exif_rotated", f"EXIF orientation {o} applied ({_TURNS[o]}).")
    return out if out is not None else im


# ------------------------------------------------------------------------------------------------ masks

def mask_from_array(a: np.ndarray, name: str = "mask", notes: list | None = None,
                    alpha: np.ndarray | None = None) -> np.ndarray:
    """The mask rule on an array: any non-zero value in any channel is lesion; ``alpha == 0`` is background
    (unless alpha is 0 everywhere). ``[H, W]``, ``[H, W, C]``; a note when the values are not binary."""
    a = np.asarray(a)
    if a.ndim == 3 and alpha is None and a.shape[2] in (2, 4):
        alpha, a = a[..., -1], a[..., :-1]
    if a.ndim not in (2, 3):
        raise ImageReadError(f"Mask {name} has shape {a.shape}; expected a 2-D or 3-D array.")
    colour = a if a.ndim == 2 else a.reshape(a.shape[0], a.shape[1], -1)
    mask = colour != 0 if colour.ndim == 2 else (colour != 0).any(axis=2)
    if alpha is not None and not mask.any() and len(np.unique(alpha)) > 1:
        _note(notes, name, "mask_alpha", "colour channels are all 0 but the alpha channel varies; the mask reads "
                                         "as empty (save the lesion as non-zero grey or colour, not as opacity).")
    if alpha is not None and np.asarray(alpha).any():
        clear = np.asarray(alpha) == 0
        if (clear & mask).any():
            _note(notes, name, "mask_alpha",
                  f"{int((clear & mask).sum())} coloured but fully transparent pixels were read as background.")
        mask &= ~clear
    _binary_note(colour, name, notes)
    return mask


def _binary_note(colour: np.ndarray, name: str, notes: list | None) -> None:
    if notes is None:
        return
    flat = colour.reshape(-1) if colour.ndim == 2 else colour.reshape(-1, colour.shape[2])
    values = np.unique(flat, axis=0) if flat.ndim == 2 else np.unique(flat)
    zero = (values == 0) if values.ndim == 1 else (values == 0).all(axis=1)
    if len(values) <= 1 or (len(values) == 2 and zero.any()):  # empty, all lesion, or 0 + one level: binary
        return

    def fmt(v) -> str:
        return str(v.tolist() if hasattr(v, "tolist") else v).replace(" ", "")

    shown = ", ".join(fmt(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
    why = f"{len(values)} distinct values ({shown})" if len(values) > 2 else f"no 0 background (values {shown})"
    _note(notes, name, "mask_not_binary", f"mask is not binary: {why}; every non-zero pixel was read as lesion.")


def read_mask(path: str | Path, shape: tuple[int, ...] | None = None, notes: list | None = None) -> np.ndarray:
    """Read a mask as bool ``[H, W]``: any non-zero pixel of any colour channel is lesion (see the module doc).

    Palette images are converted through their palette first (colours mean what they show); alpha 0 is
    background; masks are never rotated (EXIF ignored); page 1 of a multi-page file.

    Args:
        path: mask file.
        shape: expected ``(H, W)`` of the image; a mask of another size raises :class:`MaskShapeError`.
        notes: optional list; :class:`ReadNote` strings are appended (not binary, pages, EXIF ignored...).
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        raise ImageReadError(f"Mask {path.name} is a DICOM file; give masks as PNG (0 = background).")
    im = first_page(_open(path), path.name, notes)
    if _orientation(im) != 1:
        _note(notes, path.name, "mask_exif_ignored",
              f"has EXIF orientation {_orientation(im)}; masks are never rotated, the stored pixels are used.")
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    mask = mask_from_array(np.asarray(im), path.name, notes)
    if shape is not None and mask.shape != tuple(shape[:2]):
        msg = f"Mask {path.name} is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}."
        if mask.shape == tuple(shape[:2])[::-1]:
            msg += (" It is the image's size turned by 90°: images are read upright (their EXIF orientation"
                    " applied) and masks are never rotated, so draw or export the mask on the upright image.")
        raise MaskShapeError(msg)
    return mask


def resize_image(img: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """Resize ``[H, W(, C)]`` to ``size`` (int = square, or ``(H, W)``); masks use ``interpolation='nearest'``."""
    import cv2

    h, w = (size, size) if isinstance(size, int) else size
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}[interpolation]
    if img.dtype == np.bool_:
        return cv2.resize(img.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, (w, h), interpolation=interp)
