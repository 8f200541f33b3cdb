"""Layout registry, detection and the one front door :func:`load_dataset`.

Each supported folder layout is a :class:`Layout` in :data:`LAYOUTS` (name -> layout; a layout is callable
as its loader). :func:`detect_layout` tries them in the order of :data:`LAYOUTS`, most specific first: a
HAM10000 folder also holds ``ISIC_*.jpg`` files and NIH has an ``images/`` folder like the plain layout, so
the layouts with a tell-tale table or folder name come before the generic ``plain`` and ``isic`` ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lesion.data import cxr, derm, plain
from lesion.data._common import Progress
from lesion.data.io import read_image, read_mask
from lesion.data.records import Dataset, Domain, Record
from lesion.errors import DataError, unknown_option

#: Label files a user may point at instead of the folder (the folder is their parent).
TABLE_SUFFIXES = (".csv", ".txt", ".xlsx", ".xls")


@dataclass(frozen=True)
class Layout:
    """One supported folder layout.

    Attributes:
        name: registry key (``ham10000``, ``plain``...), stored as ``Dataset.layout``.
        title: human-readable name for menus and messages.
        domain: ``"derm"`` or ``"cxr"`` (``plain`` reads it from ``dataset.json``; this is its default).
        expects: what the folder must hold, shown when no layout matches.
        detect: ``(folder, label_file_or_None) -> bool``; cheap (lists folders, reads at most a CSV header).
        load: ``(root, label_file_or_None, progress) -> Dataset``.
    """

    name: str
    title: str
    domain: Domain
    expects: str
    detect: Callable[[Path, Path | None], bool]
    load: Callable[..., Dataset]

    def __call__(self, root: str | Path, csv: str | Path | None = None, progress: Progress | None = None) -> Dataset:
        return self.load(Path(root), Path(csv) if csv is not None else None, progress)


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("ham10000", "HAM10000", "derm",
               "HAM10000_metadata.csv (lesion_id, image_id, dx, ...) + HAM10000_images_part_*/ISIC_x.jpg "
               "[+ HAM10000_segmentations_lesion_tschandl/ISIC_x_segmentation.png]",
               derm.detect_ham10000, derm.load_ham10000),
        Layout("siim2020", "SIIM-ISIC 2020", "derm",
               "train.csv (image_name, patient_id, sex, age_approx, anatom_site_general_challenge, diagnosis, "
               "benign_malignant, target) + train/ or jpeg/train/ with .jpg images",
               derm.detect_siim2020, derm.load_siim2020),
        Layout("nih14", "NIH ChestX-ray14", "cxr",
               "Data_Entry_2017.csv (Image Index, Finding Labels, Patient ID, ...) + images/ or images_*/images/",
               cxr.detect_nih14, cxr.load_nih14),
        Layout("ph2", "PH2", "derm",
               "PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp + IMDxxx_lesion/ "
               "[+ PH2_dataset.txt, PH2_dataset.xlsx or PH2_labels.csv]",
               derm.detect_ph2, derm.load_ph2),
        Layout("montgomery", "Montgomery County CXR", "cxr",
               "CXR_png/ + ManualMask/leftMask/ + ManualMask/rightMask/ [+ ClinicalReadings/]",
               cxr.detect_montgomery, cxr.load_montgomery),
        Layout("cxr_masks", "Chest X-ray Masks and Labels", "cxr",
               "Lung Segmentation/CXR_png/ + Lung Segmentation/masks/ (Shenzhen masks end in _mask) [+ labels.csv]",
               cxr.detect_cxr_masks, cxr.load_cxr_masks),
        Layout("plain", "Plain folder", "derm",
               "images/ [+ masks/ with the same names, labels.csv with an 'image' column, dataset.json]",
               plain.detect_plain, plain.load_plain),
        Layout("isic", "ISIC challenge (task 1)", "derm",
               "ISIC_x.jpg images (in the folder or its sub-folders) [+ ISIC_x_segmentation.png masks, "
               "ground-truth CSV]",
               derm.detect_isic, derm.load_isic),
    )
}


def _supported() -> str:
    return "\n".join(f"  - {lay.name} ({lay.title}): {lay.expects}" for lay in LAYOUTS.values())


def _split_path(path: str | Path) -> tuple[Path, Path | None]:
    """(folder, label file or None) for a folder or a label-file path; raises DataError for bad paths."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"Path does not exist: {p}")
    if p.is_file():
        if p.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"{p} is a file. Give a data-set folder, or its label table (.csv, .txt, .xlsx).")
        return p.parent, p
    return p, None


def _match(folder: Path, csv: Path | None) -> Layout | None:
    for layout in LAYOUTS.values():
        try:
            if layout.detect(folder, csv):
                return layout
        except PermissionError:
            continue
    return None


def _resolve(path: str | Path) -> tuple[Layout, Path, Path | None]:
    folder, csv = _split_path(path)
    layout = _match(folder, csv)
    if layout is not None:
        return layout, folder, csv
    if not any(c for c in folder.iterdir() if not c.name.startswith(".")):
        raise DataError(f"Folder {folder} is empty.")
    # A common slip is choosing the folder above the data set; name the sub-folders that would work.
    hints = []
    for child in sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")):
        found = _match(child, None)
        if found is not None:
            hints.append(f"{child.name} ({found.name})")
    hint = f"\nThese sub-folders hold data sets: {', '.join(hints)}." if hints else ""
    what = f"{csv.name} in {folder}" if csv else str(folder)
    raise DataError(f"No supported data-set layout found in {what}. Supported layouts:\n{_supported()}{hint}")


def detect_layout(path: str | Path) -> str:
    """Name of the layout (a key of :data:`LAYOUTS`) of a data-set folder, or of the folder of a label file.

    Raises:
        DataError: the path does not exist, the folder is empty, or no layout matches (the message lists the
            supported layouts and what each expects).
    """
    return _resolve(path)[0].name


def load_dataset(path: str | Path, layout: str | None = None, progress: Progress | None = None) -> Dataset:
    """Load a data set from a folder (or its label file), detecting the layout unless ``layout`` is given.

    Args:
        path: data-set folder, or the label table inside it (``HAM10000_metadata.csv``, ``train.csv``...).
        layout: a key of :data:`LAYOUTS` to skip detection.
        progress: ``progress(done, total)``; only loaders with slow steps (Montgomery mask merge) call it.

    Returns:
        The :class:`Dataset`; records sorted by id with unique ids; ``report`` (:class:`DataReport`) counts
        the data problems (rows without image, images without row, bad ages, duplicate rows) and ``warnings``
        holds its ``lines()``.

    Raises:
        ConfigError: unknown ``layout`` name (lists the valid ones).
        DataError: bad path, no layout, a label table missing a required column, no image left.
    """
    if layout is not None:
        if layout not in LAYOUTS:
            raise unknown_option("data-set layout", layout, list(LAYOUTS))
        folder, csv = _split_path(path)
        return LAYOUTS[layout](folder, csv, progress)
    found, folder, csv = _resolve(path)
    return found(folder, csv, progress)


def load_sample(record: Record, notes: list | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one record's pixels: image RGB uint8 ``[H, W, 3]`` and mask bool ``[H, W]`` (None without a mask).

    Images are upright (EXIF applied), masks never rotated; any non-zero mask pixel is lesion
    (:mod:`lesion.data.io`). ``notes``: optional list that collects :class:`~lesion.data.io.ReadNote` strings.

    Raises:
        ImageReadError: a file is missing or corrupt.
        MaskShapeError: the mask is not the size of the image.
    """
    image = read_image(record.image_path, notes=notes)
    mask = read_mask(record.mask_path, shape=image.shape[:2], notes=notes) if record.mask_path is not None else None
    return image, mask
