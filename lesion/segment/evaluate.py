"""Score a segmentation method over a data set: one row of metrics per image, and the ``lesion evaluate seg`` CLI.

A *segmenter* is any callable ``image_rgb_uint8 [H, W, 3] -> float probability or bool mask [h, w]``.
Probabilities are thresholded at ``threshold``; an output of another size is resized (nearest) to the image.
Images that cannot be read are skipped with the message in the ``error`` column, so that one corrupt file
does not lose a long run.

CLI::

    lesion evaluate seg --model otsu --data FOLDER [--out results.csv] [--threshold 0.5] [--overwrite]
    lesion evaluate seg --model medsam_lite --prompt otsu|full|network:<checkpoint>|boxes:<file.csv> --data FOLDER

The last stdout line is JSON: ``{"method", "n", "iou", "dice", "iou_ci": [lo, hi]}`` (+ ``"prompt"`` and
``"caveat"``, the training-data note of its card, for MedSAM). A segmenter with ``predict_many`` (MedSAM) is run
``--batch-size`` images at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from lesion.data.io import read_image, read_mask, resize_image, summarise_notes
from lesion.data.records import Dataset
from lesion.data.spec import open_data
from lesion.errors import ConfigError, DataError, LesionError
from lesion.metrics import SEG_METRICS, seg_metrics, summarize
from lesion.paths import atomic_target, check_out_file
from lesion.segment.medsam import MEDSAM_CARD, MedSamSegmenter, parse_prompt, segmenter_for
from lesion.segment.otsu import OtsuSegmenter, preset
from lesion.zoo import load_segmenter

Segmenter = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]

#: Columns of :func:`evaluate_segmentation`'s frame, in order.
COLUMNS: tuple[str, ...] = ("id", "method", *SEG_METRICS, "error")


def to_mask(output: np.ndarray, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Turn a segmenter output into a bool mask of ``shape`` ``(H, W)``.

    Bool outputs are kept; numeric ones are foreground where ``> threshold`` (probabilities in [0, 1]; a
    {0, 1} integer mask works the same). A ``[1, h, w]`` or ``[h, w, 1]`` output is squeezed.
    """
    out = np.asarray(output)
    if out.ndim == 3 and 1 in (out.shape[0], out.shape[-1]):
        out = out.squeeze(0) if out.shape[0] == 1 else out[..., 0]
    if out.ndim != 2:
        raise DataError(f"A segmenter must return a 2-D mask or probability map, got shape {out.shape}.")
    mask = out if out.dtype == np.bool_ else out > threshold
    if mask.shape != tuple(shape):
        mask = resize_image(mask, tuple(shape), interpolation="nearest")
    return mask


def evaluate_segmentation(
    dataset: Dataset,
    segmenter: Segmenter,
    progress: Progress | None = None,
    threshold: float = 0.5,
    method_name: str = "otsu",
    size: int | None = None,
    batch_size: int = 8,
    notes: list | None = None,
):
    """Run ``segmenter`` on every record that has a mask and score it against the mask.

    Args:
        dataset: records with ``mask_path`` (records without a mask are skipped).
        segmenter: image -> probability or bool mask (see the module docstring).
        progress: called as ``progress(done, total)`` after each scored record.
        threshold: probability threshold for float outputs.
        method_name: value of the ``method`` column (concatenate frames of several methods to compare).
        size: if set, the image and mask are resized to ``size x size`` before segmenting and scoring
            (area for the image, nearest for the mask); None scores at the native size.
        batch_size: images per call of ``segmenter.predict_many`` when it has one (MedSAM, the networks);
            ``progress`` is then called once per batch.
        notes: a list that gains the read notes of every image and mask (mask not binary, multi-page file,
            EXIF orientation; :func:`lesion.data.io.summarise_notes` folds them for display).

    Returns:
        pandas DataFrame with :data:`COLUMNS`: one row per record with a mask. A record whose image or
        mask cannot be read (or whose segmenter raised a :class:`LesionError`) has NaN metrics and the
        message in ``error``; ``error`` is None otherwise.

    Raises:
        DataError: the data set has no masks.
    """
    import pandas as pd

    records = [r for r in dataset.records if r.mask_path is not None]
    if not records:
        raise DataError(
            f"Data set '{dataset.name}' has no masks, so a segmentation cannot be scored. "
            "Use a folder with a masks/ sub-folder (or a layout with lesion/lung masks)."
        )
    rows = []
    total = len(records)
    many = getattr(segmenter, "predict_many", None)
    step = max(1, int(batch_size)) if many is not None else 1
    for start in range(0, total, step):
        chunk = records[start:start + step]
        ready = []  # (row, image, truth, box) of the readable records of this chunk
        for rec in chunk:
            row: dict = {"id": rec.id, "method": method_name}
            try:
                image = read_image(rec.image_path, notes=notes)
                truth = read_mask(rec.mask_path, shape=image.shape[:2], notes=notes)
                native = image.shape[:2]
                if size:
                    image = resize_image(image, size, "area")
                    truth = resize_image(truth, size, "nearest")
                box = _record_box(segmenter, rec, native, image.shape[:2])
                if many is None:
                    pred = to_mask(segmenter(image), truth.shape, threshold)
                    row.update(seg_metrics(pred, truth))
                    row["error"] = None
                else:
                    ready.append((row, image, truth, box))
            except LesionError as e:  # unreadable file, mask of the wrong size: record and go on
                row.update({m: float("nan") for m in SEG_METRICS})
                row["error"] = str(e)
            rows.append(row)
        if ready:
            try:
                # one protocol: predict_many(images, boxes) (networks ignore the boxes)
                preds = many([r[1] for r in ready], [r[3] for r in ready])
            except LesionError as e:  # the batch fails as a whole: each of its images gets the message
                preds = [e] * len(ready)
            for (row, _, truth, _), out in zip(ready, preds):
                if isinstance(out, LesionError):
                    row.update({m: float("nan") for m in SEG_METRICS})
                    row["error"] = str(out)
                    continue
                row.update(seg_metrics(to_mask(out, truth.shape, threshold), truth))
                row["error"] = None
        if progress is not None:
            progress(min(start + step, total), total)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _record_box(segmenter, rec, native: tuple[int, int], shape: tuple[int, int]):
    """The box of ``rec`` in a ``boxes``-prompted MedSAM's table (given in the ``native`` image's pixels, scaled to
    ``shape`` when the image was resized), else None.

    Raises:
        DataError: the table has no box for this image.
    """
    if not isinstance(segmenter, MedSamSegmenter) or segmenter.prompt != "boxes":
        return None
    box = segmenter.boxes_for(rec.id) or segmenter.boxes_for(Path(str(rec.image_path)).name)
    if box is None:
        raise DataError(f"No box for image '{rec.id}' in the box file.")
    sy, sx = shape[0] / native[0], shape[1] / native[1]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


#: Names that select LiteMedSAM (with ``prompt``) in :func:`resolve_segmenter`.
MEDSAM_NAMES = ("medsam_lite", "medsam")


def resolve_segmenter(name_or_path: str, domain: str, prompt: str | None = None) -> tuple[str, Segmenter]:
    """``'otsu'`` -> the tuned Otsu preset of ``domain``; ``'medsam_lite'`` -> LiteMedSAM with ``prompt``
    (default ``otsu``; see :func:`lesion.segment.medsam.parse_prompt`); anything else -> a trained model (weights
    name or path).

    Returns:
        ``(display_name, segmenter)``; MedSAM's name records its prompt (``medsam_lite[otsu]``).

    Raises:
        CheckpointError: unknown or unreadable checkpoint. ConfigError: a bad prompt, or a prompt for a method
            that takes none.
    """
    if name_or_path.lower() in MEDSAM_NAMES:
        seg = segmenter_for(parse_prompt(prompt or "otsu"), domain=domain)
        return seg.name, seg
    if prompt:
        raise ConfigError(f"--prompt is for --model medsam_lite only, not '{name_or_path}'.")
    if name_or_path.lower() == "otsu":
        return "otsu", OtsuSegmenter(preset(domain))
    seg = load_segmenter(name_or_path)
    name = getattr(seg, "name", None) or Path(str(name_or_path)).stem
    return str(name), seg


def medsam_caveat() -> str:
    """MedSAM's training-data caveat from its card (ISIC is in its training data; what is known of PH2)."""
    return " ".join((*MEDSAM_CARD.data[0].licences[1:], *MEDSAM_CARD.data[1].licences))


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``prog: error: message``) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lesion evaluate seg",
        description="Score a segmentation method (Otsu or a trained model) against the masks of a data set.",
    )
    p.add_argument("--model", required=True,
                   help="'otsu', 'medsam_lite' (LiteMedSAM, see --prompt), a weights name (see weights/) or a checkpoint path")
    p.add_argument("--prompt", default=None,
                   help="MedSAM's box prompt: otsu (box of the Otsu mask, default), full (whole image), "
                        "network:<checkpoint> (box of that network's mask), boxes:<file.csv> (columns image,x0,y0,x1,y1)")
    p.add_argument("--batch-size", type=int, default=8, help="MedSAM images per forward (default 8)")
    p.add_argument("--data", required=True, help="data set folder (any supported layout with masks)")
    p.add_argument("--out", default=None, help="per-image CSV to write (refuses to overwrite without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold for model outputs (default 0.5)")
    p.add_argument("--domain", choices=("derm", "cxr"), default=None, help="override the detected domain (Otsu preset)")
    return p


def check_args(args: argparse.Namespace) -> Path | None:
    """Every option of ``lesion evaluate seg`` checked before a model or an image is read; returns ``--out``.

    Raises:
        ConfigError: a bad value, ``--out`` naming a folder (or inside a file). DataError: an existing ``--out``
            without ``--overwrite``.
    """
    if not 0.0 <= args.threshold <= 1.0:  # also refuses NaN
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}.")
    if getattr(args, "batch_size", 1) < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    medsam = str(args.model).lower() in MEDSAM_NAMES
    if getattr(args, "prompt", None) is not None:
        if not medsam:
            raise ConfigError(f"--prompt is for --model medsam_lite only, not '{args.model}'.")
        args.prompt = str(parse_prompt(args.prompt))  # checked now: the checkpoint or the box file
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_file(out, args.overwrite, exists_error=DataError)
    return out


def _write_csv(df, out: Path) -> None:
    """``df`` as CSV at ``out`` through a temporary file and a rename (never half a file)."""
    with atomic_target(out) as tmp:
        df.to_csv(tmp, index=False)


def main(argv: list[str] | None = None) -> int:
    """``lesion evaluate seg``: per-image CSV + a JSON summary as the last stdout line; a model used on another
    image domain than it was trained for gets a ``lesion: warning:`` line."""
    args = _parser().parse_args(argv)
    out = check_args(args)

    from tqdm import tqdm

    dataset = open_data(args.data)
    for line in dataset.report.lines():
        print(f"lesion: note: {line}", file=sys.stderr)
    if not dataset.has_masks:
        raise DataError(f"Data set at {args.data} has no masks, so a segmentation cannot be scored.")
    name, segmenter = resolve_segmenter(args.model, args.domain or dataset.domain, args.prompt)
    card = getattr(segmenter, "card", None)
    note = card.domain_warning(dataset.domain) if card is not None else None
    if note:
        print(f"lesion: warning: {note}", file=sys.stderr)

    bar = tqdm(total=sum(r.mask_path is not None for r in dataset.records), desc=f"evaluate {name}",
               unit="img", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    read_notes: list = []
    try:
        df = evaluate_segmentation(dataset, segmenter, progress=progress, threshold=args.threshold, method_name=name,
                                   batch_size=args.batch_size, notes=read_notes)
    finally:
        bar.close()
    for line in summarise_notes(read_notes):
        print(f"lesion: note: {line}", file=sys.stderr)

    if out is not None:
        _write_csv(df, out)
        print(f"wrote {len(df)} rows to {out}", file=sys.stderr)
    failed = df["error"].notna()
    if failed.any():
        print(f"{int(failed.sum())} image(s) skipped; see the 'error' column.", file=sys.stderr)
    iou = summarize(df["iou"].to_numpy(dtype=float))
    summary = {
        "method": name,
        "n": iou["n"],
        "iou": iou["mean"],
        "dice": float(np.nanmean(df["dice"].to_numpy(dtype=float))) if iou["n"] else float("nan"),
        "iou_ci": [iou["ci_lo"], iou["ci_hi"]],
    }
    if isinstance(segmenter, MedSamSegmenter):
        summary["prompt"] = str(getattr(segmenter, "spec", segmenter.prompt))
        summary["caveat"] = medsam_caveat()
    # NaN is not valid JSON: an empty result prints null.
    print(json.dumps(_nan_to_none(summary)))
    return 0
