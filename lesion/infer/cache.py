"""On-disk prediction cache, as a wrapper around any member: :class:`CachedMember`.

Revisiting a data set with the same members and TTA is instant. Each member's **per-view logits** ``[V, N, K]``
are one ``.npz`` file under ``lesion.paths.dataset_cache_dir(<data set fingerprint>) / "cls_predictions"``,
named by a hash of

* the member's **identity** (:attr:`lesion.infer.members.Member.identity`: the sha256 of its checkpoint, or of
  its state; a remote member adds the server), never a path, size or mtime, so a checkpoint replaced by
  another of the same size and mtime is recomputed;
* the data's **content**: every image's id, the sha1 of its file's bytes (arrays: of their pixels) and its
  metadata (age / sex / site change a multi-task model's answer), so images overwritten under the same
  names are recomputed;
* the TTA name, the preprocessing and the classes.

Logits, not merged probabilities, are stored: any merge rule is computed from them on every call, cheaply.
Per-member files mean that adding one model to an ensemble only runs that model. Files are written
atomically (temporary file + rename); a truncated or corrupt file is recomputed and replaced with a one-line
note. ``lesion evaluate cls --no-cache`` neither reads nor writes the cache; ``lesion cache clear [--dry-run]``
deletes it (review tags are kept) and ``lesion cache info`` says where it is and how large.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.records import file_content_digest
from lesion.infer.members import Batch, Member, Progress
from lesion.infer.results import _Item, as_items
from lesion.infer.tta import TTA
from lesion.paths import atomic_target, cache_dir, dataset_cache_dir

CACHE_VERSION = 3
PREDICTIONS = "cls_predictions"


@dataclass(frozen=True)
class CacheSpec:
    """How :func:`lesion.infer.engine.predict` caches: ``root`` (None: the lesion cache), ``refresh`` (ignore
    and overwrite cached files) and ``warn`` (called with the one-line note of a corrupt file; default
    :func:`warnings.warn`)."""

    root: str | Path | None = None
    refresh: bool = False
    warn: Callable[[str], None] | None = None


def cache_spec(cache: Any) -> CacheSpec | None:
    """The :class:`CacheSpec` of ``predict``'s ``cache`` argument: None / False = no cache, True = the lesion
    cache, a folder = that cache root, or a CacheSpec."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return CacheSpec()
    if isinstance(cache, CacheSpec):
        return cache
    return CacheSpec(root=cache)


def item_digest(it: _Item) -> str:
    """Content of one image: sha1 of its file's bytes, or of an array's shape and pixels."""
    if it.image is not None:
        a = np.ascontiguousarray(it.image)
        return "px:" + hashlib.sha1(f"{a.shape}|{a.dtype}".encode() + a.tobytes()).hexdigest()
    return file_content_digest(it.path)


def items_identity(items: Sequence[_Item]) -> str:
    """The data's content key: ids, image content and metadata of every item."""
    h = hashlib.sha1()
    for it in items:
        meta = json.dumps({k: v for k, v in dict(it.meta or {}).items()}, sort_keys=True, default=str)
        h.update(f"{it.id}|{item_digest(it)}|{meta}\n".encode())
    return h.hexdigest()[:20]


def data_identity(data: Any) -> str:
    """The content key of a data set (or anything :func:`lesion.infer.results.as_items` accepts)."""
    return items_identity(as_items(data))


def member_key(member: Member, data_key: str, tta: str) -> str:
    """Cache key (hex) of one member's view logits on one data set (``data_key``: :func:`items_identity`)."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "name": member.name,
            "identity": member.identity,
            "data": data_key,
            "tta": str(tta),
            "prep": member.prep.to_dict(),
            "classes": list(member.classes),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_folder(fingerprint: str, root: str | Path | None = None) -> Path:
    """Folder of a data set's cached predictions (``root`` overrides the lesion cache, for tests)."""

    base = Path(root) / "datasets" / fingerprint if root is not None else dataset_cache_dir(fingerprint)
    d = base / PREDICTIONS
    d.mkdir(parents=True, exist_ok=True)
    return d


def _read_entry(f: Path, ids: list[str]) -> np.ndarray | None:
    """The view logits ``[V, N, K]`` of one cache file, None when it holds another id list.

    Raises:
        ValueError: the file is truncated, corrupt or holds no finite ``[V, N, K]`` logits.
    """
    try:
        with np.load(f, allow_pickle=False) as z:
            cached_ids, logits = list(z["ids"]), np.asarray(z["logits"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(str(e) or type(e).__name__) from e
    if cached_ids != ids:
        return None
    if logits.ndim != 3 or logits.shape[1] != len(ids) or not np.isfinite(logits).all():
        raise ValueError(f"logits of shape {logits.shape} for {len(ids)} images, or not finite")
    return logits


def _write_entry(f: Path, logits: np.ndarray, ids: list[str]) -> None:
    """Write one cache file atomically (temporary file in the same folder + rename)."""
    with atomic_target(f) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, logits=np.asarray(logits, np.float32), ids=np.asarray(ids))


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


class CachedMember(Member):
    """Any member behind the disk cache: :meth:`predict_all` answers from the cache file of this data and TTA
    when there is one; otherwise the wrapped member computes (batch by batch or all at once) and the result
    is stored (:meth:`computed`). Everything else is the wrapped member's (``inner``)."""

    kind = "cached"

    def __init__(self, inner: Member, data: Any, items: Sequence[_Item], spec: CacheSpec | None = None):
        super().__init__(inner.card, inner.identity, inner.name)
        self.inner, self.spec = inner, spec or CacheSpec()
        self.gradients, self.features, self.uses_metadata = inner.gradients, inner.features, inner.uses_metadata
        fingerprint = getattr(data, "fingerprint", None)
        self._folder_name = fingerprint() if callable(fingerprint) else "items-" + hashlib.sha1(
            "|".join(it.id for it in items).encode()).hexdigest()[:16]
        self._data_key = items_identity(items)
        self._notes: list[str] = []

    @property
    def where(self) -> str:
        return self.inner.where

    def _file(self, tta: TTA) -> Path:
        return cache_folder(self._folder_name, self.spec.root) / f"{member_key(self, self._data_key, tta.name)}.npz"

    def place(self, device: str) -> None:
        self.inner.place(device)
        self.device = self.inner.device

    def predict_all(self, items: Sequence[_Item], tta: TTA, progress: Progress | None = None) -> np.ndarray | None:
        self._notes = []
        f, ids = self._file(tta), [it.id for it in items]
        if f.is_file() and not self.spec.refresh:
            try:
                entry = _read_entry(f, ids)
            except ValueError as e:
                entry = None
                note = f"{self.name}: cache file {f.name} is truncated or corrupt ({e}); recomputing it."
                self._notes.append(note)
                (self.spec.warn or _warn)(note)
            if entry is not None:
                self._notes.append(f"{self.name}: from cache")
                return entry
        z = self.inner.predict_all(items, tta, progress)
        if z is not None:
            self.computed(items, tta, z)
        return z

    def forward_views(self, batch: Batch, tta: TTA) -> np.ndarray:
        return self.inner.forward_views(batch, tta)

    def computed(self, items: Sequence[_Item], tta: TTA, logits: np.ndarray) -> None:
        _write_entry(self._file(tta), logits, [it.id for it in items])

    def notes(self) -> list[str]:
        return list(self._notes) + self.inner.notes()

    def __getattr__(self, attr: str) -> Any:  # module, embed, … of the wrapped member
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)


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
