"""Tables and curves from model cards: seed 004's comparison table and per-epoch training curves.

Pure functions over card dicts (as returned by :func:`lesion.weights.list_weights`), so the Models page only
renders what these return.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd


def _last(history: list[Mapping[str, Any]], key: str) -> float | None:
    for row in reversed(history or []):
        if row.get(key) is not None:
            return float(row[key])
    return None


def _best_row(card: Mapping[str, Any]) -> Mapping[str, Any]:
    """The history row of the kept (best-by-validation) epoch, or the last row."""
    history = card.get("history") or []
    best = card.get("best_epoch")
    for row in history:
        if best is not None and row.get("epoch") == best:
            return row
    return history[-1] if history else {}


def comparison_table(cards: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model: architecture, data, epochs, time, train/val loss and metric, external metrics.

    Columns follow seed 004's table (train/val metric and loss, time, epochs), plus the external
    validation (e.g. PH2) where the card has one. Metric columns are IoU and Dice for segmentation and ROC-AUC
    for classification; missing values are NaN.
    """
    rows = []
    for card in cards:
        metrics = card.get("metrics") or {}
        val = metrics.get("val") or {}
        best = _best_row(card)
        row = {
            "model": card.get("name"),
            "task": card.get("task"),
            "domain": card.get("domain"),
            "arch": card.get("arch"),
            "encoder": card.get("encoder"),
            "init": card.get("init"),
            "loss": card.get("loss"),
            "epochs": card.get("epochs"),
            "time_min": round(float(card["wall_time_s"]) / 60.0, 1) if card.get("wall_time_s") else None,
            "device": card.get("device"),
            "train_loss": best.get("train_loss"),
            "val_loss": best.get("val_loss"),
            "train_iou": best.get("train_iou"),
            "val_iou": val.get("iou", best.get("val_iou")),
            "val_dice": val.get("dice", best.get("val_dice")),
            "val_auc": val.get("auc", metrics.get("val_auc", metrics.get("val_auc_mean", best.get("val_auc")))),
        }
        for ext_name, ext in (metrics.get("external") or {}).items():
            if isinstance(ext, Mapping):
                for k in ("iou", "dice", "auc"):
                    if k in ext:
                        row[f"{ext_name}_{k}"] = ext[k]
        rows.append(row)
    df = pd.DataFrame(rows)
    # Drop columns no model fills (e.g. AUC for a segmentation-only list).
    return df.dropna(axis=1, how="all") if len(df) else df


def history_frame(cards: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Long table of per-epoch values: columns ``model, epoch, split ('train'|'val'), metric, value``.

    History rows are dicts such as ``{"epoch": 3, "train_loss": …, "val_loss": …, "val_iou": …}``; a key
    ``<split>_<metric>`` becomes one long row.
    """
    rows = []
    for card in cards:
        for h in card.get("history") or []:
            epoch = h.get("epoch")
            for key, value in h.items():
                if "_" not in key or value is None or key == "epoch":
                    continue
                split, metric = key.split("_", 1)
                if split not in ("train", "val") or not isinstance(value, (int, float)):
                    continue
                rows.append({"model": card.get("name"), "epoch": epoch, "split": split, "metric": metric,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["model", "epoch", "split", "metric", "value"])
