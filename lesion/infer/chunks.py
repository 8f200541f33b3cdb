"""Predicting a data set in parts: only the images a page shows, and a run that can stop with what is done kept.

:func:`lesion.infer.engine.predict` caches one file per member and **list of images**. A page that scores the
held-out images only passes those records; cutting them into fixed parts (:func:`parts`) makes each part its
own cache entry inside the data set's cache folder (:class:`DataPart` keeps the data set's fingerprint), so a run
that is stopped after 3 of 10 parts finds those 3 in the cache next time. The parts' per-view logits are merged
once at the end (:func:`concat_results`) by the one merge, so a ``rank`` merge ranks over all images, not per part.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lesion.errors import DataError
from lesion.infer.ensemble import merge_predictions
from lesion.infer.results import PredictionResult

#: Images per cached part (a stopped run loses at most the part in progress).
PART_SIZE = 128


@dataclass(frozen=True)
class DataPart:
    """Some records of a data set, cached in that data set's folder (its ``fingerprint``).

    Attributes:
        records: the part's records, in data-set order.
        parent: the data set's :meth:`~lesion.data.records.Dataset.fingerprint` (names the cache folder).
    """

    records: tuple
    parent: str

    def fingerprint(self) -> str:
        return self.parent

    def __len__(self) -> int:
        return len(self.records)


def parts(records: Sequence, fingerprint: str, size: int = PART_SIZE) -> list[DataPart]:
    """``records`` cut into parts of ``size`` images (the last may be shorter), each cached under ``fingerprint``.

    Part boundaries depend only on the records' order and ``size``, so the same subset gives the same parts (and
    cache entries) on every run."""
    if size < 1:
        raise DataError(f"A part holds at least one image, got {size}.")
    recs = list(records)
    return [DataPart(tuple(recs[i:i + size]), fingerprint) for i in range(0, len(recs), size)]


def concat_results(results: Sequence[PredictionResult], merge: str, multilabel: bool = False) -> PredictionResult:
    """One :class:`PredictionResult` from the results of consecutive parts (same members, TTA and classes).

    The members' per-view logits ``[V, N_i, K]`` are joined along the images and merged again with ``merge``
    (:func:`lesion.infer.ensemble.merge_predictions`); ``ms_per_image`` is the images-weighted mean.

    Raises:
        DataError: no result, or results of different members.
    """
    results = list(results)
    if not results:
        raise DataError("Nothing was predicted.")
    if len(results) == 1:
        return results[0]
    names = list(results[0].view_logits or {})
    if any(list(r.view_logits or {}) != names for r in results) or not names:
        raise DataError("The parts were predicted by different members.")
    logits = {n: np.concatenate([r.view_logits[n] for r in results], axis=1) for n in names}
    ids = [i for r in results for i in r.ids]
    n = np.array([len(r.ids) for r in results], dtype=np.float64)
    ms = float((n * np.array([r.ms_per_image for r in results])).sum() / max(n.sum(), 1.0))
    devices = sorted({d.strip() for r in results for d in str(r.device).split(",") if d.strip()})
    device = ", ".join(d for d in devices if d != "cache") or "cache"
    notes = list(dict.fromkeys(x for r in results for x in r.notes))
    first = results[0]
    errors = {k: v for r in results for k, v in r.errors.items()}  # unreadable images of every part stay named
    return merge_predictions(logits, ids, first.classes, multilabel, first.tta, merge, first.tta_merge, device, ms,
                             notes, errors=errors)


def predict_parts(predict_part: Callable[[DataPart, Callable[[int, int], None] | None], PredictionResult],
                  data_parts: Sequence[DataPart], merge: str, multilabel: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> PredictionResult:
    """Run ``predict_part(part, progress)`` on every part in turn (each a cached :func:`predict` call) and join
    them (:func:`concat_results`); ``progress(done, total)`` counts images over all parts."""
    total = sum(len(p) for p in data_parts)
    done, out = 0, []
    for part in data_parts:
        offset = done

        def sub(d: int, _t: int, offset: int = offset) -> None:
            if progress is not None:
                progress(offset + d, total)

        out.append(predict_part(part, sub))
        done += len(part)
        if progress is not None:
            progress(done, total)
    return concat_results(out, merge, multilabel)
