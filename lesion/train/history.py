"""Tables and curves from model cards: seed 004's comparison table and per-epoch training curves.

Pure functions over :class:`~lesion.card.ModelCard` lists (as returned by :func:`lesion.weights.list_weights`),
so the Models page only renders what these return.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from lesion.card import Metric, ModelCard

#: Metrics shown as comparison columns, with their display names (per-label and median rows stay on the card).
COLUMN_METRICS: dict[str, str] = {"iou": "IoU", "dice": "Dice", "auc": "AUC", "auc_mean": "mean AUC",
                                  "mask_dice": "mask Dice"}


def _best_row(card: ModelCard) -> Mapping[str, Any]:
    """The history row of the kept (best-by-validation) epoch, or the last row."""
    best = card.training.best_epoch
    for row in card.history:
        if best is not None and row.get("epoch") == best:
            return row
    return card.history[-1] if card.history else {}


def metric_column(card: ModelCard, m: Metric) -> str:
    """Column name that says what a number is, on which data, and how that data relates to training:
    ``val AUC (HAM10000, held-out fold)``, ``external IoU (PH2, never trained on)``."""
    if m.split == "external":
        relation = "never trained on"
    else:
        relation = "held-out fold" if "fold" in card.split.method else "held-out split"
    return f"{m.split} {COLUMN_METRICS.get(m.name, m.name)} ({m.data}, {relation})"


def comparison_table(cards: Iterable[ModelCard]) -> pd.DataFrame:
    """One row per model: architecture, data, epochs, time, train/val loss of the kept epoch, and its metrics.

    Columns follow seed 004's table (train/val metric and loss, time, epochs); every metric column names its
    data and split (:func:`metric_column`), so a held-out fold and an external set never share a column.
    Missing values are NaN; columns no card fills are dropped.
    """
    rows = []
    for card in cards:
        best = _best_row(card)
        wall = card.training.wall_time_s
        row: dict[str, Any] = {
            "model": card.name,
            "task": card.task,
            "domain": card.domain,
            "arch": card.arch,
            "encoder": card.encoder,
            "init": card.init,
            "loss": card.training.loss,
            "epochs": card.training.epochs,
            "time_min": round(float(wall) / 60.0, 1) if wall else None,
            "device": card.provenance.device,
            "train_loss": best.get("train_loss"),
            "val_loss": best.get("val_loss"),
            "train_iou": best.get("train_iou"),
        }
        for m in card.metrics:
            if m.name in COLUMN_METRICS and m.label is None:
                col = metric_column(card, m)
                if col not in row:
                    row[col] = m.value
                    # the CI beside its number, in the table and its CSV ("" when the card records none)
                    row[f"{col} 95% CI"] = (f"{m.ci[0]:.3f}–{m.ci[1]:.3f}" if m.ci is not None and
                                            all(np.isfinite(m.ci)) else None)
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.dropna(axis=1, how="all") if len(df) else df


def history_frame(cards: Iterable[ModelCard]) -> pd.DataFrame:
    """Long table of per-epoch values: columns ``model, epoch, split ('train'|'val'), metric, value``.

    History rows are dicts such as ``{"epoch": 3, "train_loss": …, "val_loss": …, "val_iou": …}``; a key
    ``<split>_<metric>`` becomes one long row.
    """
    rows = []
    for card in cards:
        for h in card.history:
            epoch = h.get("epoch")
            for key, value in h.items():
                if "_" not in key or value is None or key == "epoch":
                    continue
                split, metric = key.split("_", 1)
                if split not in ("train", "val") or not isinstance(value, (int, float)):
                    continue
                rows.append({"model": card.name, "epoch": epoch, "split": split, "metric": metric,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["model", "epoch", "split", "metric", "value"])
