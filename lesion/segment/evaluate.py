"""Score a segmentation method over a data set: one row of metrics per image, and the ``lesion evaluate seg`` CLI.

A *segmenter* is any callable ``image_rgb_uint8 [H, W, 3] -> float probability or bool mask [h, w]``.
Probabilities are thresholded at ``threshold``; an output of another size is resized (nearest) to the image.
Images that cannot be read are skipped with the message in the ``error`` column, so that one corrupt file
does not lose a long run; when every image fails the command exits 2 with the first reason.

CLI::

    lesion evaluate seg --model otsu --data FOLDER [--out results.csv] [--threshold 0.5] [--overwrite] [--no-verify]
    lesion evaluate seg --model medsam_lite --prompt otsu|full|network:<checkpoint>|boxes:<file.csv> --data FOLDER
    lesion evaluate seg --masks MASKS_FOLDER --data FOLDER      (masks made elsewhere, matched by image id)
    lesion evaluate seg --fuse mean|vote|staple --model otsu --model derm_unet_efficientnet_lite0 \
        --model "medsam_lite[network:derm_unet_efficientnet_lite0]" [--masks MASKS_FOLDER ...] --data FOLDER

Fusion (:mod:`lesion.segment.fusion`): ``--fuse RULE`` makes one method of every ``--model`` and ``--masks`` given
(two or more; each option repeats). A MedSAM member is ``medsam_lite`` (prompt from ``--prompt``) or
``medsam_lite[PROMPT]`` with its own prompt (``otsu``, ``full``, ``network:<checkpoint>``, ``boxes:<file.csv>``), so
several MedSAM prompts can be members of one fusion. ``vote`` and ``staple`` binarise each member at its own
threshold (a network's card, 0.5 otherwise); the fused score is then thresholded at ``--threshold``.

The last stdout line is JSON: ``{"method", "n", "iou", "dice", "iou_ci": [lo, hi]}`` (+ ``"prompt"`` and
``"caveat"``, the training-data note of its card, for MedSAM; + ``"fuse"`` and ``"members"`` for a fusion). A segmenter with ``predict_many`` (MedSAM) is run
``--batch-size`` images at a time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from lesion.cliutil import OneLineParser, json_line
from lesion.data.io import read_image, read_mask, resize_image, summarise_notes
from lesion.data.records import Dataset
from lesion.data.spec import open_data
from lesion.errors import ConfigError, DataError, LesionError
from lesion.metrics import SEG_METRICS, seg_metrics, summarize
from lesion.paths import atomic_target, check_out_file
from lesion.segment.fusion import FUSION_RULES, FusedSegmenter, check_rule
from lesion.segment.masks import MaskFolder
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
                if isinstance(segmenter, MaskFolder):  # masks made elsewhere: looked up by id, not computed
                    row.update(seg_metrics(segmenter.mask_for(rec.id, truth.shape, notes), truth))
                    row["error"] = None
                elif isinstance(segmenter, FusedSegmenter):  # members may answer by id (a folder, a box table)
                    row.update(seg_metrics(to_mask(segmenter.fuse(image, rec.id), truth.shape, threshold), truth))
                    row["error"] = None
                elif many is None:
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


def split_medsam_name(name: str) -> tuple[bool, str | None]:
    """``'medsam_lite'`` -> (True, None); ``'medsam_lite[network:x]'`` -> (True, 'network:x'); else (False, None)."""
    text = str(name or "").strip()
    base, sep, rest = text.partition("[")
    if base.lower() not in MEDSAM_NAMES:
        return False, None
    if not sep:
        return True, None
    if not rest.endswith("]") or not rest[:-1].strip():
        raise ConfigError(f"Write a MedSAM member as medsam_lite[PROMPT], e.g. medsam_lite[otsu], not '{text}'.")
    return True, rest[:-1].strip()


def resolve_segmenter(name_or_path: str, domain: str, prompt: str | None = None,
                      verify: bool = True) -> tuple[str, Segmenter]:
    """``'otsu'`` -> the tuned Otsu preset of ``domain``; ``'medsam_lite'`` -> LiteMedSAM with ``prompt``
    (default ``otsu``; see :func:`lesion.segment.medsam.parse_prompt`); anything else -> a trained model (weights
    name or path), checked against its card's sha256 unless ``verify`` is False (``--no-verify``).

    Returns:
        ``(display_name, segmenter)``; MedSAM's name records its prompt (``medsam_lite[otsu]``).

    Raises:
        CheckpointError: unknown or unreadable checkpoint. ConfigError: a bad prompt, or a prompt for a method
            that takes none.
    """
    medsam, own_prompt = split_medsam_name(name_or_path)
    if medsam:
        if own_prompt is not None and prompt is not None and str(parse_prompt(prompt)) != str(parse_prompt(own_prompt)):
            raise ConfigError(f"'{name_or_path}' names its prompt; --prompt {prompt} contradicts it.")
        spec = parse_prompt(own_prompt or prompt or "otsu")
        network = load_segmenter(spec.arg, device="cpu", verify=verify) if spec.kind == "network" else None
        seg = segmenter_for(spec, domain=domain, network=network)
        return seg.name, seg
    if prompt:
        raise ConfigError(f"--prompt is for --model medsam_lite only, not '{name_or_path}'.")
    if name_or_path.lower() == "otsu":
        return "otsu", OtsuSegmenter(preset(domain))
    seg = load_segmenter(name_or_path, verify=verify)
    name = getattr(seg, "name", None) or Path(str(name_or_path)).stem
    return str(name), seg


def resolve_fusion(rule: str, models: list[str], masks: list[str] | None = None, domain: str = "derm",
                   prompt: str | None = None, verify: bool = True) -> FusedSegmenter:
    """The fusion of ``models`` (names as for :func:`resolve_segmenter`; ``medsam_lite[PROMPT]`` for a MedSAM member
    with its own prompt, bare ``medsam_lite`` takes ``prompt``) and the folders of ``masks`` by ``rule``.

    Raises:
        ConfigError: an unknown rule, fewer than two members, a member named twice. CheckpointError / DataError:
            as :func:`resolve_segmenter` and :class:`MaskFolder`.
    """
    members: dict[str, object] = {}
    for ref in models:
        is_medsam, own = split_medsam_name(ref)
        name, seg = resolve_segmenter(ref, domain, prompt if is_medsam and own is None else None, verify=verify)
        if name in members:
            raise ConfigError(f"Fusion member '{name}' is given twice.")
        members[name] = seg
    for folder in masks or []:
        seg = MaskFolder(folder)
        if seg.name in members:
            raise ConfigError(f"Fusion member '{seg.name}' is given twice.")
        members[seg.name] = seg
    return FusedSegmenter(members, rule)


def medsam_caveat() -> str:
    """MedSAM's training-data caveat from its card (ISIC is in its training data; what is known of PH2)."""
    return " ".join((*MEDSAM_CARD.data[0].licences[1:], *MEDSAM_CARD.data[1].licences))


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="lesion evaluate seg",
        description="Score a segmentation method (Otsu, a trained model, MedSAM, a folder of masks, or a fusion of "
                    "them with --fuse) against the masks of a data set.",
    )
    p.add_argument("--model", default=None, action="append",
                   help="'otsu', 'medsam_lite' (LiteMedSAM, see --prompt) or 'medsam_lite[PROMPT]', a weights name (see "
                        "weights/) or a checkpoint path; repeat it with --fuse to name the members of a fusion")
    p.add_argument("--masks", default=None, action="append",
                   help="instead of --model: a folder of masks made elsewhere (any image format, matched by image id; "
                        "any non-zero pixel is lesion); with --fuse, a member of the fusion (repeatable)")
    p.add_argument("--fuse", default=None, metavar="|".join(FUSION_RULES),
                   help="fuse the --model / --masks members (two or more) into one method: mean (mean probability), "
                        "vote (strict majority of the members' masks), staple (STAPLE EM, Warfield et al. 2004). "
                        "Example: --fuse vote --model otsu --model derm_unet_efficientnet_lite0 "
                        "--model 'medsam_lite[network:derm_unet_efficientnet_lite0]'")
    p.add_argument("--prompt", default=None,
                   help="MedSAM's box prompt: otsu (box of the Otsu mask, default), full (whole image), "
                        "network:<checkpoint> (box of that network's mask), boxes:<file.csv> (columns image,x0,y0,x1,y1)")
    p.add_argument("--batch-size", type=int, default=8, help="MedSAM images per forward (default 8)")
    p.add_argument("--data", required=True, help="data set folder (any supported layout with masks)")
    p.add_argument("--out", default=None, help="per-image CSV to write (refuses to overwrite without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold for model outputs (default 0.5)")
    p.add_argument("--domain", choices=("derm", "cxr"), default=None, help="override the detected domain (Otsu preset)")
    p.add_argument("--no-verify", action="store_true",
                   help="load a checkpoint whose bytes no longer match its card's sha256 (your own edited checkpoint)")
    return p


def check_args(args: argparse.Namespace) -> Path | None:
    """Every option of ``lesion evaluate seg`` checked before a model or an image is read; returns ``--out``.

    Raises:
        ConfigError: a bad value, ``--out`` naming a folder (or inside a file). DataError: an existing ``--out``
            without ``--overwrite``.
    """
    models, masks = _as_list(args.model), _as_list(getattr(args, "masks", None))
    fuse = getattr(args, "fuse", None)
    if fuse is None:
        if len(models) + len(masks) != 1:
            raise ConfigError("Give one method: --model NAME or --masks FOLDER (several only with --fuse RULE).")
        args.model, args.masks = (models or [None])[0], (masks or [None])[0]
    else:
        args.fuse = check_rule(fuse)
        if len(models) + len(masks) < 2:
            raise ConfigError(f"--fuse {args.fuse} needs at least two members (--model / --masks), got "
                              f"{len(models) + len(masks)}.")
        args.model, args.masks = models, masks
    for m in models:  # a MedSAM model's own prompt (medsam_lite[PROMPT]) is checked now, like --prompt
        _, own = split_medsam_name(m)
        if own is not None:
            parse_prompt(own)
    if not 0.0 <= args.threshold <= 1.0:  # also refuses NaN
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}.")
    if getattr(args, "batch_size", 1) < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}.")
    medsam = any(split_medsam_name(m)[0] for m in models)
    if getattr(args, "prompt", None) is not None:
        if not medsam:
            raise ConfigError(f"--prompt is for --model medsam_lite only, not '{', '.join(models) or args.masks}'.")
        args.prompt = str(parse_prompt(args.prompt))  # checked now: the checkpoint or the box file
    out = Path(args.out) if args.out else None
    if out is not None:
        check_out_file(out, args.overwrite, exists_error=DataError)
    return out


def _as_list(value) -> list[str]:
    """An option that may be given once (a string), repeated (a list) or not at all (None) as a list."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _check_folder(segmenter: MaskFolder, dataset: Dataset) -> None:
    """Refuse a folder of masks that matches no image id; note the images it has no mask for."""
    cov = segmenter.coverage(r.id for r in dataset.records if r.mask_path is not None)
    if not cov["matched"]:
        raise DataError(f"No mask in {segmenter.folder} matches an image id of {dataset.name} (e.g. "
                        f"{next(iter(segmenter.masks))} vs {dataset.records[0].id}).")
    if cov["missing"]:
        print(f"lesion: note: {cov['missing']} image(s) have no mask in {segmenter.folder.name}/: their rows "
              "carry the reason in 'error'.", file=sys.stderr)


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
    if args.fuse is not None:
        segmenter = resolve_fusion(args.fuse, args.model, args.masks, args.domain or dataset.domain, args.prompt,
                                   verify=not args.no_verify)
        name = segmenter.name
        for member in segmenter.members.values():
            if isinstance(member, MaskFolder):
                _check_folder(member, dataset)
    elif args.masks is not None:
        segmenter = MaskFolder(args.masks)
        name = segmenter.name
        _check_folder(segmenter, dataset)
    else:
        name, segmenter = resolve_segmenter(args.model, args.domain or dataset.domain, args.prompt,
                                            verify=not args.no_verify)
    parts = list(segmenter.members.items()) if isinstance(segmenter, FusedSegmenter) else [(name, segmenter)]
    for part, member in parts:
        card = getattr(member, "card", None)
        note = card.domain_warning(dataset.domain) if card is not None else None
        if note:
            print(f"lesion: warning: {note}" if len(parts) == 1 else f"lesion: warning: {part}: {note}", file=sys.stderr)

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
    failed = df["error"].notna()
    if len(df) and failed.all():  # nothing was scored: an error with the first reason, and no CSV of NaN rows
        raise DataError(f"All {len(df)} images failed, so nothing was scored; the first: {df['error'].iloc[0]}")

    if out is not None:
        _write_csv(df, out)
        print(f"wrote {len(df)} rows to {out}", file=sys.stderr)
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
    if isinstance(segmenter, FusedSegmenter):
        summary["fuse"] = segmenter.rule
        summary["members"] = list(segmenter.members)
        if any(isinstance(m, MedSamSegmenter) for m in segmenter.members.values()):
            summary["caveat"] = medsam_caveat()
    # NaN is not valid JSON: an empty result prints null.
    print(json_line(summary))
    return 0
