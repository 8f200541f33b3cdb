"""Embedding map: a member's penultimate features over a data set, laid out in 2-D by UMAP.

:func:`embed_records` runs :meth:`TorchMember.embed` (pooled features before the classifier head) on the
member's own preprocessing (:func:`lesion.preprocess.prepare_batch`); :func:`umap_map` reduces them with
umap-learn. Both are cached under ``cache_dir()/analyse/embedding-v<VERSION>/``: features by the images' content
and the checkpoint's sha256 (the member's identity), the map by the features' bytes and the UMAP settings.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.io import read_image
from lesion.data.records import file_content_digest
from lesion.errors import ConfigError
from lesion.paths import atomic_target, cache_dir
from lesion.preprocess import prepare_batch

Progress = Callable[[int, int], None]
VERSION = 1


def _root():
    return cache_dir() / "analyse" / f"embedding-v{VERSION}"


def _save(path, **arrays) -> None:
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def embed_records(member, records: Sequence[Any], batch_size: int = 16, device: str = "cpu",
                  progress: Progress | None = None, cache: bool = True) -> np.ndarray:
    """Penultimate features ``[N, F]`` float32 of every record's image.

    Args:
        member: a member with features (``member.features``; a :class:`~lesion.infer.torch_member.TorchMember`,
            from :func:`lesion.infer.members.build_members`).

    Raises:
        ConfigError: the member has no features (a predictions file, a remote model).
    """
    import torch

    if not getattr(member, "features", False):
        raise ConfigError(f"'{member.name}' has no features to map (a predictions file or a served model has "
                          "none); choose a checkpoint run on this machine.")
    h = hashlib.sha1(f"{member.identity}|{member.prep}".encode())
    for r in records:
        h.update(f"{r.id}|{file_content_digest(r.image_path)}".encode())
    path = _root() / f"features-{h.hexdigest()[:20]}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                return z["features"]
        except Exception:  # a damaged cache file is recomputed
            pass
    member.place(device)
    parts = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        x = torch.from_numpy(prepare_batch([read_image(r.image_path) for r in chunk], member.prep))
        parts.append(np.asarray(member.embed(x), dtype=np.float32))
        if progress is not None:
            progress(min(start + batch_size, len(records)), len(records))
    feats = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    if cache:
        _save(path, features=feats)
    return feats


def umap_map(features: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
             cache: bool = True) -> np.ndarray:
    """2-D UMAP coordinates ``[N, 2]`` of ``features`` ``[N, F]`` (cosine metric; seeded, so repeatable).

    Raises:
        ConfigError: fewer than 4 images (UMAP needs neighbours).
    """
    f = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    if f.shape[0] < 4:
        raise ConfigError(f"An embedding map needs at least 4 images, got {f.shape[0]}.")
    k = int(min(n_neighbors, f.shape[0] - 1))
    h = hashlib.sha1(f.tobytes())
    h.update(f"{f.shape}|{k}|{min_dist}|{seed}".encode())
    path = _root() / f"umap-{h.hexdigest()[:20]}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                return z["xy"]
        except Exception:
            pass
    import umap

    xy = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed,
                   n_components=2).fit_transform(f).astype(np.float32)
    if cache:
        _save(path, xy=xy)
    return xy
