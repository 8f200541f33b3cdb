"""Offline export of classifiers to ONNX, optional int8 quantisation, and an onnxruntime runner.

``lesion export MODEL --format onnx --out FILE.onnx [--int8] [--calibrate DATA] …`` writes

* ``FILE.onnx``: the network plus its output activation, input ``input`` float32 ``[batch, C, H, W]``
  (NCHW, RGB scaled as the card says, usually to 0-1, then ``(x - mean) / std``; the batch axis is dynamic,
  ``H x W`` is fixed), outputs
  ``probabilities`` ``[batch, K]`` (sigmoid for one logit or a multi-label head, softmax otherwise) and
  ``logits`` ``[batch, K]``. Multi-task models built with the metadata encoder take a second input
  ``metadata`` float32 ``[batch, D]`` (:func:`lesion.classify.metadata.encode_metadata`; the all-unknown
  vector when nothing is known); their mask outputs are not exported.
* ``FILE.json``: the card. It holds the source model (name and sha256 of its weights), the task, classes and
  preprocessing (the dict from the source card, with ``size`` replaced when ``--size`` is given), the inputs
  and outputs, opset, library versions, size and sha256 of the ``.onnx``, the agreement with PyTorch measured
  right after export, and the quantisation details. A device that cannot import lesion-lab reads
  everything it needs to prepare an image from this card.
* with ``--int8``: ``FILE.int8.onnx`` (or ``--int8-out``) and its own card. Static QDQ quantisation, the
  scales calibrated on ``--calibrate`` images (see :func:`quantize_onnx` for why static and not dynamic).

:class:`OnnxClassifier` runs an exported file on the CPU with the card's preprocessing
(:func:`lesion.preprocess.prepare_batch`, the one preprocessing of every model), so that its
probabilities equal those of the PyTorch model (tests: max |Δp| <= 1e-4 in fp32).

Nothing here downloads anything; torch, onnx and onnxruntime are imported inside the functions.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import lesion
from lesion.card import ModelCard, Preprocessing
from lesion.classify.classifier import as_classifier
from lesion.classify.metadata import AGE_CENTER, AGE_SCALE, SEX_VOCAB, SITE_VOCAB, encode_metadata
from lesion.data.spec import open_data
from lesion.errors import CheckpointError, ConfigError, DataError, LesionError, unknown_option
from lesion.infer.engine import as_items
from lesion.paths import atomic_target, check_file_target, check_writable_folder, file_digest
from lesion.preprocess import geometry, prepare, prepare_batch, to_input
from lesion.train.loop import library_versions, run_provenance
from lesion.train.options import OptionParser, check_value, command_line
from lesion.weights import card_json
from lesion.weights import read_card as read_model_card
from lesion.weights import resolve_weights
from lesion.zoo import CLASSIFIER_TASKS, load_model

FORMATS: tuple[str, ...] = ("onnx",)
#: Tasks of cards that can be exported (segmentation models are refused).
EXPORTABLE_TASKS: tuple[str, ...] = CLASSIFIER_TASKS
DEFAULT_OPSET = 17
#: 13: first opset with per-channel QuantizeLinear (int8); 20: the TorchScript exporter's maximum.
OPSET_RANGE: tuple[int, int] = (13, 20)
MIN_SIZE = 32  # smallest input side accepted by --size (Inception-v3 itself needs >= 75)
INPUT_NAME, META_NAME = "input", "metadata"
OUTPUT_NAMES: tuple[str, str] = ("probabilities", "logits")
#: max |Δ probability| between onnxruntime and PyTorch (fp32) accepted right after export.
EXPORT_ATOL = 1e-4

Progress = Callable[[int, int], None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportConfig:
    """One ``lesion export`` run."""

    model: str  # shipped name in weights/ or a weights path (.safetensors/.pth with its .json card)
    out: str  # FILE.onnx; the card goes to FILE.json
    format: str = "onnx"  # only 'onnx' (FORMATS)
    size: int | None = None  # input side in pixels (None = the card's preprocessing size)
    opset: int = DEFAULT_OPSET  # ONNX opset, within OPSET_RANGE
    int8: bool = False  # also write a statically quantised int8 copy
    int8_out: str | None = None  # its path (None = FILE.int8.onnx)
    calibrate: str | None = None  # data for the int8 scales: a data folder or 'demo:derm'
    calib_images: int = 64  # images used for calibration (seeded sample)
    overwrite: bool = False  # replace existing output files
    seed: int = 0  # sample of calibration / check images
    command: str = ""  # the command line, recorded in the cards' provenance


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")


def card_path(onnx_path: str | Path) -> Path:
    """``FILE.onnx`` -> ``FILE.json``; ``FILE.int8.onnx`` -> ``FILE.int8.json``."""
    return Path(onnx_path).with_suffix(".json")


def default_int8_path(onnx_path: str | Path) -> Path:
    """``FILE.onnx`` -> ``FILE.int8.onnx``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".int8.onnx")


def _check_onnx_path(path: str | Path, what: str = "--out") -> Path:
    p = Path(path)
    if p.suffix.lower() != ".onnx":
        raise ConfigError(f"{what} must name a .onnx file (its card is written beside it as .json), got '{path}'.")
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_targets(targets: Sequence[Path], protected: Sequence[Path], overwrite: bool) -> None:
    """Refuse to write over the source weights/card (ever) or over existing files (unless ``overwrite``)."""
    for i, t in enumerate(targets):
        for p in protected:
            if _same_file(t, p):
                raise ConfigError(f"Refusing to write {t.name} over the source model file {p.name}; choose another --out.")
        for u in targets[:i]:
            if _same_file(t, u):
                raise ConfigError(f"Two outputs would be written to the same file {t.name}; choose distinct names.")
    if not overwrite:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise ConfigError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                              "pass --overwrite to replace.")


def activation_name(num_classes: int, multilabel: bool) -> str:
    """``'sigmoid'`` for one logit or a multi-label head, else ``'softmax'`` (as :func:`lesion.infer.ensemble.activate`)."""
    return "sigmoid" if num_classes == 1 or multilabel else "softmax"


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import timm
    import torch

    return {"lesion_lab": lesion.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


# ---------------------------------------------------------------------------------------------------------
# Loading the source model
# ---------------------------------------------------------------------------------------------------------


def _exportable(card: ModelCard) -> None:
    if card.task not in EXPORTABLE_TASKS:
        raise ConfigError(f"'{card.name}' is a {card.task} model; lesion export handles classifiers only "
                          f"(card task {' or '.join(repr(t) for t in EXPORTABLE_TASKS)}).")


def _export_head(model: Any, sigmoid: bool, with_meta: bool):
    """The traced module: ``forward(x[, meta]) -> (probabilities, logits)``, both ``[B, K]``."""
    import torch
    from torch import nn

    class ExportHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, meta=None):
            logits = self.model(x, meta if with_meta else None).logits
            probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)
            return probs, logits

    return ExportHead().eval()


# ---------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------


def _check_opset(opset: int) -> None:
    lo, hi = OPSET_RANGE
    if not lo <= int(opset) <= hi:
        raise ConfigError(f"--opset must be in {lo}..{hi} (13 for per-channel int8, 20 is the exporter's maximum), "
                          f"got {opset}.")


def _random_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB uint8 images of varied sizes (smooth colour fields plus noise) for the export check."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        base = rng.uniform(0, 255, (3, 3, 3)).astype(np.float32)
        field = cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR)
        img = field + rng.normal(0, 25, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def export_onnx(
    source: str | Path | tuple[Any, ModelCard],
    out: str | Path,
    *,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    log: Log | None = None,
    command: str = "",
    _extra_targets: Sequence[Path] = (),
) -> ModelCard:
    """Export a classifier to ONNX (fp32) and write its card; check it against PyTorch before keeping it.

    Args:
        source: a shipped name / weights path, or an in-memory ``(model, card)`` pair (the card needs
            ``task``, ``classes`` and ``preprocessing``; the model is put in eval mode on the CPU in fp32).
        out: ``FILE.onnx``; the card goes to ``FILE.json``.
        size: input side in pixels (default: the card's preprocessing size).
        opset: ONNX opset (:data:`OPSET_RANGE`).
        overwrite: replace existing files (the source weights and card are never replaced).
        log: receives one line per stage.

    Returns:
        the :class:`~lesion.card.ModelCard` written to ``FILE.json`` (its ``path`` is the ``.onnx`` file).

    Raises:
        ConfigError: bad option (size, opset, out name), existing files, a segmentation model.
        CheckpointError: the source cannot be loaded, or onnxruntime disagrees with PyTorch by more than
            :data:`EXPORT_ATOL` (nothing is written then).
    """
    import torch

    log = log or (lambda s: None)
    out = _check_onnx_path(out)
    _check_opset(opset)
    if size is not None and int(size) < MIN_SIZE:
        raise ConfigError(f"--size must be at least {MIN_SIZE} pixels, got {size}.")
    protected: list[Path] = []
    if isinstance(source, tuple):
        model, card = source
        _exportable(card)
    else:
        wpath, card = resolve_weights(source)  # where the source lives, to protect it even with --overwrite
        _exportable(card)  # refused from the card, before the weights are read
        protected = [wpath, wpath.with_suffix(".json")]
    _check_targets([out, card_path(out), *_extra_targets], protected, overwrite)  # before the slow part
    if not isinstance(source, tuple):
        log(f"loading {source}")
        model, card = load_model(str(source), task=EXPORTABLE_TASKS)
    model = as_classifier(model).float().eval().to("cpu")

    prep = card.preprocessing
    native = prep.size
    if size is not None:
        prep = replace(prep, size=int(size))
    classes = list(card.classes)
    multilabel = card.multilabel
    with_meta = model.uses_metadata
    x = torch.from_numpy(prepare_batch(_random_images(2, seed=1), prep))
    meta = None
    if with_meta:
        meta = torch.from_numpy(np.stack([encode_metadata({}), encode_metadata({"age": 61, "sex": "male",
                                                                              "site": "back"})]))
    try:
        with torch.inference_mode():
            k = int(model(x, meta).logits.shape[-1])
    except RuntimeError as e:
        raise ConfigError(f"'{card.name}' cannot run on {prep.size_text}-px inputs ({str(e).splitlines()[0]}); "
                          "choose a larger --size.") from e
    if classes and len(classes) != k:
        raise CheckpointError(f"The card lists {len(classes)} classes but the model has {k} outputs.")
    act = activation_name(k, multilabel)
    head = _export_head(model, sigmoid=act == "sigmoid", with_meta=with_meta)

    inputs = (x, meta) if with_meta else (x,)
    input_names = [INPUT_NAME, META_NAME] if with_meta else [INPUT_NAME]
    dyn = {n: {0: "batch"} for n in (*input_names, *OUTPUT_NAMES)}
    log(f"exporting to ONNX (opset {opset}, {prep.size_text} px)")
    t0 = time.perf_counter()
    with atomic_target(out) as tmp:  # nothing at ``out`` unless the check below passes
        with warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) is deprecated in favour of torch.export, but that one
            # needs the onnxscript package, which we do not ship; the TorchScript path covers timm CNNs.
            warnings.simplefilter("ignore")
            torch.onnx.export(head, inputs, str(tmp), input_names=input_names, output_names=list(OUTPUT_NAMES),
                              dynamic_axes=dyn, opset_version=int(opset), do_constant_folding=True, dynamo=False)
        import onnx

        onnx.checker.check_model(str(tmp))
        log("checking onnxruntime against PyTorch")
        check = _check_against_torch(tmp, head, prep, with_meta)
        if not check["max_abs_diff_probability"] <= EXPORT_ATOL:
            raise CheckpointError(
                f"The exported model disagrees with PyTorch: max |Δ probability| = "
                f"{check['max_abs_diff_probability']:.2e} > {EXPORT_ATOL:g}; nothing was written.")
    export_s = time.perf_counter() - t0

    source_path = Path(card.path) if card.path else None
    source_sha = sha256_file(source_path) if source_path is not None and source_path.is_file() else None
    c = prep.channels
    inputs_desc = [{
        "name": INPUT_NAME, "shape": ["batch", c, prep.height, prep.width], "dtype": "float32", "layout": "NCHW",
        "description": ("RGB" if c == 3 else "grey") + f" image prepared as 'preprocessing' says (resize "
                       f"'{prep.resize}'" + (", CLAHE" if prep.clahe else "") + f"), scaled '{prep.scale}', then "
                       "(x - mean) / std per channel",
    }]
    if with_meta:
        inputs_desc.append({
            "name": META_NAME, "shape": ["batch", model.meta_dim], "dtype": "float32",
            "description": "patient metadata: one-hot sex over sex_vocab, one-hot site over site_vocab, "
                           "(age - age_center) / age_scale (0 when missing), age-missing flag",
            "sex_vocab": list(SEX_VOCAB), "site_vocab": list(SITE_VOCAB),
            "age_center": AGE_CENTER, "age_scale": AGE_SCALE,
        })
    extra = {
        "format": "onnx",
        "source": {"name": card.name, "file": source_path.name if source_path else None,
                   "sha256": source_sha, "card_sha256": card.sha256,
                   "sha256_matches_card": (source_sha == card.sha256) if source_sha and card.sha256 else None},
        "native_size": native,
        "inputs": inputs_desc,
        "outputs": [{"name": OUTPUT_NAMES[0], "shape": ["batch", k], "activation": act},
                    {"name": OUTPUT_NAMES[1], "shape": ["batch", k], "activation": "none"}],
        "activation": act,
        "opset": int(opset),
        "exporter": "torch.onnx.export (TorchScript tracer, constant folding)",
        "quantization": None,
        "check": check,
        "export_s": round(export_s, 2),
    }
    if size is not None and int(size) != native:
        extra["note"] = f"input size {prep.size_text} px overrides the model's native {native} px"
    export_card = exported_card(card, out, prep, extra, dtype="float32", command=command)
    _write_card(out, export_card)
    log(f"wrote {out} ({export_card.provenance.file_size_bytes / 1e6:.1f} MB, max |Δp| vs PyTorch "
        f"{check['max_abs_diff_probability']:.1e})")
    return export_card


def exported_card(source: ModelCard, out: Path, prep: Preprocessing, extra: Mapping[str, Any],
                  dtype: str, command: str = "") -> ModelCard:
    """The card of an exported file: the source model's card (data, licences, split, every metric with its
    data) with the file's own preprocessing, provenance (versions, time, sha256) and the export facts in
    ``extra``. The per-epoch history stays with the source weights."""
    return source.replace(
        name=out.stem, preprocessing=prep, history=(), path=str(out), extra={**dict(extra), "source_extra": dict(source.extra)},
        provenance=replace(run_provenance(command, "cpu"), versions={**library_versions(), **_versions()},
                           created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), sha256=sha256_file(out),
                           file_size_bytes=out.stat().st_size, dtype=dtype),
    )


def _write_card(onnx_path: Path, card: ModelCard) -> None:
    """Write the card beside ``onnx_path`` atomically (temporary sibling + rename)."""
    with atomic_target(card_path(onnx_path)) as tmp:
        tmp.write_text(card_json(card.replace(path=None)))


def _check_against_torch(path: Path, head: Any, prep: Preprocessing, with_meta: bool) -> dict[str, Any]:
    """Probabilities of onnxruntime vs the traced PyTorch head on a few images, batches of 1 and 3."""
    import torch

    sess = _session(path, threads=1)
    images = _random_images(4, seed=2)
    x = prepare_batch(images, prep)
    metas = [{}, {"age": 35, "sex": "female", "site": "face"}, {"age": 70, "sex": "male"}, {"site": "back"}]
    meta = np.stack([encode_metadata(m) for m in metas]).astype(np.float32)
    diffs = []
    for sl in (slice(0, 1), slice(1, 4)):
        feed = {INPUT_NAME: x[sl]}
        if with_meta:
            feed[META_NAME] = meta[sl]
        p_onnx = sess.run([OUTPUT_NAMES[0]], feed)[0]
        with torch.inference_mode():
            args = (torch.from_numpy(x[sl]), torch.from_numpy(meta[sl])) if with_meta else (torch.from_numpy(x[sl]),)
            p_torch = head(*args)[0].numpy()
        diffs.append(float(np.abs(p_onnx - p_torch).max()))
    return {"max_abs_diff_probability": max(diffs), "images": len(images), "batch_sizes": [1, 3],
            "reference": "PyTorch fp32 on the CPU", "inputs": "synthetic colour fields, preprocessed as the card says"}


# ---------------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------------


def _load_calibration(data: Any, prep: Preprocessing, n: int, seed: int, with_meta: bool,
                      progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Network inputs for ``n`` images of ``data`` (seeded sample): ``(x [n, C, H, W], meta [n, D] | None, name)``."""
    name = "images"
    if isinstance(data, (str, Path)):
        ds = open_data(str(data))
        name = ds.name
        data = ds
    elif hasattr(data, "records"):
        name = getattr(data, "name", name)
    items = as_items(data)
    order = np.random.default_rng(seed).permutation(len(items))[: max(1, int(n))]
    xs, content, metas = [], [], []
    for j, i in enumerate(order):  # one image in memory at a time: prepared (network size) as it is read
        image = items[i].load()
        xs.append(prepare(image, prep))
        content.append(geometry(np.asarray(image).shape[:2], prep).content)
        metas.append(items[i].meta)
        if progress is not None:
            progress(j + 1, len(order))
    x = to_input(np.stack(xs), prep, content)
    meta = None
    if with_meta:
        meta = np.stack([encode_metadata(m or {}) for m in metas]).astype(np.float32)
    return x, meta, name


def _kept_fp32_nodes(model_path: Path) -> list[str]:
    """Nodes left in fp32 by :func:`quantize_onnx`: the first convolution and the nodes producing the outputs."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    outs = {o.name for o in graph.output}
    names = [n.name for n in graph.node if outs & set(n.output)]
    first_conv = next((n.name for n in graph.node if n.op_type == "Conv"), None)
    return names + ([first_conv] if first_conv else [])


def quantize_onnx(
    fp32_path: str | Path,
    out: str | Path,
    calibration: Any,
    *,
    n_images: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Log | None = None,
    command: str = "",
) -> ModelCard:
    """Write an int8 copy of an exported fp32 model (static QDQ quantisation) and its card.

    Choices, measured on efficientnet_lite0 (shipped melanoma model) on this project's 2-core AVX2 CPU:

    * static, not dynamic: dynamic quantisation turns convolutions into ``ConvInteger``, which the CPU
      provider runs without fused kernels: 41 ms per 224-px image against 17 ms in fp32 (2.5x slower).
      Static QDQ (weights int8 per output channel, activations uint8 with ranges calibrated on real images)
      runs in 9 ms and is 3.5x smaller.
    * ``reduce_range`` (7-bit weights): without VNNI, the u8 x s8 kernels can saturate their 16-bit
      intermediate sums; on 400 HAM10000 images the full-range model ranked images with Spearman 0.89
      against fp32, the reduced-range one 0.95, at the same speed.
    * the first convolution stays fp32 (it sees the raw normalised image; Spearman 0.95 -> 0.97), and so do
      the nodes that produce the outputs (classifier layer and activation): logits on 256 levels would
      create ties in the ranking, for no speed gain.
    * MinMax calibration: percentile and entropy calibration ranked worse or no better and take longer;
      more than 64 calibration images changed nothing measurable.

    Args:
        fp32_path: an exported ``.onnx`` with its card (:func:`export_onnx`).
        out: the int8 ``.onnx`` path; its card goes beside it.
        calibration: a data spec (folder or ``demo:derm``), a Dataset, Records, RGB arrays or paths.
        n_images: images for calibration (seeded sample; more images, steadier ranges, slower).
        seed: the sample.
        overwrite: replace existing files.
        progress: ``progress(done, total)`` while reading calibration images.

    Returns:
        the int8 card (its ``path`` is the int8 file).

    Raises:
        ConfigError: out name, existing files; DataError: unreadable calibration data.
    """

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log = log or (lambda s: None)
    fp32_path, out = Path(fp32_path), _check_onnx_path(out, "--int8-out")
    card = read_card(fp32_path)
    _check_targets([out, card_path(out)], [fp32_path, card_path(fp32_path)], overwrite)
    if int(card.extra.get("opset", 0)) < OPSET_RANGE[0]:
        raise ConfigError(f"int8 needs opset >= {OPSET_RANGE[0]}; {fp32_path.name} has opset {card.extra.get('opset')}.")
    prep = card.preprocessing
    with_meta = card.uses_metadata
    n_check = 16
    log(f"reading {n_images} calibration images")
    x, meta, data_name = _load_calibration(calibration, prep, n_images + n_check, seed, with_meta, progress)
    if len(x) > n_images:
        x_cal, x_chk = x[:n_images], x[n_images:]
        m_cal, m_chk = (meta[:n_images], meta[n_images:]) if meta is not None else (None, None)
        check_on = "images not used for calibration"
    else:  # small data: check on the calibration images themselves (says so in the card)
        x_cal, x_chk, m_cal, m_chk = x, x, meta, meta
        check_on = "the calibration images (data too small for a separate check set)"

    class _Reader(CalibrationDataReader):
        def __init__(self, batch: int = 8):
            self.batches = []
            for s in range(0, len(x_cal), batch):
                feed = {INPUT_NAME: x_cal[s : s + batch]}
                if with_meta:
                    feed[META_NAME] = m_cal[s : s + batch]
                self.batches.append(feed)
            self.it = iter(self.batches)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(self.batches)

    log(f"quantising (static QDQ, {len(x_cal)} calibration images)")
    t0 = time.perf_counter()
    with atomic_target(out) as tmp:
        with tempfile.TemporaryDirectory(prefix="lesion-q-") as d:
            pre = Path(d) / "pre.onnx"
            # shape inference + graph optimisation (Conv+BN fusion...) so that the scales are those of the
            # graph onnxruntime will run
            _pre_process(quant_pre_process, Path(fp32_path), pre, Path(d))
            exclude = _kept_fp32_nodes(pre)
            quantize_static(
                str(pre), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
            )
        agreement = _compare_models(fp32_path, tmp, x_chk, m_chk, with_meta)
    extra = {k_: v for k_, v in card.extra.items() if k_ != "check"}
    extra["quantization"] = {
        "method": "static", "format": "QDQ", "weights": "int8 (7-bit range), symmetric, per output channel",
        "activations": "uint8, per tensor", "calibration": "MinMax", "calibration_data": data_name,
        "calibration_images": int(len(x_cal)), "seed": int(seed),
        "kept_fp32": exclude, "tool": "onnxruntime.quantization.quantize_static",
        "from": {"file": fp32_path.name, "sha256": card.sha256},
        "agreement_with_fp32": {**agreement, "on": check_on},
        "quantize_s": round(time.perf_counter() - t0, 2),
    }
    extra.pop("source_extra", None)
    q_card = exported_card(card.replace(extra={}), out, prep, {**extra, "source_extra": card.extra.get("source_extra", {})},
                           dtype="int8", command=command)
    _write_card(out, q_card)
    log(f"wrote {out} ({q_card.provenance.file_size_bytes / 1e6:.1f} MB, max |Δp| vs fp32 "
        f"{agreement['max_abs_diff_probability']:.3f})")
    return q_card


def _pre_process(quant_pre_process, src: Path, dst: Path, work: Path) -> None:
    """onnxruntime's quantisation pre-processing, run inside ``work``: its symbolic shape inference writes
    temporary files into the current folder, which must never be the user's. Models whose symbolic shapes it
    cannot infer (the attention pooling of the multi-task model) are pre-processed without that step."""
    here = os.getcwd()
    os.chdir(work)
    try:
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
        except Exception:  # onnxruntime raises a bare Exception("Incomplete symbolic shape inference")
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    finally:
        os.chdir(here)


def _compare_models(a: Path, b: Path, x: np.ndarray, meta: np.ndarray | None, with_meta: bool) -> dict[str, Any]:
    """Probabilities of two ONNX files on the same inputs: max |Δ| and Spearman rank correlation (first column)."""
    from scipy.stats import spearmanr

    feed = {INPUT_NAME: x}
    if with_meta:
        feed[META_NAME] = meta
    pa = _session(a).run([OUTPUT_NAMES[0]], feed)[0]
    pb = _session(b).run([OUTPUT_NAMES[0]], feed)[0]
    rho = float(spearmanr(pa[:, 0], pb[:, 0]).statistic) if len(pa) > 2 and np.ptp(pa[:, 0]) > 0 else float("nan")
    return {"images": int(len(x)), "max_abs_diff_probability": float(np.abs(pa - pb).max()),
            "mean_abs_diff_probability": float(np.abs(pa - pb).mean()), "spearman_first_class": rho}


# ---------------------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------------------


def read_card(onnx_path: str | Path) -> ModelCard:
    """The card beside an exported ``.onnx`` file (its ``path`` is the ``.onnx`` file).

    Raises:
        CheckpointError: no ``.onnx`` file, no card, or a card that is not an export card.
    """
    p = Path(onnx_path)
    if not p.is_file():
        raise CheckpointError(f"ONNX file not found: {p}")
    cp = card_path(p)
    if not cp.is_file():
        raise CheckpointError(f"{p.name} has no card {cp.name}: it says how to prepare images (size, mean, std).")
    card = read_model_card(cp, p)
    if card.extra.get("format") != "onnx":
        raise CheckpointError(f"Card {cp.name} is not an export card (no 'format: onnx').")
    return card


def _session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # no warnings about unused initialisers on stderr
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise CheckpointError(f"onnxruntime cannot load {Path(path).name}: {str(e).splitlines()[0]}") from e


class OnnxClassifier:
    """Run an exported classifier with onnxruntime on the CPU, preprocessing images as its card says.

    Example::

        clf = OnnxClassifier("derm_cls.onnx")
        probs = clf.predict([rgb_uint8_image, ...])   # [N, K] float32, K = len(clf.classes)

    Args:
        path: the ``.onnx`` file; its card (``.json``) must lie beside it.
        threads: onnxruntime intra-op threads (1, as the app runs inference).
        verify: compare the file's sha256 with the card's (a file changed after export is refused).

    Raises:
        CheckpointError: missing card, changed or unreadable file.
    """

    def __init__(self, path: str | Path, threads: int = 1, verify: bool = True):
        self.path = Path(path)
        self.card = read_card(self.path)
        if verify and self.card.sha256 and sha256_file(self.path) != self.card.sha256:
            raise CheckpointError(f"{self.path.name} does not match the sha256 in its card: the file changed after export.")
        self.prep = self.card.preprocessing
        self.classes: tuple[str, ...] = self.card.classes
        self.uses_metadata = self.card.uses_metadata
        self.threads = int(threads)
        self.session = _session(self.path, threads)
        names = [i.name for i in self.session.get_inputs()]
        if INPUT_NAME not in names or (self.uses_metadata and META_NAME not in names):
            raise CheckpointError(f"{self.path.name} has inputs {names}, not those its card describes.")

    @property
    def name(self) -> str:
        return self.card.name or self.path.stem

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images ``[H, W, 3]`` (any size) -> network input float32 ``[N, C, H, W]``."""
        return prepare_batch(images, self.prep)

    def run(self, x: np.ndarray, meta: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One forward pass on prepared inputs ``x [B, C, H, W]`` float32 (``meta [B, D]``; None = unknown).

        Returns:
            ``{"probabilities": [B, K], "logits": [B, K]}`` float32.
        """
        feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
        if self.uses_metadata:
            if meta is None:
                meta = np.repeat(encode_metadata({})[None], len(x), axis=0)
            feed[META_NAME] = np.ascontiguousarray(meta, dtype=np.float32)
        probs, logits = self.session.run(list(OUTPUT_NAMES), feed)
        return {"probabilities": probs, "logits": logits}

    def predict(self, data: Any, batch_size: int = 32, progress: Progress | None = None,
                output: str = "probabilities") -> np.ndarray:
        """Probabilities ``[N, K]`` float32 for images.

        Args:
            data: RGB uint8 arrays, image paths, Records or a Dataset (records also give their metadata
                to metadata models; arrays and paths count as "metadata unknown").
            batch_size: images per onnxruntime call.
            progress: ``progress(done, total)`` after each batch.
            output: ``'probabilities'`` or ``'logits'``.
        """
        if output not in OUTPUT_NAMES:
            raise unknown_option("output", output, OUTPUT_NAMES)
        if isinstance(data, np.ndarray) and data.ndim == 3:
            data = [data]
        items = as_items(list(data) if isinstance(data, np.ndarray) else data)
        outs = []
        for s in range(0, len(items), max(1, int(batch_size))):
            chunk = items[s : s + batch_size]
            x = self.preprocess([it.load() for it in chunk])
            meta = np.stack([encode_metadata(it.meta or {}) for it in chunk]) if self.uses_metadata else None
            outs.append(self.run(x, meta)[output])
            if progress is not None:
                progress(min(s + batch_size, len(items)), len(items))
        return np.concatenate(outs).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def check_export_config(cfg: ExportConfig) -> tuple[Path, Path]:
    """Every option of an export checked before a model or an image is read; returns ``(out, int8_out)``.

    Raises:
        ConfigError: a bad value or path (one line); DataError: ``--calibrate`` names data without images.
    """
    if cfg.format not in FORMATS:
        raise unknown_option("export format", cfg.format, FORMATS)
    out = _check_onnx_path(cfg.out)
    int8_out = _check_onnx_path(cfg.int8_out, "--int8-out") if cfg.int8_out else default_int8_path(out)
    if cfg.int8_out and not cfg.int8:
        raise ConfigError("--int8-out needs --int8.")
    if cfg.int8 and not cfg.calibrate:
        raise ConfigError("--int8 needs --calibrate DATA: images like those the model will see (a data folder, or "
                          "demo:derm) to measure the activation ranges.")
    if cfg.size is not None:
        check_value("--size", cfg.size, {"min": MIN_SIZE})
    check_value("--opset", cfg.opset, {"min": OPSET_RANGE[0], "max": OPSET_RANGE[1]})
    check_value("--calib-images", cfg.calib_images, {"min": 1})
    check_value("--seed", cfg.seed, {"min": 0})
    targets = [out, card_path(out)] + ([int8_out, card_path(int8_out)] if cfg.int8 else [])
    for t, option in zip(targets, ("--out", "--out", "--int8-out", "--int8-out")):
        check_file_target(t, option)
    need = _export_bytes(cfg.model)  # the fp32 file (and the int8 copy, a quarter of it): writable, room for it
    same = cfg.int8 and int8_out.parent == out.parent
    check_writable_folder(out.parent, "--out", need + (need // 4 if same else 0))
    if cfg.int8 and int8_out.parent != out.parent:
        check_writable_folder(int8_out.parent, "--int8-out", need // 4)
    if cfg.int8:
        calib = open_data(str(cfg.calibrate))  # a missing or empty folder fails here, before the fp32 export
        if not calib.records:
            raise DataError(f"--calibrate {cfg.calibrate} has no images to calibrate the int8 model on.")
    return out, int8_out


def _export_bytes(model: str | Path) -> int:
    """About the size of the fp32 ONNX file of ``model``: twice its fp16 weights file, plus 1 MB of graph (0 when
    the model cannot be found: the export then says why)."""
    try:
        return 2 * resolve_weights(model)[0].stat().st_size + (1 << 20)
    except (LesionError, OSError):
        return 0


def run_export(cfg: ExportConfig, progress: Progress | None = None, log: Log | None = None) -> list[ModelCard]:
    """Export (and quantise) as ``cfg`` says. Returns the written cards (fp32 first).

    Every option is checked first (:func:`check_export_config`). When a later step fails (the int8 step on an
    unreadable calibration image, say), the files this run created are removed again; files that were
    there before the run are never removed.
    """
    out, int8_out = check_export_config(cfg)
    extra = [int8_out, card_path(int8_out)] if cfg.int8 else []
    mine = [p for p in (out, card_path(out), *extra) if not p.exists()]
    try:
        cards = [export_onnx(cfg.model, out, size=cfg.size, opset=cfg.opset, overwrite=cfg.overwrite, log=log,
                             command=cfg.command, _extra_targets=extra)]
        if cfg.int8:
            cards.append(quantize_onnx(out, int8_out, cfg.calibrate, n_images=cfg.calib_images, seed=cfg.seed,
                                       overwrite=cfg.overwrite, progress=progress, log=log, command=cfg.command))
    except BaseException:
        for p in mine:  # only what this run created
            p.unlink(missing_ok=True)
        raise
    return cards


def _parser() -> argparse.ArgumentParser:
    d = ExportConfig(model="", out="")
    p = OptionParser(
        prog="lesion export",
        description="Export a classifier to ONNX (fp32, optionally int8) with its preprocessing in a card.",
    )
    p.add_argument("model", help="shipped name (e.g. derm_cls_efficientnet_lite0_focal) or a weights path")
    p.add_argument("--format", default=d.format, help=f"export format: {', '.join(FORMATS)} (default %(default)s)")
    p.add_argument("--out", required=True, help="FILE.onnx to write; the card goes to FILE.json")
    p.add_argument("--int8", action="store_true", help="also write an int8 copy (static QDQ), needs --calibrate")
    p.add_argument("--int8-out", default=None, help="int8 file (default FILE.int8.onnx)")
    p.add_argument("--calibrate", default=None, help="calibration images: a data folder or demo:derm")
    p.add_argument("--calib-images", type=int, default=d.calib_images, help="calibration images (default %(default)s)")
    p.add_argument("--size", type=int, default=None, help="input side in pixels (default: the model card's)")
    p.add_argument("--opset", type=int, default=d.opset, help=f"ONNX opset {OPSET_RANGE[0]}..{OPSET_RANGE[1]} "
                   "(default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="sample of calibration images")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def main(argv: list[str] | None = None) -> int:
    """``lesion export MODEL --format onnx --out FILE.onnx [--int8 --calibrate DATA] …``; one line per file written."""
    from tqdm import tqdm

    a = _parser().parse_args(argv)
    cfg = ExportConfig(model=a.model, out=a.out, format=a.format, size=a.size, opset=a.opset, int8=a.int8,
                       int8_out=a.int8_out, calibrate=a.calibrate, calib_images=a.calib_images,
                       overwrite=a.overwrite, seed=a.seed,
                       command=command_line("lesion export", list(sys.argv[1:] if argv is None else argv), None))
    bar: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc="calibration images", file=sys.stderr, leave=False))
        bar[0].n = done
        bar[0].refresh()
        if done >= total:
            bar.pop().close()

    try:
        cards = run_export(cfg, progress=progress, log=lambda s: tqdm.write(f"lesion export: {s}", file=sys.stderr))
    finally:
        if bar:
            bar[0].close()
    for c in cards:
        q = c.extra.get("quantization") or {}
        agree = q.get("agreement_with_fp32") or c.extra.get("check") or {}
        print(f"{c.path}  {c.provenance.file_size_bytes / 1e6:.2f} MB  {c.provenance.dtype}  "
              f"{c.preprocessing.size_text} px  max|Δp| {'vs fp32' if q else 'vs PyTorch'} "
              f"{agree.get('max_abs_diff_probability', float('nan')):.2e}")
    return 0


__all__ = ["FORMATS", "ExportConfig", "OnnxClassifier", "export_onnx", "quantize_onnx", "read_card", "run_export",
           "main"]
