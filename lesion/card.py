"""The model card: one typed, frozen description of a checkpoint, the only way a card is written or read.

A card says what the model is (task, architecture, classes, the constructor config that rebuilds it, the
preprocessing its inputs need), what it was trained on (data sources with their licences, the split), how
well it does and on which data (:class:`Metric`: value, data set, split, n, CI), how it got there (per-epoch
history, training settings) and where it came from (:class:`Provenance`: command, library versions, device,
time, sha256 of the weights). It plays the role of timm's ``pretrained_cfg`` and smp's hub config: the
model is rebuilt from ``card.model`` (:func:`lesion.zoo.load_model`), and its inputs are prepared from
``card.preprocessing`` (:mod:`lesion.preprocess`). Each value is stored once: input size, mean and std live in
``preprocessing`` only (old cards also wrote them into ``model``; they are read from there where
``preprocessing`` lacks them, and never written back).

JSON is the storage format (``NAME.json`` next to ``NAME.safetensors``), versioned by ``schema``. A card
without ``schema`` is an old (version 1) hand-built dict, read through the one converter
:func:`from_v1`, so old checkpoints keep loading; every writer (trainers, exporter) builds a
:class:`ModelCard` and :func:`lesion.weights.save_checkpoint` serialises it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from typing import Any, Mapping, Sequence

from lesion.data.licences import LICENCES, licence_keys, licences_of
from lesion.errors import CheckpointError, ConfigError, unknown_option

#: Version of the JSON layout written by :meth:`ModelCard.to_dict`.
SCHEMA_VERSION = 2

#: What a card may describe; :func:`lesion.zoo.load_model` dispatches on it.
TASKS = ("segmentation", "classification", "multitask")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Data-set role of a source that was only evaluated on, never trained on.
EXTERNAL = "external validation (never trained on)"
TRAIN_VAL = "train+val"
#: Split of a metric pooled over every fold of a K-fold ensemble, each image scored by the member that held it out.
OUT_OF_FOLD = "out-of-fold"


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def _ci(x: Any) -> tuple[float, float] | None:
    if x is None:
        return None
    lo, hi = x
    return (float(lo), float(hi))


#: How an image is fitted to the network's H x W (:mod:`lesion.preprocess` implements them):
#: ``squash`` resizes to H x W whatever the aspect; ``letterbox`` resizes the whole image into H x W keeping its
#: aspect and pads bottom / right (SAM's layout); ``crop`` takes the central region of the target's aspect, then
#: resizes it (for a square target: the central ``min(h, w)`` square, the classifiers' centre crop).
RESIZE_MODES = ("squash", "letterbox", "crop")
#: What the network sees before ``(x - mean) / std``: ``0-1`` = uint8 / 255, ``0-255`` = uint8 as is,
#: ``minmax`` = each image's own min..max (over the image, not the padding) to 0..1 (MedSAM).
SCALES = ("0-1", "0-255", "minmax")
#: cv2 interpolation of the resize: ``auto`` = INTER_AREA when no side is enlarged, else INTER_LINEAR;
#: ``area`` = always INTER_AREA (MedSAM's authors); ``linear`` = always INTER_LINEAR.
INTERPOLATIONS = ("auto", "area", "linear")
#: Keys an old card also stored in its ``model`` section; they live in ``preprocessing`` only.
PREPROCESSING_KEYS_IN_MODEL = ("size", "mean", "std")


def _hw(size: Any) -> int | tuple[int, int]:
    """``224`` / ``[224]`` / ``[H, W]`` / ``"HxW"`` -> ``S`` when square, else ``(H, W)`` (ValueError otherwise)."""
    if isinstance(size, str):
        size = [int(s) for s in size.lower().replace("×", "x").split("x")] if "x" in size.lower() else int(size)
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            size = size[0]
        elif len(size) != 2:
            raise ValueError(f"size must be one side or (height, width), got {size!r}")
        else:
            h, w = int(size[0]), int(size[1])
            if h < 1 or w < 1:
                raise ValueError(f"size must be positive, got {size!r}")
            return h if h == w else (h, w)
    if isinstance(size, bool) or int(size) != size or int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    return int(size)


def _resize_mode(resize: str, center_crop: bool | None) -> str:
    """The resize mode of a card, also of an old one: ``""`` + ``center_crop`` (default True: the classifiers'
    crop) and the free-text descriptions old cards carried (``"square, cv2 INTER_AREA ..."`` = squash)."""
    text = str(resize or "").strip()
    if not text:
        return "crop" if center_crop is None or center_crop else "squash"
    low = text.lower()
    if low in RESIZE_MODES:
        return low
    if " " in low or "," in low:  # an old card's description
        if low.startswith("square"):
            return "squash"
        if "longest side" in low or "pad" in low:
            return "letterbox"
        return "crop" if center_crop is None or center_crop else "squash"
    raise unknown_option("resize mode", text, RESIZE_MODES)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a network input (STYLE habit 4: preprocessing travels with the model).

    One description for classifiers, segmenters and MedSAM; :mod:`lesion.preprocess` is its one implementation
    (``prepare`` -> uint8 ``[H, W, C]``, ``to_input`` -> float32 ``[B, C, H, W]``, ``restore`` for masks).
    ``size`` is stored as ``S`` for a square input and ``(H, W)`` otherwise; read :attr:`hw`, :attr:`height`,
    :attr:`width`. ``center_crop`` is the old spelling of ``resize='crop'`` / ``'squash'``: accepted by the
    constructor (where ``resize`` is not given) and :meth:`from_dict`, readable as a property, never stored.
    """

    size: int | tuple[int, int] = 224  # network input: S (square) or (H, W), pixels
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel mean of the scaled input (see ``scale``)
    std: tuple[float, ...] = IMAGENET_STD  # per-channel std of the scaled input
    center_crop: InitVar[bool | None] = None  # old cards: True = resize 'crop', False = 'squash' (not stored)
    clahe: bool = False  # CLAHE (clip 2, 8x8 tiles) on the lightness (grey) channel of the resized image
    channels: int = 3  # 3 = RGB input; 1 = grey (radiographs, seed 002): RGB is converted to grey first
    threshold: float | None = None  # segmenters: probability above which a pixel is foreground
    resize: str = ""  # one of RESIZE_MODES ("" = from center_crop; default crop)
    scale: str = "0-1"  # one of SCALES: the input range before (x - mean) / std
    interpolation: str = "auto"  # one of INTERPOLATIONS

    def __post_init__(self, center_crop: bool | None) -> None:
        # ``resize`` wins over ``center_crop`` when both are given (dataclasses.replace passes the old property
        # value of center_crop along with a new resize); center_crop alone decides only when resize is "".
        object.__setattr__(self, "size", _hw(self.size))
        object.__setattr__(self, "resize", _resize_mode(self.resize, center_crop))
        scale = {1: "0-1", 255: "0-255"}.get(self.scale, self.scale) if not isinstance(self.scale, str) else self.scale
        if scale not in SCALES:
            raise unknown_option("input scale", scale, SCALES)
        object.__setattr__(self, "scale", scale)
        if self.interpolation not in INTERPOLATIONS:
            raise unknown_option("interpolation", self.interpolation, INTERPOLATIONS)
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "clahe", bool(self.clahe))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def hw(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    @property
    def height(self) -> int:
        return self.hw[0]

    @property
    def width(self) -> int:
        return self.hw[1]

    @property
    def size_text(self) -> str:
        """``"224"`` for a square input, ``"144x192"`` (height x width, as everywhere) otherwise."""
        return str(self.size) if isinstance(self.size, int) else f"{self.height}x{self.width}"

    @classmethod
    def from_dict(cls, p: Mapping[str, Any] | None, model: Mapping[str, Any] | None = None) -> "Preprocessing":
        """Read a card's ``preprocessing``, also an old one: an int ``size`` (square), ``center_crop`` with
        ``resize: ""`` or a free-text ``resize``, and size / mean / std found only in the ``model`` section
        (old cards stored them twice; ``preprocessing`` wins where both have them).

        Raises:
            ValueError: a size that is not one or two positive integers.
            ConfigError: an unknown resize mode, scale or interpolation.
        """
        p = dict(p or {})
        m = dict(model or {})
        for k in PREPROCESSING_KEYS_IN_MODEL:
            if k not in p and m.get(k) is not None:
                p[k] = m[k]
        cc = p.get("center_crop")
        return cls(
            size=_hw(p.get("size", 224)),
            mean=tuple(float(x) for x in p.get("mean", IMAGENET_MEAN)),
            std=tuple(float(x) for x in p.get("std", IMAGENET_STD)),
            clahe=bool(p.get("clahe", False)),
            channels=int(p.get("channels", 3)),
            threshold=_opt_float(p.get("threshold")),
            resize=_resize_mode(str(p.get("resize") or ""), None if cc is None else bool(cc)),
            scale=p.get("scale", "0-1"),
            interpolation=str(p.get("interpolation", "auto")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``size`` an int (square) or ``[H, W]``; every value once (no ``center_crop``)."""
        d = dataclasses.asdict(self)
        d["size"] = self.size if isinstance(self.size, int) else list(self.size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


# ``center_crop`` of an existing Preprocessing (pages, old callers): derived from ``resize``. Assigned after the
# class is built so that the dataclass keeps ``center_crop`` as an init-only argument with a default of None.
Preprocessing.center_crop = property(lambda self: self.resize == "crop",  # type: ignore[assignment]
                                     doc="True when the central region is cropped (resize 'crop').")


@dataclass(frozen=True)
class DataSource:
    """One data set a model saw: what it is, its role (trained on or external), counts and licences."""

    name: str
    source: str = ""  # the spec it was loaded from (folder name, ``demo:derm``), never a machine path
    layout: str = ""
    synthetic: bool = False
    role: str = TRAIN_VAL
    n_train: int | None = None
    n_val: int | None = None
    n: int | None = None  # images used (external sets) or in the set
    licences: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        return self.role == EXTERNAL

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataSource":
        return cls(name=str(d["name"]), source=str(d.get("source") or ""), layout=str(d.get("layout") or ""),
                   synthetic=bool(d.get("synthetic", False)), role=str(d.get("role") or TRAIN_VAL),
                   n_train=_opt_int(d.get("n_train")), n_val=_opt_int(d.get("n_val")), n=_opt_int(d.get("n")),
                   licences=tuple(str(x) for x in d.get("licences") or ()))


@dataclass(frozen=True)
class Split:
    """How the training data was split into train and validation, so no group leaks."""

    method: str = ""
    seed: int = 0
    val_fraction: float | None = None
    n_splits: int | None = None
    fold: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_groups_train: int | None = None
    n_groups_val: int | None = None
    sets: Mapping[str, Any] = field(default_factory=dict)  # per data set: method, counts, val_ids
    notes: Mapping[str, Any] = field(default_factory=dict)  # e.g. unlabelled / duplicate images dropped

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Split":
        d = dict(d or {})
        return cls(method=str(d.get("method") or ""), seed=int(d.get("seed") or 0),
                   val_fraction=_opt_float(d.get("val_fraction")), n_splits=_opt_int(d.get("n_splits")),
                   fold=_opt_int(d.get("fold")), n_train=_opt_int(d.get("n_train")), n_val=_opt_int(d.get("n_val")),
                   n_groups_train=_opt_int(d.get("n_groups_train")), n_groups_val=_opt_int(d.get("n_groups_val")),
                   sets=dict(d.get("sets") or {}), notes=dict(d.get("notes") or {}))

    def val_ids(self) -> set[str]:
        """Ids of every validation image the card lists (segmentation and chest X-ray splits list them)."""
        return {i for s in self.sets.values() for i in (s.get("val_ids") or ())}


@dataclass(frozen=True)
class Metric:
    """One number with the data it was measured on: ``auc 0.857 on HAM10000 / val (n 848) [0.831, 0.884]``."""

    name: str  # auc, auc_mean, loss, iou, dice, precision, recall, iou_median, dice_median, mask_dice
    value: float
    data: str  # data set name (for a pooled validation over several sets: the names joined by " + ")
    split: str = "val"  # val (held out from training, chose the best epoch), external (never trained on)
    n: int | None = None
    positives: int | None = None
    ci: tuple[float, float] | None = None  # 95% bootstrap CI
    label: str | None = None  # the class of a per-class metric (multi-label heads)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Metric":
        return cls(name=str(d["name"]), value=float(d["value"]), data=str(d["data"]), split=str(d.get("split", "val")),
                   n=_opt_int(d.get("n")), positives=_opt_int(d.get("positives")), ci=_ci(d.get("ci")),
                   label=d.get("label"))

    def describe(self) -> str:
        ci = f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else ""
        n = f", n {self.n}" if self.n is not None else ""
        lab = f" ({self.label})" if self.label else ""
        return f"{self.name}{lab} {self.value:.3f}{ci} on {self.data} / {self.split}{n}"


@dataclass(frozen=True)
class Training:
    """How the weights were obtained: the recipe's settings and the run's length."""

    epochs: int | None = None  # epochs run
    best_epoch: int | None = None  # the epoch whose weights were kept
    wall_time_s: float | None = None
    loss: str | None = None
    optimizer: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # the training config dataclass, as run
    init_from: str | None = None  # checkpoint this run continued
    recipe: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Training":
        d = dict(d or {})
        return cls(epochs=_opt_int(d.get("epochs")), best_epoch=_opt_int(d.get("best_epoch")),
                   wall_time_s=_opt_float(d.get("wall_time_s")), loss=d.get("loss"), optimizer=d.get("optimizer"),
                   config=dict(d.get("config") or {}), init_from=d.get("init_from"), recipe=d.get("recipe"))


@dataclass(frozen=True)
class Provenance:
    """Where the file came from: the command, library versions, device, time, and the weights' identity."""

    command: str | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    device: str | None = None
    created: str | None = None  # ISO time the checkpoint was written
    sha256: str | None = None  # of the weights file
    file_size_bytes: int | None = None
    dtype: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Provenance":
        d = dict(d or {})
        return cls(command=d.get("command"), versions=dict(d.get("versions") or {}), device=d.get("device"),
                   created=d.get("created"), sha256=d.get("sha256"), file_size_bytes=_opt_int(d.get("file_size_bytes")),
                   dtype=d.get("dtype"))


@dataclass(frozen=True)
class ModelCard:
    """Everything known about one checkpoint (see the module docstring)."""

    name: str
    task: str  # one of TASKS
    domain: str = ""  # derm, cxr
    arch: str = ""
    encoder: str = ""
    init: str = "random"
    classes: tuple[str, ...] = ()
    target: str | None = None  # melanoma, malignant, dx7, tb, or a chest X-ray label set (multi-label)
    multilabel: bool = False  # independent sigmoids (chest X-ray findings)
    model: Mapping[str, Any] = field(default_factory=dict)  # constructor config: rebuilds the network
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    data: tuple[DataSource, ...] = ()
    split: Split = field(default_factory=Split)
    metrics: tuple[Metric, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()  # one row per epoch
    training: Training = field(default_factory=Training)
    provenance: Provenance = field(default_factory=Provenance)
    extra: Mapping[str, Any] = field(default_factory=dict)  # task-specific facts: label_set, class_table, pos_weight, …
    notes: str = ""
    warnings: tuple[str, ...] = ()
    schema: int = SCHEMA_VERSION
    path: str | None = None  # the weights file this card was read next to (not stored)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CheckpointError(f"Card '{self.name}' has task '{self.task}'; a card describes one of {', '.join(TASKS)}.")
        if any(k in self.model for k in PREPROCESSING_KEYS_IN_MODEL):
            # size / mean / std are preprocessing: stored once, in ``preprocessing`` (old cards and configs that
            # carry them in the constructor section are read through Preprocessing.from_dict, which takes them
            # from ``model`` only where ``preprocessing`` lacks them).
            object.__setattr__(self, "model", {k: v for k, v in self.model.items()
                                               if k not in PREPROCESSING_KEYS_IN_MODEL})

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def licences(self) -> tuple[str, ...]:
        """Every licence note of every data source, each once, in order."""
        out: list[str] = []
        for d in self.data:
            out += [x for x in d.licences if x not in out]
        return tuple(out)

    @property
    def trained_on(self) -> tuple[DataSource, ...]:
        return tuple(d for d in self.data if not d.external)

    @property
    def external_data(self) -> tuple[DataSource, ...]:
        return tuple(d for d in self.data if d.external)

    @property
    def synthetic_only(self) -> bool:
        """True when every data set the model was trained on is synthetic."""
        return bool(self.trained_on) and all(d.synthetic for d in self.trained_on)

    @property
    def uses_metadata(self) -> bool:
        return bool(self.model.get("use_metadata", False)) and self.task == "multitask"

    @property
    def sha256(self) -> str | None:
        return self.provenance.sha256

    def metric(self, name: str, split: str = "val", data: str | None = None, label: str | None = None) -> Metric | None:
        """The first metric with this name and split (and data set / label when given), or None."""
        for m in self.metrics:
            if m.name == name and m.split == split and (data is None or m.data == data) and m.label == label:
                return m
        return None

    def metrics_where(self, name: str | None = None, split: str | None = None, label: Any = ...) -> list[Metric]:
        return [m for m in self.metrics if (name is None or m.name == name) and (split is None or m.split == split)
                and (label is ... or m.label == label)]

    def headline(self, split: str = "val") -> Metric | None:
        """The number a table shows first: IoU for segmenters, (mean) ROC-AUC for classifiers, pooled over
        the validation sets (external: the first external set)."""
        names = ("iou",) if self.task == "segmentation" else ("auc", "auc_mean")
        if split == "val" and (oof := self.metric("auc", OUT_OF_FOLD)) is not None:
            return oof  # a K-fold member: the pooled out-of-fold AUC over all images is the honest headline
        pooled = self.pooled_val_data if split == "val" else None
        for name in names:
            for m in self.metrics:
                if m.name == name and m.split == split and m.label is None and (pooled is None or m.data == pooled):
                    return m
        return None

    def domain_warning(self, data_domain: str | None) -> str | None:
        """One line when this model is used on another image domain than it was trained for (a lung model on
        dermoscopy, a skin classifier on chest X-rays), else None. Unknown domains give no warning."""
        if not self.domain or not data_domain or self.domain == data_domain:
            return None
        names = {"derm": "dermoscopy", "cxr": "chest X-rays"}
        return (f"'{self.name}' was trained on {names.get(self.domain, self.domain)} but the data are "
                f"{names.get(data_domain, data_domain)}: its outputs mean nothing here.")

    @property
    def pooled_val_data(self) -> str:
        """Name of the pooled validation data: the trained-on sets joined by `` + ``."""
        return " + ".join(d.name for d in self.trained_on) or "validation"

    # -- writing ---------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``path`` is where the card was found, not part of it)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d["preprocessing"] = self.preprocessing.to_dict()
        order = ["schema"] + [k for k in d if k != "schema"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | None = None) -> "ModelCard":
        """Read a stored card: the current schema directly, an old (schema-less) one through :func:`from_v1`."""
        if not isinstance(d, Mapping):
            raise CheckpointError("A model card must be a JSON object.")
        schema = d.get("schema")
        if schema is None:
            return from_v1(d, path)
        if schema != SCHEMA_VERSION:
            raise CheckpointError(
                f"Card '{d.get('name')}' has schema {schema}; this version of lesion-lab reads schema {SCHEMA_VERSION} "
                "(and converts schema-less old cards)."
            )
        try:
            return cls(
                name=str(d["name"]), task=str(d["task"]), domain=str(d.get("domain") or ""), arch=str(d.get("arch") or ""),
                encoder=str(d.get("encoder") or ""), init=str(d.get("init") or "random"),
                classes=tuple(str(c) for c in d.get("classes") or ()), target=d.get("target"),
                multilabel=bool(d.get("multilabel", False)), model=dict(d.get("model") or {}),
                preprocessing=Preprocessing.from_dict(d.get("preprocessing"), d.get("model")),
                data=tuple(DataSource.from_dict(x) for x in d.get("data") or ()),
                split=Split.from_dict(d.get("split")),
                metrics=tuple(Metric.from_dict(x) for x in d.get("metrics") or ()),
                history=tuple(dict(r) for r in d.get("history") or ()),
                training=Training.from_dict(d.get("training")), provenance=Provenance.from_dict(d.get("provenance")),
                extra=dict(d.get("extra") or {}), notes=str(d.get("notes") or ""),
                warnings=tuple(str(w) for w in d.get("warnings") or ()), schema=SCHEMA_VERSION, path=path,
            )
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"Card '{d.get('name')}' does not follow schema {SCHEMA_VERSION}: {e!r}.") from e


# ----------------------------------------------------------------------------------------------------------
# The one converter from the old hand-built dicts (schema 1)
# ----------------------------------------------------------------------------------------------------------
_SEG_METRICS = ("iou", "dice", "precision", "recall", "iou_median", "dice_median")


def _licences(name: str, synthetic: bool = False, layout: str = "") -> tuple[str, ...]:
    return tuple(LICENCES[k] for k in licence_keys(f"{name} {layout}", synthetic))


def _canonical_licence(text: str) -> str:
    """The :data:`LICENCES` note an old card's licence line stands for (same opening words), else the line."""
    head = text.split(":")[0].split("(")[0].strip().lower()
    for note in LICENCES.values():
        if note.lower().startswith(head):
            return note
    return text


def _seg_metrics(block: Mapping[str, Any], data: str, split: str) -> list[Metric]:
    out = []
    n = _opt_int(block.get("n"))
    for k in _SEG_METRICS:
        if block.get(k) is not None:
            out.append(Metric(k, float(block[k]), data, split, n=n, ci=_ci(block.get(f"{k}_ci95"))))
    return out


def _v1_data(d: Mapping[str, Any], split: Split) -> list[DataSource]:
    raw = d.get("data")
    if isinstance(raw, Mapping):  # classifier cards: one training set
        name = str(raw.get("name") or "")
        synthetic = bool(raw.get("synthetic", False))
        return [DataSource(name=name, source=str(raw.get("root") or name), layout=str(raw.get("layout") or ""),
                           synthetic=synthetic, role=TRAIN_VAL, n_train=split.n_train, n_val=split.n_val,
                           n=_opt_int(raw.get("n_images")),
                           licences=_licences(name, synthetic, str(raw.get("layout") or "")))]
    out = []
    for s in raw or ():
        role = str(s.get("role") or TRAIN_VAL)
        role = EXTERNAL if "external" in role else role
        out.append(DataSource(name=str(s["name"]), source=str(s.get("source") or ""), layout=str(s.get("layout") or ""),
                              synthetic=bool(s.get("synthetic", False)), role=role, n_train=_opt_int(s.get("n_train")),
                              n_val=_opt_int(s.get("n_val")), n=_opt_int(s.get("n")),
                              licences=tuple(_canonical_licence(x) for x in s.get("licence") or ())))
    return out


def from_v1(d: Mapping[str, Any], path: str | None = None) -> ModelCard:
    """Convert an old hand-built card (no ``schema``; three trainers' shapes) to a :class:`ModelCard`.

    The numbers are carried over unchanged; what moves is where they sit: metrics become :class:`Metric`
    rows naming their data, ``data`` becomes a list of sources with their licences (the external set, once
    only named under ``metrics.external``, becomes a source of its own), and the loose training and
    provenance fields are grouped.
    """
    d = dict(d)
    name = str(d.get("name") or (path or "model"))
    task = str(d.get("task") or "")
    m = dict(d.get("metrics") or {})
    raw_split = dict(d.get("split") or {})
    split = Split(
        method=str(raw_split.get("method") or ""), seed=int(raw_split.get("seed") or 0),
        val_fraction=_opt_float(raw_split.get("val_fraction")), n_splits=_opt_int(raw_split.get("n_splits")),
        fold=_opt_int(raw_split.get("fold", d.get("fold"))), n_train=_opt_int(raw_split.get("n_train")),
        n_val=_opt_int(raw_split.get("n_val")), n_groups_train=_opt_int(raw_split.get("n_groups_train")),
        n_groups_val=_opt_int(raw_split.get("n_groups_val")), sets=dict(raw_split.get("sets") or {}),
        notes={k: raw_split[k] for k in ("unlabelled_dropped", "duplicates_dropped") if k in raw_split},
    )
    if not split.method and split.sets:
        methods = {str(s.get("method")) for s in split.sets.values() if s.get("method")}
        split = dataclasses.replace(split, method=methods.pop() if len(methods) == 1 else "per data set (see sets)")
    data = _v1_data(d, split)
    trained = [s for s in data if s.role != EXTERNAL]
    pooled = " + ".join(s.name for s in trained) or "validation"
    metrics: list[Metric] = []
    if task == "segmentation":
        metrics += _seg_metrics(m.get("val") or {}, pooled, "val")
        for set_name, block in (m.get("val_by_set") or {}).items():
            if len(m.get("val_by_set") or {}) > 1 or set_name != pooled:
                metrics += _seg_metrics(block, set_name, "val")
        for set_name, block in (m.get("external") or {}).items():
            metrics += _seg_metrics(block, set_name, "external")
    else:
        if m.get("val_auc") is not None:
            metrics.append(Metric("auc", float(m["val_auc"]), pooled, "val", n=split.n_val, ci=_ci(m.get("val_auc_ci"))))
        if m.get("val_auc_mean") is not None:
            metrics.append(Metric("auc_mean", float(m["val_auc_mean"]), pooled, "val"))
        for label, block in (m.get("val_per_label") or {}).items():
            if block.get("auc") is not None:
                metrics.append(Metric("auc", float(block["auc"]), pooled, "val", n=_opt_int(block.get("n")),
                                      positives=_opt_int(block.get("positives")), ci=_ci(block.get("auc_ci")), label=label))
        if m.get("val_mask_dice") is not None:
            metrics.append(Metric("mask_dice", float(m["val_mask_dice"]), pooled, "val", n=split.n_val))
        if m.get("val_loss") is not None:
            metrics.append(Metric("loss", float(m["val_loss"]), pooled, "val", n=split.n_val))
        ext = m.get("external")
        if isinstance(ext, Mapping) and ext.get("auc") is not None:
            ext_name = str(ext.get("data") or "external")
            metrics.append(Metric("auc", float(ext["auc"]), ext_name, "external", n=_opt_int(ext.get("n")),
                                  positives=_opt_int(ext.get("positives")), ci=_ci(ext.get("auc_ci"))))
            if not any(s.name == ext_name for s in data):
                data.append(DataSource(name=ext_name, source=ext_name, layout=ext_name.lower(), role=EXTERNAL,
                                       n=_opt_int(ext.get("n")), licences=_licences(ext_name)))
    train_config = dict(d.get("train_config") or {})
    command = d.get("command") or train_config.get("command")
    best_epoch = d.get("best_epoch", m.get("best_epoch"))
    training = Training(
        epochs=_opt_int(d.get("epochs")), best_epoch=_opt_int(best_epoch),
        wall_time_s=_opt_float(d.get("wall_time_s")), loss=d.get("loss") or train_config.get("loss"),
        optimizer=d.get("optimizer") or train_config.get("optimizer"), config=train_config,
        init_from=d.get("init_from"), recipe=d.get("recipe"),
    )
    provenance = Provenance(command=command, versions=dict(d.get("versions") or {}), device=d.get("device"),
                            created=d.get("created"), sha256=d.get("sha256"),
                            file_size_bytes=_opt_int(d.get("file_size_bytes")), dtype=d.get("dtype"))
    known = {"name", "task", "domain", "arch", "encoder", "init", "classes", "target", "multilabel", "model",
             "preprocessing", "data", "split", "metrics", "history", "train_config", "command", "versions", "device",
             "created", "sha256", "file_size_bytes", "dtype", "epochs", "best_epoch", "wall_time_s", "loss",
             "optimizer", "init_from", "recipe", "licences", "notes", "warnings", "path", "fold", "uses_metadata"}
    extra = {k: v for k, v in d.items() if k not in known}
    if "train_time_s" in extra:
        extra["train_time_s"] = float(extra["train_time_s"])
    prep = dict(d.get("preprocessing") or {})
    if task == "segmentation":
        prep.setdefault("center_crop", False)
        prep.setdefault("channels", int((d.get("model") or {}).get("in_channels", 3)))
    model = dict(d.get("model") or {})
    classes = d.get("classes")
    if classes is None and task == "segmentation":
        classes = ["foreground"] if int(model.get("classes", 1)) == 1 else [f"class{i}" for i in range(int(model["classes"]))]
    return ModelCard(
        name=name, task=task, domain=str(d.get("domain") or ""), arch=str(d.get("arch") or model.get("arch") or ""),
        encoder=str(d.get("encoder") or model.get("encoder") or ""), init=str(d.get("init") or "random"),
        classes=tuple(str(c) for c in classes or ()), target=d.get("target"),
        multilabel=bool(d.get("multilabel", False)), model=model, preprocessing=Preprocessing.from_dict(prep, model),
        data=tuple(data), split=split, metrics=tuple(metrics), history=tuple(dict(r) for r in d.get("history") or ()),
        training=training, provenance=provenance, extra=extra, notes=str(d.get("notes") or ""),
        warnings=tuple(str(w) for w in d.get("warnings") or ()), path=path,
    )


def metric_rows(card: ModelCard) -> list[dict[str, Any]]:
    """The card's metrics as table rows (the Models page and ``lesion`` print them)."""
    return [{"metric": m.name, "label": m.label, "value": m.value, "data": m.data, "split": m.split, "n": m.n,
             "positives": m.positives, "ci_low": m.ci[0] if m.ci else None, "ci_high": m.ci[1] if m.ci else None}
            for m in card.metrics]


def data_sources(specs: Sequence[tuple[Any, str, Mapping[str, Any]]]) -> tuple[DataSource, ...]:
    """Data sources of loaded data sets: ``[(dataset, role, counts), …]`` with counts ``n_train`` / ``n_val`` / ``n``."""
    out = []
    for ds, role, counts in specs:
        out.append(DataSource(name=str(ds.name), source=str(counts.get("source") or getattr(ds, "spec", "") or ds.name),
                              layout=str(getattr(ds, "layout", "")), synthetic=bool(getattr(ds, "synthetic", False)),
                              role=role, n_train=_opt_int(counts.get("n_train")), n_val=_opt_int(counts.get("n_val")),
                              n=_opt_int(counts.get("n")), licences=tuple(licences_of(ds))))
    return tuple(out)
