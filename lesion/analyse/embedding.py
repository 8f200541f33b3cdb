"""Embedding map: a member's penultimate features over a data set, laid out in 2-D by UMAP (or PCA).

:func:`embed_records` runs :meth:`TorchMember.embed` (pooled features before the classifier head) on the
member's own preprocessing (:func:`lesion.preprocess.prepare_batch`); :func:`umap_map` reduces them with
umap-learn. Both are cached under ``cache_dir()/analyse/embedding-v<VERSION>/``: features by the images' content
and the checkpoint's sha256 (the member's identity), the map by the features' bytes and the UMAP settings.

:func:`project` is the one front door of the 2-D maps (:data:`PROJECTIONS`: ``umap``, or ``pca`` of the
L2-normalised features with scikit-learn, instant where UMAP's numba compiles for a minute on first use); both
look at the features' directions (UMAP's cosine metric, PCA after L2 normalisation). :func:`no_features_reason`
says in one line why a member has no features; :func:`nearest_neighbours` finds an image's closest images in
feature space (cosine); :func:`outcomes` names each image's outcome at a threshold (false positive, …).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lesion.data.io import read_image
from lesion.data.records import file_content_digest
from lesion.errors import ConfigError, unknown_option
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


def no_features_reason(member) -> str | None:
    """None for a member with penultimate features (a PyTorch network run here), else one line saying why it
    has none: a predictions file holds probabilities only, ONNX Runtime and a model server return logits only,
    an imported ONNX / TorchScript network runs outside PyTorch's view of its layers."""
    if getattr(member, "features", False):
        return None
    name = getattr(member, "name", "this member")
    kind = getattr(getattr(member, "inner", member), "kind", "")
    why = {"predictions": "a predictions file holds probabilities only",
           "onnx": "ONNX Runtime returns the logits only",
           "remote": "a model server returns probabilities only",
           "torch": "an imported ONNX / TorchScript network runs as one opaque step, with no layer to read"}.get(
        kind, "it offers no features")
    return (f"'{name}' has no features to map ({why}); choose a PyTorch checkpoint (shipped or imported) run on "
            "this machine.")


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

    reason = no_features_reason(member)
    if reason:
        raise ConfigError(reason)
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


# ------------------------------------------------------------------------------------------------ 2-D maps
#: The 2-D projections :func:`project` offers: name -> what it is, for pickers.
PROJECTIONS = {"pca": "PCA (scikit-learn; instant, linear)",
               "umap": "UMAP (umap-learn, cosine metric; seconds, about a minute on its first use)"}


@dataclass(frozen=True, eq=False)
class Projection:
    """A 2-D map of ``N`` images' features.

    Attributes:
        xy: ``[N, 2]`` float32 coordinates (no units: only neighbourhoods mean something).
        method: a key of :data:`PROJECTIONS`.
        words: the method and its settings in words, for a figure's title ("UMAP (cosine, 15 neighbours, …)").
    """

    xy: np.ndarray
    method: str
    words: str


def _unit_rows(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ConfigError(f"Features must be a [N, F] matrix, got shape {f.shape}.")
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)


def pca_map(features: np.ndarray, seed: int = 0) -> Projection:
    """The first two principal components of the L2-normalised features ``[N, F]`` (scikit-learn's PCA, signs
    fixed by its ``svd_flip``, so repeatable); ``words`` give the share of variance each axis holds.

    Raises:
        ConfigError: fewer than 2 images.
    """
    from sklearn.decomposition import PCA

    f = _unit_rows(features)
    if f.shape[0] < 2:
        raise ConfigError(f"A PCA map needs at least 2 images, got {f.shape[0]}.")
    k = int(min(2, f.shape[0], f.shape[1]))
    pca = PCA(n_components=k, random_state=seed)
    xy = np.zeros((f.shape[0], 2), np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):  # identical rows: no variance, shares are 0 below
        xy[:, :k] = pca.fit_transform(f)
    ratio = np.nan_to_num(np.asarray(pca.explained_variance_ratio_, dtype=np.float64))
    ratio = np.pad(ratio, (0, 2 - k))
    return Projection(xy, "pca", f"PCA of the L2-normalised features (PC1 {ratio[0]:.0%}, PC2 {ratio[1]:.0%} of "
                                 "the variance)")


def project(features: np.ndarray, method: str = "umap", n_neighbors: int = 15, min_dist: float = 0.1,
            seed: int = 0, cache: bool = True) -> Projection:
    """``features`` ``[N, F]`` -> a 2-D :class:`Projection` by ``method`` (:data:`PROJECTIONS`); UMAP's
    ``n_neighbors`` (clipped to N − 1) and ``min_dist`` are said in the words, with the seed.

    Raises:
        ConfigError: unknown method (the options are listed), too few images.
    """
    if method == "pca":
        return pca_map(features, seed=seed)
    if method == "umap":
        n = int(np.asarray(features).shape[0])
        xy = umap_map(features, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, cache=cache)
        k = int(min(n_neighbors, n - 1))
        return Projection(xy, "umap", f"UMAP of the features (cosine metric, {k} neighbours, min_dist {min_dist:g}, "
                                      f"seed {seed}; axes have no units)")
    raise unknown_option("projection", method, list(PROJECTIONS))


def nearest_neighbours(features: np.ndarray, index: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` images closest to image ``index`` in feature space by cosine similarity, the image itself first:
    ``(indices [k + 1], similarities [k + 1])``, most similar first (ties: lower index first).

    Raises:
        ConfigError: ``index`` outside ``0..N-1``.
    """
    f = _unit_rows(features)
    n = f.shape[0]
    if not 0 <= int(index) < n:
        raise ConfigError(f"Image index {index} is outside 0..{n - 1}.")
    sim = f @ f[int(index)]
    sim[int(index)] = np.inf  # the image itself first, even when a duplicate is as close
    order = np.lexsort((np.arange(n), -sim))[: int(min(k, n - 1)) + 1]
    out = sim[order]
    out[0] = 1.0
    return order, out


#: The outcome of one image at a threshold (``prob >= threshold`` is positive), as :func:`outcomes` names it.
OUTCOMES = ("true positive", "true negative", "false positive", "false negative", "unlabelled", "no score")


def outcomes(y, prob, threshold: float) -> np.ndarray:
    """Each image's outcome at ``threshold`` (:data:`OUTCOMES`): labels ``y`` ``[N]`` 0/1 with NaN for
    unlabelled, probabilities ``prob`` ``[N]`` with NaN for an image that could not be scored."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    pos = p >= threshold
    out = np.where(y == 1, np.where(pos, "true positive", "false negative"),
                   np.where(pos, "false positive", "true negative")).astype(object)
    out[~np.isfinite(y)] = "unlabelled"
    out[~np.isfinite(p)] = "no score"
    return out
