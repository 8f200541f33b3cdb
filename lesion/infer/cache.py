"""On-disk prediction cache: revisiting a data set with the same models and TTA is instant.

Each ensemble member's TTA-merged probabilities are one ``.npz`` file under
``lesion.paths.dataset_cache_dir(dataset.fingerprint()) / "cls_predictions"``, named by a hash of

* the member's name and weights identity (weights file path + size + mtime + the card's sha256 when there is a
  file; otherwise a hash of the state dict's bytes),
* the data set fingerprint (layout, root, file list),
* the TTA name and TTA merge mode, and the preprocessing (size, mean/std, crop, CLAHE).

Per-member files mean that adding one model to an ensemble only runs that model. The ensemble merge is
cheap and recomputed on every call.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.infer.engine import PredictionResult, _members, predict
from lesion.infer.ensemble import check_merge, merge_members
from lesion.paths import dataset_cache_dir

CACHE_VERSION = 1


def weights_identity(model: Any, card: ModelCard) -> str:
    """A string that changes whenever the weights change."""
    path = card.path
    if path and Path(path).is_file():
        st = Path(path).stat()
        return f"file:{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}:{card.sha256 or ''}"
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"state:{h.hexdigest()}"


def member_key(model: Any, card: ModelCard, fingerprint: str, tta: str, tta_merge: str) -> str:
    """Cache key (hex) of one member's predictions on one data set."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "name": card.name,
            "weights": weights_identity(model, card),
            "data": fingerprint,
            "tta": tta,
            "tta_merge": tta_merge,
            "prep": card.preprocessing.to_dict(),
            "classes": list(card.classes),
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def cache_folder(fingerprint: str, root: str | Path | None = None) -> Path:
    """Folder of a data set's cached predictions (``root`` overrides the lesion cache, for tests)."""

    base = Path(root) / "datasets" / fingerprint if root is not None else dataset_cache_dir(fingerprint)
    d = base / "cls_predictions"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_predict(
    models: Sequence[tuple[Any, Mapping[str, Any]]],
    dataset: Any,
    tta: str = "d4",
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress=None,
    cache_root: str | Path | None = None,
    refresh: bool = False,
) -> PredictionResult:
    """:func:`lesion.infer.engine.predict` with a per-member disk cache.

    Args:
        dataset: a :class:`lesion.data.records.Dataset` (its fingerprint keys the cache).
        cache_root: cache root instead of ``lesion.paths.cache_dir()``.
        refresh: ignore and overwrite cached files.
        Others: as :func:`predict`.

    Returns:
        the result; ``notes`` says which members came from the cache. ``ms_per_image`` covers this call.
    """
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    t0 = time.perf_counter()
    members = _members(models)  # validates classes, de-duplicates names
    fp = dataset.fingerprint()
    folder = cache_folder(fp, cache_root)
    ids = [r.id for r in dataset.records]
    member_probs: dict[str, np.ndarray] = {}
    todo, notes, device_used = [], [], "cache"
    keys = {}
    for (model, card), m in zip(models, members):
        keys[m.name] = key = member_key(model, card, fp, tta, tta_merge)
        f = folder / f"{key}.npz"
        if f.is_file() and not refresh:
            z = np.load(f, allow_pickle=False)
            if list(z["ids"]) == ids:
                member_probs[m.name] = z["probs"]
                notes.append(f"{m.name}: from cache")
                continue
        todo.append(((model, card.replace(name=m.name)), m.name))
    if todo:
        res = predict([t[0] for t in todo], dataset, tta=tta, merge=merge, tta_merge=tta_merge,
                      batch_size=batch_size, device=device, progress=progress)
        device_used = res.device
        for _, name in todo:
            p = res.member_probs[name]
            np.savez(folder / f"{keys[name]}.npz", probs=p, ids=np.asarray(ids))
            member_probs[name] = p
    elif progress is not None:
        progress(len(ids), len(ids))
    ordered = [member_probs[m.name] for m in members]
    ml = members[0].card.multilabel
    probs = merge_members(ordered, merge, ml) if len(ordered) > 1 else ordered[0]
    classes = members[0].card.classes or tuple(f"class{j}" for j in range(probs.shape[1]))
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(ids))
    return PredictionResult(probs, {m.name: member_probs[m.name] for m in members}, ids, classes, device_used, ms,
                            tta, merge, tta_merge, notes)
