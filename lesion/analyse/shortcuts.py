"""Shortcut audit: does a model's attention outside the lesion (or outside the lung fields) predict its errors?

For every image (a sample on request) the CAM of the predicted class is computed at the network's input view
(:func:`lesion.explain.agreement.explain_batch`) and its **mass outside the reference mask** taken:
``outside = 1 − sum(heat inside mask) / sum(heat)`` (:func:`lesion.explain.attention.heat_inside`). The mask is the
record's own: the lesion (dermoscopy) or the lung fields (chest X-ray layouts with lung masks); an image without a
mask gets NaN and is counted, never guessed. Values are cached by image + mask content, checkpoint and CAM method.

:func:`shortcut_verdict` then asks whether ``outside`` ranks wrong predictions above right ones: ROC-AUC with its
bootstrap CI, read by :func:`lesion.metrics.ci_verdict` as supports / contradicts / inconclusive.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.io import read_image, read_mask
from lesion.data.records import file_content_digest
from lesion.errors import LesionError
from lesion.explain.agreement import explain_batch
from lesion.explain.attention import heat_inside
from lesion.metrics import ci_verdict, roc_auc_ci
from lesion.paths import cache_dir, write_atomic

Progress = Callable[[int, int], None]
VERSION = 1
CLAIM = "attention outside the lesion / lung fields predicts wrong predictions"
#: Fewer wrong (or right) predictions than this: no AUC, the verdict is inconclusive and says why.
MIN_CLASS = 5


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


def _image_key(r: Any) -> str:
    return f"{file_content_digest(r.image_path)}|{file_content_digest(r.mask_path) if r.mask_path else '-'}"


def _cache_file(identity: str, method: str):
    safe = hashlib.sha1(identity.encode()).hexdigest()[:16]
    return cache_dir() / "analyse" / f"shortcuts-v{VERSION}" / safe / f"{method}.json"


def outside_table(model, card, records: Sequence[Any], method: str = "gradcam", batch_size: int = 8,
                  identity: str | None = None, progress: Progress | None = None):
    """CAM mass outside each record's mask, one row per record: ``id, outside, has_mask, class_index``.

    Args:
        model, card: a loaded classifier (:func:`lesion.zoo.load_model`).
        identity: cache key of the weights (default: the loader's verified sha256, else the card's; without one
            nothing is cached).
    """
    import pandas as pd

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
    for r in records:
        hit = store.get(_image_key(r))
        if hit is not None:
            rows[r.id] = {"id": r.id, "outside": hit[0] if hit[0] is not None else float("nan"),
                          "has_mask": r.mask_path is not None, "class_index": hit[1]}
        else:
            todo.append(r)
    done = len(records) - len(todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        good, images, masks = [], [], []
        for r in chunk:
            try:
                im = read_image(r.image_path)
                masks.append(read_mask(r.mask_path, im.shape[:2]) if r.mask_path else None)
                images.append(im)
                good.append(r)
            except LesionError:
                rows[r.id] = {"id": r.id, "outside": float("nan"), "has_mask": r.mask_path is not None,
                              "class_index": -1}
        if good:
            out = explain_batch(model, card, images, masks, [dict(r.meta or {}) for r in good], (method,))
            for r, o in zip(good, out):
                v = outside_mass(o["heat"], o["mask"])
                rows[r.id] = {"id": r.id, "outside": v, "has_mask": o["mask"] is not None,
                              "class_index": int(o["class_index"])}
                store[_image_key(r)] = [v if np.isfinite(v) else None, int(o["class_index"])]
        if progress is not None:
            progress(done + min(start + batch_size, len(todo)), len(records))
    if path is not None and todo:
        write_atomic(path, json.dumps(store))
    return pd.DataFrame([rows[r.id] for r in records], columns=["id", "outside", "has_mask", "class_index"])


def shortcut_verdict(outside, wrong, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Does ``outside`` (``[N]``, NaN = no mask) rank wrong predictions (``wrong`` bool ``[N]``) above right ones?

    Returns:
        ``auc, ci, verdict`` (:func:`lesion.metrics.ci_verdict` of the CI against 0.5: supports / contradicts /
        inconclusive :data:`CLAIM`; NaN and inconclusive with fewer than :data:`MIN_CLASS` wrong or right, ``note``
        saying so), ``n`` (images with a value), ``n_wrong``, ``n_no_mask``,
        ``mean_outside_wrong``, ``mean_outside_right``.
    """
    o = np.asarray(outside, dtype=np.float64).ravel()
    w = np.asarray(wrong).astype(bool).ravel()
    ok = np.isfinite(o)
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
            "n_wrong": n_wrong, "n_no_mask": int((~ok).sum()), "note": note,
            "mean_outside_wrong": mean(o[ok & w]), "mean_outside_right": mean(o[ok & ~w])}
