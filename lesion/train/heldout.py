"""Which images a model never trained on: its validation split, rebuilt from its card.

A score over a data set that trained the model is not a test score. The card records the split: for
segmentation and chest X-ray models the held-out image ids themselves (``split.sets[NAME].val_ids``), for the
K-fold classifiers the recipe (method, K, fold, seed, de-duplication) that rebuilds them. Benchmarks and pages
call :func:`held_out` rather than re-deriving the split by hand, and :func:`held_out` says whether the
rebuilt split matches the card's counts.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from lesion.card import ModelCard
from lesion.data.records import Dataset
from lesion.errors import DataError
from lesion.train.cls import ClsTrainConfig, split_records

#: The training-config fields that decide a classifier's K-fold split.
_SPLIT_FIELDS = ("target", "split", "n_splits", "fold", "seed", "dedupe", "max_images")


@dataclass(frozen=True)
class HeldOut:
    """The records of a data set the model was validated on (never trained on)."""

    records: list
    matches_card: bool  # the rebuilt split has the counts the card recorded
    how: str  # one line: where the split came from
    train: list  # the other records of the data set (the K-fold split's training fold)


def held_out(card: ModelCard, dataset: Dataset) -> HeldOut:
    """The validation records of ``dataset`` for the model of ``card``.

    Raises:
        DataError: the card records no split that applies to this data set.
    """
    ids = _listed_ids(card, dataset)
    if ids is not None:
        records = [r for r in dataset.records if r.id in ids]
        return HeldOut(records, len(records) == len(ids), f"held-out ids listed in the card ({len(ids)})",
                       [r for r in dataset.records if r.id not in ids])
    if card.split.n_splits:
        cfg = classifier_split_config(card)
        split = split_records(dataset, cfg)
        same = all(split.info.get(k) == getattr(card.split, k) for k in ("n_train", "n_val", "n_groups_val")
                   if getattr(card.split, k) is not None)
        return HeldOut(split.val, same, f"{card.split.method} fold {cfg.fold} of {cfg.n_splits}, seed {cfg.seed}",
                       split.train)
    raise DataError(f"The card of '{card.name}' records no validation split for '{dataset.name}'.")


def classifier_split_config(card: ModelCard) -> ClsTrainConfig:
    """A :class:`ClsTrainConfig` whose split fields are the card's (the rest are defaults)."""
    tc = dict(card.training.config)
    known = {f.name for f in fields(ClsTrainConfig)}
    values: dict[str, Any] = {k: tc[k] for k in _SPLIT_FIELDS if k in tc and k in known}
    values.setdefault("target", card.target or "melanoma")
    for k in ("n_splits", "fold", "seed"):
        if getattr(card.split, k) is not None:
            values[k] = getattr(card.split, k)
    return replace(ClsTrainConfig(), **values)


def _listed_ids(card: ModelCard, dataset: Dataset) -> set[str] | None:
    sets = card.split.sets
    if not sets:
        return None
    block = sets.get(dataset.name)
    if block is None and len(sets) == 1:
        block = next(iter(sets.values()))
    if block is None or "val_ids" not in block:
        return None
    return set(block["val_ids"])
