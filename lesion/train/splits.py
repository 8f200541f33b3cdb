"""Leak-free splits and per-epoch resampling (seed 003, "triple-stratified leak-free K-fold").

1. **Remove exact duplicates** (same file bytes) — :func:`drop_duplicates`.
2. **One group in one fold**: all images of a patient / lesion (``Record.group``) stay together.
3. **Balanced target ratio**: each fold has about the data set's positive rate.
   2 and 3 are :class:`sklearn.model_selection.StratifiedGroupKFold` — :func:`stratified_group_folds`.
4. **Balanced images per patient**: a patient with 40 images must not dominate an epoch;
   :func:`epoch_indices` caps the images drawn per group per epoch and downsamples the majority class
   to the minority count (resampled afresh each epoch, so every image is seen over several epochs).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesion.errors import ConfigError, DataError


def file_hash(path: str | Path) -> str:
    """SHA-1 of a file's bytes (hex)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def drop_duplicates(records: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Keep the first record of each set of byte-identical image files.

    Returns:
        ``(kept records, ids of dropped duplicates)``.
    """
    seen: dict[str, str] = {}
    kept, dropped = [], []
    for r in records:
        key = file_hash(r.image_path)
        if key in seen:
            dropped.append(r.id)
        else:
            seen[key] = r.id
            kept.append(r)
    return kept, dropped


def groups_of(records: Sequence[Any]) -> np.ndarray:
    """Group id per record; a record without a group is its own group (keyed by its id)."""
    return np.asarray([(r.group or f"__id__{r.id}") for r in records], dtype=object)


def stratified_group_folds(y: Sequence[int], groups: Sequence[Any], n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index of every sample: groups never cross folds, each fold keeps about the overall class ratio.

    Args:
        y: class labels ``[N]`` (0/1, or class indices).
        groups: group id per sample ``[N]``.
        n_splits: number of folds (>= 2).
        seed: shuffling seed (groups are shuffled before the stratified assignment).

    Returns:
        int ``[N]`` with values in ``0 .. n_splits-1``.

    Raises:
        DataError: fewer groups than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(np.int64).ravel()
    groups = np.asarray(groups, dtype=object).ravel()
    if n_splits < 2:
        raise ConfigError(f"n_splits must be >= 2, got {n_splits}.")
    n_groups = len(set(groups.tolist()))
    if n_groups < n_splits:
        raise DataError(f"{n_groups} patient/lesion groups cannot fill {n_splits} folds; use fewer folds.")
    folds = np.full(y.shape[0], -1, dtype=np.int64)
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(sgkf.split(np.zeros(len(y)), y, groups)):
        folds[test] = k
    return folds


def epoch_indices(
    y: np.ndarray,
    groups: np.ndarray,
    rng: np.random.Generator,
    balance: bool = True,
    max_per_group: int = 0,
    majority_ratio: float = 1.0,
) -> np.ndarray:
    """Indices of one training epoch (shuffled).

    Args:
        y: binary labels ``[N]`` (0/1); class indices are accepted but only the per-group cap applies.
        groups: group id per sample ``[N]``.
        rng: numpy generator (one per run, so epochs differ but runs repeat).
        balance: binary ``y`` only: draw ``majority_ratio * n_minority`` majority samples without
            replacement (seed 003: "downsample the majority class to match the minority").
        max_per_group: at most this many images of one group per epoch (0 = no cap).

    Returns:
        int64 indices into the arrays, shuffled.
    """
    y = np.asarray(y).ravel()
    groups = np.asarray(groups, dtype=object).ravel()
    idx = np.arange(y.shape[0])
    if max_per_group > 0:
        keep = []
        by_group: dict[Any, list[int]] = {}
        for i in rng.permutation(idx):
            by_group.setdefault(groups[i], []).append(int(i))
        for members in by_group.values():
            keep.extend(members[:max_per_group])
        idx = np.asarray(sorted(keep), dtype=np.int64)
    labels = np.unique(y[idx])
    if balance and labels.size == 2 and set(labels.tolist()) <= {0, 1}:
        pos, neg = idx[y[idx] == 1], idx[y[idx] == 0]
        minority, majority = (pos, neg) if pos.size <= neg.size else (neg, pos)
        n_major = min(majority.size, max(1, int(round(majority_ratio * minority.size))))
        idx = np.concatenate([minority, rng.choice(majority, size=n_major, replace=False)])
    return rng.permutation(idx).astype(np.int64)


def prior_logit(y: np.ndarray, num_classes: int = 1, eps: float = 1e-4) -> np.ndarray:
    """Initial last-layer bias matching the class prior (seed 003; Lin et al. 2017).

    Binary: ``[log(p / (1 - p))]`` with ``p`` the positive rate; multi-class: ``log(prior_k)`` (softmax of
    these biases equals the priors). ``eps`` keeps an absent class finite.
    """
    y = np.asarray(y).ravel()
    if num_classes == 1:
        p = float(np.clip(y.astype(np.float64).mean(), eps, 1 - eps))
        return np.asarray([np.log(p / (1 - p))], dtype=np.float32)
    counts = np.bincount(y.astype(np.int64), minlength=num_classes).astype(np.float64)
    prior = np.clip(counts / counts.sum(), eps, None)
    return np.log(prior / prior.sum()).astype(np.float32)
