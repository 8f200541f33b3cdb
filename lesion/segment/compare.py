"""Compare segmentation methods over a data set at any probability threshold without running them again.

:func:`evaluate_segmentation` scores one method at one threshold. A page with a threshold slider would have to
re-run every network at each move; instead :func:`threshold_counts` runs a method once and keeps, per image,
the pixel confusion counts at a grid of thresholds (a few integers per image, not the probability maps, so a
data set of thousands of images stays small in memory and in a cache). :func:`metrics_at` turns them into
per-image metrics at any grid threshold, :func:`paired` lines two methods up image by image. A folder of masks
(:class:`~lesion.segment.masks.MaskFolder`) and a fusion (:class:`~lesion.segment.fusion.FusedSegmenter`) answer by
image id; :func:`fusion_counts` scores several fusion rules with each member run once per image.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from lesion.data.io import read_image, read_mask, resize_image
from lesion.data.records import Dataset
from lesion.errors import DataError, LesionError
from lesion.metrics import SEG_METRICS, metrics_from_counts
from lesion.segment.evaluate import to_mask
from lesion.segment.fusion import FusedSegmenter
from lesion.segment.masks import MaskFolder

Progress = Callable[[int, int], None]

#: Probability thresholds at which counts are kept: 0.05 … 0.95 in steps of 0.05.
THRESHOLDS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))


def counts_over_thresholds(output: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """Confusion counts ``[T, 4]`` (tp, fp, fn, tn) of ``output > t`` against ``truth`` for each threshold.

    A bool ``output`` (Otsu) gives the same counts at every threshold.
    """
    truth = np.asarray(truth, dtype=bool)
    out = np.asarray(output)
    n_true = int(truth.sum())
    rows = []
    for t in thresholds:
        pred = to_mask(out, truth.shape, t)
        tp = int(np.count_nonzero(pred & truth))
        n_pred = int(pred.sum())
        fp, fn = n_pred - tp, n_true - tp
        rows.append((tp, fp, fn, truth.size - tp - fp - fn))
    return np.asarray(rows, dtype=np.int64)


def threshold_counts(
    dataset: Dataset,
    segmenter: Callable[[np.ndarray], np.ndarray],
    method: str,
    size: int | None = None,
    progress: Progress | None = None,
    batch_size: int = 8,
):
    """Run ``segmenter`` once over every record with a mask and keep its counts at :data:`THRESHOLDS`.

    Args:
        dataset: records with masks.
        segmenter: image RGB uint8 ``[H, W, 3]`` -> probability ``[H, W]`` in 0..1 or bool mask.
        method: name stored in the ``method`` column.
        size: score at ``size x size`` (image area-resized, mask nearest) instead of the native size.
        progress: ``progress(done, total)`` (once per batch for a batched segmenter).
        batch_size: images per ``segmenter.predict_many(images)`` call when it has one (MedSAM).

    Returns:
        long DataFrame: ``id, method, threshold, tp, fp, fn, tn, error`` (one row per image and threshold;
        an unreadable image has one row with the message in ``error`` and no counts).
    """
    import pandas as pd

    records = [r for r in dataset.records if r.mask_path is not None]
    if not records:
        raise DataError(f"Data set '{dataset.name}' has no masks, so segmentations cannot be scored.")
    frames = []
    thr = np.asarray(THRESHOLDS)

    def failed(rec, e: Exception) -> None:
        frames.append(pd.DataFrame({"id": [rec.id], "method": [method], "threshold": [np.nan],
                                    "tp": [-1], "fp": [-1], "fn": [-1], "tn": [-1], "error": [str(e)]}))

    def scored(rec, output, truth) -> None:
        counts = counts_over_thresholds(output, truth)
        frames.append(pd.DataFrame({"id": rec.id, "method": method, "threshold": thr,
                                    "tp": counts[:, 0], "fp": counts[:, 1], "fn": counts[:, 2],
                                    "tn": counts[:, 3], "error": None}))

    many = getattr(segmenter, "predict_many", None)
    step = max(1, int(batch_size)) if many is not None else 1
    for start in range(0, len(records), step):
        ready = []
        for rec in records[start:start + step]:
            try:
                image = read_image(rec.image_path)
                truth = read_mask(rec.mask_path, shape=image.shape[:2])
                if size:
                    image, truth = resize_image(image, size, "area"), resize_image(truth, size, "nearest")
                if isinstance(segmenter, MaskFolder):  # masks made elsewhere: looked up by id
                    scored(rec, segmenter.mask_for(rec.id, truth.shape), truth)
                elif isinstance(segmenter, FusedSegmenter):  # members may answer by id
                    scored(rec, segmenter.fuse(image, rec.id), truth)
                elif many is None:
                    scored(rec, segmenter(image), truth)
                else:
                    ready.append((rec, image, truth))
            except LesionError as e:
                failed(rec, e)
        if ready:
            try:
                outs = many([r[1] for r in ready])
            except LesionError as e:
                outs = None
                for rec, _, _ in ready:
                    failed(rec, e)
            for (rec, _, truth), out in zip(ready, outs or []):
                scored(rec, out, truth)
        if progress is not None:
            progress(min(start + step, len(records)), len(records))
    return pd.concat(frames, ignore_index=True)


def fusion_counts(
    dataset: Dataset,
    fused: FusedSegmenter,
    rules: Sequence[str],
    names: Sequence[str] | None = None,
    progress: Progress | None = None,
):
    """:func:`threshold_counts` of several fusion rules over the same members, each member run once per image.

    Args:
        fused: the members (its own rule is not used unless it is in ``rules``).
        rules: rules of :data:`lesion.segment.fusion.FUSION_RULES`.
        names: the ``method`` of each rule's rows (default ``fuse:RULE``).

    Returns:
        the long frame of :func:`threshold_counts`, one method per rule; an image a member fails on (unreadable,
        no mask in a folder) has an error row under every rule.
    """
    import pandas as pd

    names = list(names) if names is not None else [f"fuse:{r}" for r in rules]
    if len(names) != len(rules):
        raise DataError(f"{len(rules)} fusion rules but {len(names)} names.")
    records = [r for r in dataset.records if r.mask_path is not None]
    if not records:
        raise DataError(f"Data set '{dataset.name}' has no masks, so segmentations cannot be scored.")
    thr = np.asarray(THRESHOLDS)
    frames = []
    for k, rec in enumerate(records):
        try:
            image = read_image(rec.image_path)
            truth = read_mask(rec.mask_path, shape=image.shape[:2])
            outs = fused.member_outputs(image, rec.id)
            for rule, name in zip(rules, names):
                counts = counts_over_thresholds(fused.fuse_outputs(outs, rule), truth)
                frames.append(pd.DataFrame({"id": rec.id, "method": name, "threshold": thr,
                                            "tp": counts[:, 0], "fp": counts[:, 1], "fn": counts[:, 2],
                                            "tn": counts[:, 3], "error": None}))
        except LesionError as e:
            for name in names:
                frames.append(pd.DataFrame({"id": [rec.id], "method": [name], "threshold": [np.nan],
                                            "tp": [-1], "fp": [-1], "fn": [-1], "tn": [-1], "error": [str(e)]}))
        if progress is not None:
            progress(k + 1, len(records))
    return pd.concat(frames, ignore_index=True)


def nearest_threshold(threshold: float) -> float:
    """The grid threshold closest to ``threshold``."""
    return float(min(THRESHOLDS, key=lambda t: abs(t - threshold)))


def metrics_at(counts, threshold: float = 0.5, empty: float = 1.0):
    """Per-image metrics at the grid threshold nearest to ``threshold``.

    Args:
        counts: frame from :func:`threshold_counts` (several methods may be concatenated).

    Returns:
        DataFrame ``id, method, <SEG_METRICS>, error``: unreadable images keep their row with NaN metrics.
    """
    import pandas as pd

    t = nearest_threshold(threshold)
    ok = counts[np.isclose(counts["threshold"], t)]
    rows = []
    for rec in ok.itertuples(index=False):
        row = {"id": rec.id, "method": rec.method}
        row.update(metrics_from_counts(rec.tp, rec.fp, rec.fn, rec.tn, empty=empty))
        row["error"] = None
        rows.append(row)
    for rec in counts[counts["error"].notna()].itertuples(index=False):
        rows.append({"id": rec.id, "method": rec.method, **{m: np.nan for m in SEG_METRICS}, "error": rec.error})
    return pd.DataFrame(rows, columns=["id", "method", *SEG_METRICS, "error"])


def paired(per_image, method_a: str, method_b: str, metric: str = "iou"):
    """Line up two methods image by image: columns ``id, <method_a>, <method_b>, difference`` (b − a).

    Images where either method has no score are dropped.
    """
    wide = per_image.pivot_table(index="id", columns="method", values=metric, aggfunc="first")
    if method_a not in wide or method_b not in wide:
        missing = [m for m in (method_a, method_b) if m not in wide]
        raise DataError(f"No {metric} scores for {', '.join(missing)}: run those methods first.")
    out = wide[[method_a, method_b]].dropna().reset_index()
    out["difference"] = out[method_b] - out[method_a]
    return out
