"""On-disk prediction cache: revisiting a data set with the same models and TTA is instant.

Each ensemble member's TTA-merged probabilities are one ``.npz`` file under
``lesion.paths.dataset_cache_dir(dataset.fingerprint()) / "cls_predictions"``, named by a hash of

* the member's name and the **content** of its weights: the sha256 of the checkpoint file it was loaded from
  (``model.weights_sha256``, set by :func:`lesion.zoo.load_model`), otherwise a hash of the state dict's bytes;
  never the path, size or mtime, so a checkpoint replaced by another of the same size and mtime is recomputed;
* the data's **content** (:meth:`lesion.data.records.Dataset.content_fingerprint`: the file list plus the sha1
  of every image and mask file, hashed once per process and file version), so images overwritten under the
  same names are recomputed;
* the TTA name and TTA merge mode, and the preprocessing (size, mean/std, crop, CLAHE).

Per-member files mean that adding one model to an ensemble only runs that model. The ensemble merge is
cheap and recomputed on every call. Files are written atomically (temporary file + rename); a truncated or
corrupt file is recomputed and replaced with a one-line note. ``lesion evaluate cls --no-cache`` neither
reads nor writes the cache; ``lesion cache clear [--dry-run]`` deletes it (review tags are kept) and
``lesion cache info`` says where it is and how large.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.infer.engine import PredictionResult, _members, predict
from lesion.infer.ensemble import check_merge, merge_members
from lesion.paths import atomic_target, cache_dir, dataset_cache_dir

CACHE_VERSION = 2
PREDICTIONS = "cls_predictions"


def weights_identity(model: Any, card: ModelCard) -> str:
    """A string that changes whenever the weights' content changes.

    A model from :func:`lesion.zoo.load_model` carries the sha256 of its checkpoint file (verified against the
    card unless ``verify=False``); any other model is keyed by a hash of its state dict's bytes.
    """
    digest = getattr(model, "weights_sha256", None)
    if isinstance(digest, str) and digest:
        return f"sha256:{digest}"
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"state:{h.hexdigest()}"


def data_identity(dataset: Any) -> str:
    """The data's content key: :meth:`Dataset.content_fingerprint` (file list + bytes of every file)."""
    content = getattr(dataset, "content_fingerprint", None)
    return content() if callable(content) else dataset.fingerprint()


def member_key(model: Any, card: ModelCard, fingerprint: str, tta: str, tta_merge: str) -> str:
    """Cache key (hex) of one member's predictions on one data set (``fingerprint``: :func:`data_identity`)."""
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


def _read_entry(f: Path, ids: list[str]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(probabilities, view spread or None)`` of one cache file, None when it holds another id list.

    Raises:
        ValueError: the file is truncated, corrupt or holds no finite ``[N, K]`` probabilities.
    """
    try:
        with np.load(f, allow_pickle=False) as z:
            cached_ids, probs = list(z["ids"]), np.asarray(z["probs"])
            view_std = np.asarray(z["view_std"]) if "view_std" in z.files else None
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(str(e) or type(e).__name__) from e
    if cached_ids != ids:
        return None
    if probs.ndim != 2 or probs.shape[0] != len(ids) or not np.isfinite(probs).all():
        raise ValueError(f"probabilities of shape {probs.shape} for {len(ids)} images, or not finite")
    if view_std is not None and view_std.shape != probs.shape:
        view_std = None
    return probs, view_std


def _write_entry(f: Path, probs: np.ndarray, ids: list[str], view_std: np.ndarray | None = None) -> None:
    """Write one cache file atomically (temporary file in the same folder + rename)."""
    extra = {} if view_std is None else {"view_std": view_std}
    with atomic_target(f) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, probs=probs, ids=np.asarray(ids), **extra)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


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
    warn: Callable[[str], None] | None = None,
) -> PredictionResult:
    """:func:`lesion.infer.engine.predict` with a per-member disk cache.

    Args:
        dataset: a :class:`lesion.data.records.Dataset` (its :meth:`fingerprint` names the folder, its
            :meth:`content_fingerprint` is part of each key).
        cache_root: cache root instead of ``lesion.paths.cache_dir()``.
        refresh: ignore and overwrite cached files.
        warn: called with a one-line note when a cache file is truncated or corrupt (it is recomputed and
            replaced); default :func:`warnings.warn`. The note is also in the result's ``notes``.
        Others: as :func:`predict`.

    Returns:
        the result; ``notes`` says which members came from the cache. ``ms_per_image`` covers this call.

    Raises:
        ModelOutputError: a member output NaN or Inf (nothing is cached).
    """
    warn = warn or _warn
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    t0 = time.perf_counter()
    members = _members(models)  # validates classes, de-duplicates names
    folder = cache_folder(dataset.fingerprint(), cache_root)
    data_key = data_identity(dataset)
    ids = [r.id for r in dataset.records]
    member_probs: dict[str, np.ndarray] = {}
    view_std: dict[str, np.ndarray | None] = {}
    todo, notes, device_used = [], [], "cache"
    keys = {}
    for (model, card), m in zip(models, members):
        keys[m.name] = key = member_key(model, card, data_key, tta, tta_merge)
        f = folder / f"{key}.npz"
        if f.is_file() and not refresh:
            try:
                entry = _read_entry(f, ids)
            except ValueError as e:
                entry = None
                note = f"{m.name}: cache file {f.name} is truncated or corrupt ({e}); recomputing it."
                notes.append(note)
                warn(note)
            if entry is not None:
                member_probs[m.name], view_std[m.name] = entry
                notes.append(f"{m.name}: from cache")
                continue
        todo.append(((model, card.replace(name=m.name)), m.name))
    if todo:
        res = predict([t[0] for t in todo], dataset, tta=tta, merge=merge, tta_merge=tta_merge,
                      batch_size=batch_size, device=device, progress=progress)
        device_used = res.device
        for _, name in todo:
            p = res.member_probs[name]
            v = res.view_std.get(name) if res.view_std else None
            _write_entry(folder / f"{keys[name]}.npz", p, ids, v)
            member_probs[name], view_std[name] = p, v
    elif progress is not None:
        progress(len(ids), len(ids))
    ordered = [member_probs[m.name] for m in members]
    ml = members[0].card.multilabel
    probs = merge_members(ordered, merge, ml) if len(ordered) > 1 else ordered[0]
    classes = members[0].card.classes or tuple(f"class{j}" for j in range(probs.shape[1]))
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(ids))
    spreads = [view_std.get(m.name) for m in members]
    return PredictionResult(probs, {m.name: member_probs[m.name] for m in members}, ids, classes, device_used, ms,
                            tta, merge, tta_merge, notes,
                            view_std=None if any(v is None for v in spreads) else
                            {m.name: v for m, v in zip(members, spreads)})


# ----------------------------------------------------------------------------------------------------------
# lesion cache clear | info
# ----------------------------------------------------------------------------------------------------------
def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else cache_dir()


def prediction_files(root: str | Path | None = None) -> list[Path]:
    """Every file of the prediction cache (``<root>/datasets/*/cls_predictions/*``), temporary ones included."""
    base = _root(root) / "datasets"
    return sorted(p for p in base.glob(f"*/{PREDICTIONS}/*") if p.is_file()) if base.is_dir() else []


def clear_cache(root: str | Path | None = None, dry_run: bool = False) -> tuple[int, int]:
    """Delete the prediction cache (review tags, demo data and mask caches are kept).

    Args:
        root: cache root (default ``lesion.paths.cache_dir()``: ``$LESION_CACHE`` or ``~/.cache/lesion-lab``).
        dry_run: only count what would be deleted.

    Returns:
        ``(files, bytes)`` deleted (or that would be).
    """
    files = prediction_files(root)
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
            if not dry_run:
                f.unlink()
        except FileNotFoundError:  # another process cleared it first
            continue
    if not dry_run:
        for d in {f.parent for f in files}:
            try:
                d.rmdir()
            except OSError:
                pass
    return len(files), total


def cache_info(root: str | Path | None = None) -> dict[str, Any]:
    """Where the cache is and what it holds: ``root``, ``datasets``, ``prediction_files``, ``prediction_bytes``,
    ``tag_stores`` (review tags, never deleted by :func:`clear_cache`) and ``total_bytes`` (everything)."""
    base = _root(root)
    preds = prediction_files(base)
    every = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
    return {
        "root": str(base),
        "datasets": len({p.parent.parent for p in preds}),
        "prediction_files": len(preds),
        "prediction_bytes": sum(p.stat().st_size for p in preds),
        "tag_stores": sum(1 for p in every if p.name == "review_tags.json"),
        "total_bytes": sum(p.stat().st_size for p in every),
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    """``lesion cache clear [--dry-run]`` / ``lesion cache info``."""
    p = argparse.ArgumentParser(prog="lesion cache", description="The prediction cache (per data set, keyed by "
                                "the content of the images and of the weights).")
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("clear", help="delete every cached prediction (review tags are kept)")
    c.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    c.add_argument("--cache-dir", default=None, help="cache root (default $LESION_CACHE or ~/.cache/lesion-lab)")
    i = sub.add_parser("info", help="where the cache is and how large")
    i.add_argument("--cache-dir", default=None, help="cache root (default $LESION_CACHE or ~/.cache/lesion-lab)")
    a = p.parse_args(list(argv) if argv is not None else None)
    if a.action == "clear":
        n, size = clear_cache(a.cache_dir, dry_run=a.dry_run)
        verb = "would delete" if a.dry_run else "deleted"
        print(f"lesion cache: {verb} {n} prediction files ({_mb(size)}) under {_root(a.cache_dir)}; "
              "review tags kept.")
        return 0
    info = cache_info(a.cache_dir)
    print(f"cache root: {info['root']}\n"
          f"predictions: {info['prediction_files']} files, {_mb(info['prediction_bytes'])} "
          f"over {info['datasets']} data sets (lesion cache clear deletes them)\n"
          f"review tag stores: {info['tag_stores']} (kept)\n"
          f"everything: {_mb(info['total_bytes'])}")
    return 0


def clear_main(argv: Sequence[str]) -> int:
    """``lesion cache clear …`` (routed by :mod:`lesion.cli`)."""
    return main(["clear", *argv])


def info_main(argv: Sequence[str]) -> int:
    """``lesion cache info …`` (routed by :mod:`lesion.cli`)."""
    return main(["info", *argv])
