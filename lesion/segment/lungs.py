"""Lung fields of chest X-rays: a lung segmentation network's mask of both lungs, cached on disk.

The Chest X-ray page draws them beside a finding's heatmap, and the shortcut audit
(:mod:`lesion.analyse.shortcuts`) measures a CAM against them on radiographs that have no lung mask of their own.
Both use the same network by default, :func:`default_lung_model` (the shipped lung U-Net, the better of the two
shipped lung models), and the same rule: the network's probability above its card's threshold, at the
radiograph's own size (bool ``[H, W]``).

Masks are cached under lesion-lab's cache folder per network (the sha256 of its weights file) and image (the
sha1 of the image file's bytes, or of its pixels for an image held in memory), as 0/255 PNGs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.records import file_content_digest
from lesion.paths import cache_dir, write_atomic
from lesion.weights import list_weights, resolve_weights, weights_sha256
from lesion.zoo import load_segmenter

#: Name prefix of the default lung network (the shipped ``lung_unet_efficientnet_lite0``).
LUNG_UNET_PREFIX = "lung_unet"
#: Cache folder version of the stored masks (bump when the rule above changes).
VERSION = 1
#: How an architecture of a lung card reads in a table's "mask source" column.
_ARCH_WORDS = {"unet": "U-Net", "unet_scse": "U-Net", "unetplusplus": "U-Net++", "linknet": "LinkNet"}


def lung_model_names(weights_dir: str | Path | None = None) -> list[str]:
    """Names of the chest X-ray segmentation checkpoints (lung fields) in ``weights_dir`` (default: shipped)."""
    return [c.name for c in list_weights(task="segmentation", domain="cxr", weights_dir=weights_dir)]


def default_lung_model(names: Sequence[str]) -> str | None:
    """The lung network to use among ``names``: the first ``lung_unet*``, else the first, else None."""
    names = list(names)
    return next((n for n in names if n.startswith(LUNG_UNET_PREFIX)), names[0] if names else None)


def lung_source_words(arch: str | None) -> str:
    """``'lung U-Net'``, ``'lung LinkNet'``…: a predicted lung mask's source, by the network's architecture."""
    return f"lung {_ARCH_WORDS.get(str(arch or '').lower(), arch or 'network')}"


def _pixels_key(image: np.ndarray) -> str:
    a = np.ascontiguousarray(image)
    return hashlib.sha1(a.tobytes() + repr((a.shape, a.dtype.str)).encode()).hexdigest()


class LungFields:
    """Predicted lung fields of one lung network, cached on disk per network and image content.

    Args:
        name_or_path: the lung checkpoint (bare name in ``weights/`` or a path).
        loader: ``() -> segmenter`` (``segmenter(image) -> probability [H, W]`` with a ``threshold``), called the
            first time a mask has to be predicted (default :func:`lesion.zoo.load_segmenter`): a page passes its
            cached loader, a test a planted segmenter.
        identity: what the cache is keyed by (default: the sha256 of the weights file).
        arch: the network's architecture, for :attr:`source` (default: its card's).
    """

    def __init__(self, name_or_path: str, loader: Callable[[], Any] | None = None, identity: str | None = None,
                 arch: str | None = None):
        self.ref = str(name_or_path)
        if identity is None or arch is None:
            wpath, card = resolve_weights(name_or_path)
            identity = identity or weights_sha256(wpath)
            arch = arch if arch is not None else card.arch
            self.name = card.name
        else:
            self.name = Path(self.ref).stem
        self.identity = str(identity)
        self.source = lung_source_words(arch)
        self._loader = loader
        self._segmenter = None
        self.predicted = 0  # masks predicted (not read from the cache) by this object

    @property
    def segmenter(self):
        if self._segmenter is None:
            if self._loader is not None:
                self._segmenter = self._loader()
            else:
                self._segmenter = load_segmenter(self.ref)
        return self._segmenter

    def _path(self, key: str) -> Path:
        net = hashlib.sha1(self.identity.encode()).hexdigest()[:16]
        return cache_dir() / "lungs" / f"v{VERSION}" / net / f"{key}.png"

    def mask(self, image: np.ndarray, image_path: str | Path | None = None) -> np.ndarray:
        """Bool lung mask ``[H, W]`` of one radiograph (RGB uint8 ``[H, W, 3]``, as :func:`read_image` gives it).

        ``image_path``: the file it was read from (its bytes key the cache); None keys it by the pixels."""
        import cv2

        key = file_content_digest(image_path) if image_path is not None else _pixels_key(image)
        path = self._path(key) if key not in ("missing", "unreadable") else None
        if path is not None and path.is_file():
            stored = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if stored is not None and stored.shape == image.shape[:2]:
                return stored > 127
        seg = self.segmenter
        m = np.asarray(seg(image)) > float(getattr(seg, "threshold", 0.5))
        self.predicted += 1
        if path is not None:
            ok, png = cv2.imencode(".png", m.astype(np.uint8) * 255)
            if ok:
                write_atomic(path, png.tobytes())
        return m
