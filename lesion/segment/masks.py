"""A folder of masks as a segmentation method: masks made by nnU-Net, MedSAM or any pipeline, matched by image id.

``lesion evaluate seg --masks DIR --data DATA`` and the Segmentation page's "folder of masks" column score it like
Otsu or a network. Each mask is read with the one mask rule (:func:`lesion.data.io.read_mask`: any non-zero pixel
of any channel is lesion), in any image format; its file name gives the id, with ``_mask``, ``_segmentation``,
``_lesion`` or ``_pred`` stripped (``ISIC_0001_segmentation.png`` is the mask of ``ISIC_0001``). An image of the
data set without a mask in the folder gets its own error row (counted, never dropped silently).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lesion.data._common import index_images
from lesion.data.io import read_mask, resize_image
from lesion.errors import DataError

#: Stem suffixes removed from a mask file's name to give the image id.
MASK_SUFFIXES = ("_segmentation", "_mask", "_lesion", "_pred", "_seg")


class MaskFolder:
    """Masks by image id from ``folder`` (see the module docstring); ``name`` is the folder's name."""

    def __init__(self, folder: str | Path, name: str | None = None):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DataError(f"--masks {self.folder} is not a folder.")
        self.masks = index_images([self.folder], strip_suffixes=MASK_SUFFIXES)
        if not self.masks:
            raise DataError(f"--masks {self.folder} holds no image files (PNG, JPEG, TIFF, BMP, DICOM …).")
        self.name = name or f"masks:{self.folder.name}"

    def __len__(self) -> int:
        return len(self.masks)

    def mask_for(self, image_id: str, shape: tuple[int, int], notes: list | None = None) -> np.ndarray:
        """The bool mask of ``image_id`` at ``shape`` (a mask of another size is resized, nearest).

        Raises:
            DataError: the folder has no mask for that id.
        """
        path = self.masks.get(str(image_id))
        if path is None:
            raise DataError(f"no mask for '{image_id}' in {self.folder.name}/")
        m = read_mask(path, notes=notes)
        if m.shape != tuple(shape):
            m = resize_image(m, (int(shape[0]), int(shape[1])), "nearest")
        return m

    def coverage(self, ids) -> dict[str, int]:
        ids = set(map(str, ids))
        return {"matched": len(ids & set(self.masks)), "missing": len(ids - set(self.masks)),
                "unused": len(set(self.masks) - ids)}

    def __call__(self, image: np.ndarray) -> np.ndarray:  # pragma: no cover - the evaluator asks by id
        raise DataError("A folder of masks answers by image id (mask_for), not from the pixels.")
