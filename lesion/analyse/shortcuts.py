"""Shortcut audit: does a model's attention outside the lesion (or outside the lung fields) predict its errors?

For every image (a sample on request) the CAM of the predicted class is computed at the network's input view
(:func:`lesion.explain.agreement.explain_batch`) and its **mass outside the reference mask** taken:
``outside = 1 − sum(heat inside mask) / sum(heat)`` (:func:`lesion.explain.attention.heat_inside`).

Which mask (:func:`mask_source`, the table's ``mask_source`` column):

* dermoscopy: the record's lesion mask (``lesion ground truth``); an image without one is **left out** (no CAM is
  computed) and counted as ``none``, never guessed;
* chest X-ray: the record's lung mask (``lung ground truth``) when the layout has one, else the lung fields the
  lung network predicts (``lung U-Net``, :class:`lesion.segment.lungs.LungFields`, cached on disk); with no lung
  network given, ``none`` (left out, counted).

Values are cached on disk by image + mask content (a predicted mask by its network's sha256), checkpoint and CAM
method; the cache is written as the run goes, so a stopped run keeps what it finished.

:func:`shortcut_verdict` then asks whether ``outside`` ranks wrong predictions above right ones: ROC-AUC with its
bootstrap CI, read by :func:`lesion.metrics.ci_verdict` as supports / contradicts / inconclusive.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.io import read_image, read_mask
from lesion.data.labels import melanoma_column
from lesion.data.records import file_content_digest
from lesion.errors import LesionError
from lesion.explain.agreement import explain_batch
from lesion.explain.attention import heat_inside
from lesion.infer.ensemble import activate
from lesion.metrics import ci_verdict, roc_auc_ci
from lesion.paths import cache_dir, write_atomic

Progress = Callable[[int, int], None]
VERSION = 3
CLAIM = "attention outside the lesion / lung fields predicts wrong predictions"
#: Fewer wrong (or right) predictions than this: no AUC, the verdict is inconclusive and says why.
MIN_CLASS = 5
#: The ``mask_source`` values besides a lung network's (:attr:`lesion.segment.lungs.LungFields.source`).
GT_LESION, GT_LUNGS, NO_MASK = "lesion ground truth", "lung ground truth", "none"
#: Columns of :func:`outside_table`.
COLUMNS = ["id", "outside", "mask_source", "has_mask", "class_index", "prob", "error"]
#: Seconds between two writes of the on-disk cache during a run (and always at its end).
_WRITE_EVERY_S = 2.0


def outside_mass(heat: np.ndarray, mask: np.ndarray | None) -> float:
    """Share of a heatmap's mass outside ``mask`` (NaN without a mask, or for an all-zero map)."""
    if mask is None:
        return float("nan")
    inside = heat_inside(heat, mask)
    return 1.0 - inside if np.isfinite(inside) else float("nan")


def sample_records(records: Sequence[Any], n: int | None, seed: int = 0) -> list:
    """``n`` records drawn without replacement (seeded), in their original order; all when ``n`` is None."""
    records = list(records)
    if n is None or n >= len(records):
        return records
    idx = np.sort(np.random.default_rng(seed).choice(len(records), size=int(n), replace=False))
    return [records[i] for i in idx]


def mask_source(record: Any, domain: str, lungs: Any | None = None) -> str:
    """Which mask a record's CAM is measured against: its own mask (lesion or lungs, by ``domain``), else on a chest
    X-ray the lung network's prediction (``lungs.source``, when ``lungs`` is given), else :data:`NO_MASK`."""
    if record.mask_path is not None:
        return GT_LUNGS if domain == "cxr" else GT_LESION
    if domain == "cxr" and lungs is not None:
        return lungs.source
    return NO_MASK


def region_words(domain: str) -> str:
    """What the mask outlines: ``the lesion`` / ``the lung fields``."""
    return "the lung fields" if domain == "cxr" else "the lesion"


@dataclass
class References:
    """The masks of a data set's images: the rule of :func:`mask_source` and the masks themselves.

    Attributes:
        domain: ``derm`` or ``cxr``.
        lungs: a :class:`lesion.segment.lungs.LungFields` for radiographs without a lung mask (cxr only), or None.
    """

    domain: str
    lungs: Any | None = None

    def source(self, record: Any) -> str:
        return mask_source(record, self.domain, self.lungs)

    def key(self, record: Any) -> str:
        """The content of the mask, for the cache: the mask file's sha1, the lung network's sha256, or ``-``."""
        if record.mask_path is not None:
            return file_content_digest(record.mask_path)
        return "-" if self.source(record) == NO_MASK else f"lungs:{self.lungs.identity}"

    def mask(self, record: Any, image: np.ndarray) -> np.ndarray | None:
        """Bool ``[H, W]`` at the image's size, or None (:data:`NO_MASK`)."""
        if record.mask_path is not None:
            return read_mask(record.mask_path, image.shape[:2])
        if self.source(record) == NO_MASK:
            return None
        return self.lungs.mask(image, record.image_path)

    def counts(self, records: Sequence[Any]) -> dict[str, int]:
        """Images per mask source (in a fixed order: ground truth, network, none; only those present)."""
        out: dict[str, int] = {}
        for r in records:
            s = self.source(r)
            out[s] = out.get(s, 0) + 1
        order = [GT_LESION, GT_LUNGS, getattr(self.lungs, "source", None), NO_MASK]
        return {k: out[k] for k in order if k in out}


def _image_key(r: Any, refs: References, with_meta: bool = False) -> str:
    """Image content | mask content (| the record's metadata, for a model that reads it: age / sex / site change
    its prediction, its map and so the right / wrong verdict)."""
    key = f"{file_content_digest(r.image_path)}|{refs.key(r)}"
    if with_meta:
        meta = json.dumps(sorted((str(k), str(v)) for k, v in dict(r.meta or {}).items()))
        key += "|" + hashlib.sha1(meta.encode()).hexdigest()[:16]
    return key


def _cache_file(identity: str, method: str):
    safe = hashlib.sha1(identity.encode()).hexdigest()[:16]
    return cache_dir() / "analyse" / f"shortcuts-v{VERSION}" / safe / f"{method}.json"


def positive_probability(logits: np.ndarray, card) -> float:
    """The probability a binary target is scored by: the sigmoid of a one-logit head, or the ``mel`` column of a
    seven-class head's softmax; NaN for another multi-class head."""
    p = activate(np.asarray(logits, dtype=np.float64).reshape(1, -1))[0]
    if p.size == 1:
        return float(p[0])
    try:
        return float(p[melanoma_column(list(card.classes or ()))])
    except LesionError:
        return float("nan")


def _row(r: Any, src: str, outside=float("nan"), class_index: int = -1, prob=float("nan"), error: str = "") -> dict:
    return {"id": r.id, "outside": float("nan") if outside is None else outside, "mask_source": src,
            "has_mask": src != NO_MASK, "class_index": int(class_index),
            "prob": float("nan") if prob is None else prob, "error": error}


def outside_table(model, card, records: Sequence[Any], method: str = "gradcam", batch_size: int = 8,
                  identity: str | None = None, progress: Progress | None = None,
                  references: References | None = None):
    """CAM mass outside each record's reference mask, one row per record (:data:`COLUMNS`).

    Args:
        model, card: a loaded classifier (:func:`lesion.zoo.load_model`).
        records: the images to audit (a data set's records, or a sample of them).
        identity: cache key of the weights (default: the loader's verified sha256, else the card's; without one
            nothing is cached).
        references: which mask each image is measured against (default ``References(card.domain)``: the records'
            own masks only).

    Returns:
        pandas DataFrame: ``id``, ``outside`` (0–1; NaN for an all-zero map and for the images left out),
        ``mask_source`` (:func:`mask_source`), ``has_mask`` (False = left out: no CAM computed), ``class_index``
        (the class whose map was measured, -1 when none), ``prob`` (:func:`positive_probability` of the same
        forward pass), ``error`` (an unreadable image or mask: why, else "").
    """
    import pandas as pd

    refs = references or References(card.domain)
    identity = identity or getattr(model, "weights_sha256", None) or getattr(card, "sha256", None)
    path = _cache_file(str(identity), method) if identity else None
    store: dict[str, list] = {}
    if path is not None and path.is_file():
        try:
            store = json.loads(path.read_text())
        except (ValueError, OSError):
            store = {}
    rows: dict[str, dict] = {}
    todo = []
    with_meta = bool(getattr(card, "uses_metadata", False))
    for r in records:
        src = refs.source(r)
        if src == NO_MASK:
            rows[r.id] = _row(r, src)
            continue
        hit = store.get(_image_key(r, refs, with_meta))
        if hit is not None:
            rows[r.id] = _row(r, src, hit[0], hit[1], hit[2])
        else:
            todo.append(r)
    done = len(records) - len(todo)
    last_write, dirty = float("-inf"), False  # the first batch is written at once, then every few seconds
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        good, images, masks = [], [], []
        for r in chunk:
            try:
                im = read_image(r.image_path)
                masks.append(refs.mask(r, im))
                images.append(im)
                good.append(r)
            except LesionError as e:
                rows[r.id] = _row(r, refs.source(r), error=str(e))
        if good:
            out = explain_batch(model, card, images, masks, [dict(r.meta or {}) for r in good], (method,))
            for r, o in zip(good, out):
                v = outside_mass(o["heat"], o["mask"])
                p = positive_probability(o["logits"], card)
                rows[r.id] = _row(r, refs.source(r), v, int(o["class_index"]), p)
                store[_image_key(r, refs, with_meta)] = [v if np.isfinite(v) else None, int(o["class_index"]),
                                              p if np.isfinite(p) else None]
            dirty = True
        if path is not None and dirty and time.monotonic() - last_write >= _WRITE_EVERY_S:
            write_atomic(path, json.dumps(store))  # before the progress call: a Stop there keeps this batch
            last_write, dirty = time.monotonic(), False
        if progress is not None:
            progress(done + min(start + batch_size, len(todo)), len(records))
    if path is not None and dirty:
        write_atomic(path, json.dumps(store))
    return pd.DataFrame([rows[r.id] for r in records], columns=COLUMNS)


#: What each verdict means, in one line (``{region}``: :func:`region_words`).
VERDICT_MEANING = {
    "supports": "wrong predictions put more of their heat outside {region} than right ones (the whole 95% CI of "
                "the AUROC lies above 0.5): attention outside {region} flags likely errors for this model.",
    "contradicts": "wrong predictions put less of their heat outside {region} than right ones (the whole 95% CI "
                   "lies below 0.5): attention outside {region} does not flag errors here; if anything the reverse.",
    "inconclusive": "the 95% CI of the AUROC holds 0.5, or there are too few wrong or right predictions: this data "
                    "cannot tell whether attention outside {region} predicts errors.",
}


def verdict_meaning(verdict: str, domain: str) -> str:
    """:data:`VERDICT_MEANING` of a verdict for the data set's domain."""
    return VERDICT_MEANING[verdict].format(region=region_words(domain))


def shortcut_verdict(outside, wrong, has_mask=None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Does ``outside`` (``[N]``, NaN = no value) rank wrong predictions (``wrong`` bool ``[N]``) above right ones?

    Args:
        has_mask: bool ``[N]``: False for the images left out for want of a mask; then NaN values *with* a mask
            are all-zero maps (counted as ``n_empty_map``). None: every NaN counts as no mask.

    Returns:
        ``auc, ci, verdict`` (:func:`lesion.metrics.ci_verdict` of the CI against 0.5: supports / contradicts /
        inconclusive :data:`CLAIM`; NaN and inconclusive with fewer than :data:`MIN_CLASS` wrong or right, ``note``
        saying so), ``n`` (images with a value), ``n_wrong``, ``n_no_mask``, ``n_empty_map``,
        ``mean_outside_wrong``, ``mean_outside_right``.
    """
    o = np.asarray(outside, dtype=np.float64).ravel()
    w = np.asarray(wrong).astype(bool).ravel()
    ok = np.isfinite(o)
    masked = np.ones_like(ok) if has_mask is None else np.asarray(has_mask).astype(bool).ravel()
    n_no_mask = int((~ok).sum()) if has_mask is None else int((~masked).sum())
    n_empty = 0 if has_mask is None else int((masked & ~ok).sum())
    n_wrong, n_right = int(w[ok].sum()), int((~w[ok]).sum())
    note = ""
    if min(n_wrong, n_right) < MIN_CLASS:
        auc = lo = hi = float("nan")
        note = (f"only {n_wrong} wrong and {n_right} right predictions with a mask: too few to carry an AUC "
                f"(at least {MIN_CLASS} of each)")
    else:
        auc, lo, hi = roc_auc_ci(w[ok], o[ok], n_boot=n_boot, seed=seed)
    mean = lambda v: float(v.mean()) if v.size else float("nan")  # noqa: E731
    return {"auc": auc, "ci": [lo, hi], "verdict": ci_verdict(lo, hi), "claim": CLAIM, "n": int(ok.sum()),
            "n_wrong": n_wrong, "n_no_mask": n_no_mask, "n_empty_map": n_empty, "note": note,
            "mean_outside_wrong": mean(o[ok & w]), "mean_outside_right": mean(o[ok & ~w])}


def judge(table, labels, threshold: float):
    """:func:`outside_table`'s rows with their correctness at ``threshold``, key columns first.

    Args:
        table: the DataFrame of :func:`outside_table`.
        labels: ``[N]`` 0/1 label per row of ``table`` (NaN = unlabelled).
        threshold: the operating point (a prediction is positive when ``prob >= threshold``).

    Returns:
        DataFrame ``id, outside, correct, prob, label, loss, mask_source, class_index, error, judged``: ``correct``
        is True/False, NaN-free only where ``judged`` (a value, a probability and a label); ``loss`` the binary
        cross-entropy of ``prob`` against the label (probabilities clipped to 1e-7…1 − 1e-7).
    """
    t = table.copy()
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = t["prob"].to_numpy(dtype=np.float64)
    judged = t["has_mask"].to_numpy(bool) & np.isfinite(p) & np.isfinite(y)
    pc = np.clip(np.nan_to_num(p, nan=0.5), 1e-7, 1 - 1e-7)
    t["label"] = y
    t["correct"] = pd_bool(np.where(judged, (p >= threshold) == (y == 1), False), judged)
    t["loss"] = np.where(judged, -(y * np.log(pc) + (1 - y) * np.log(1 - pc)), np.nan)
    t["judged"] = judged
    return t[["id", "outside", "correct", "prob", "label", "loss", "mask_source", "class_index", "error", "judged"]]


def pd_bool(values, valid):
    """A nullable boolean column: ``values`` where ``valid``, missing elsewhere."""
    import pandas as pd

    return pd.array([bool(v) if ok else pd.NA for v, ok in zip(values, valid)], dtype="boolean")
