"""What a prediction is, without the engine that makes it: :class:`PredictionResult` and the accepted inputs.

Kept apart from :mod:`lesion.infer.engine` (which needs PyTorch) so that a client of a model server, and the
pages that only show results, import no deep-learning framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lesion.data.io import read_image
from lesion.errors import DataError


@dataclass
class PredictionResult:
    """Predictions of an ensemble over N images.

    Attributes:
        probs: ensemble probabilities ``[N, K]`` (``rank`` merge: scores in (0, 1]).
        member_probs: member name -> TTA-merged probabilities ``[N, K]``.
        ids: image ids ``[N]``.
        classes: class names of the K columns (``("melanoma",)`` for a binary melanoma head).
        device: where the models ran (``"cpu"`` / ``"cuda"``).
        ms_per_image: wall time per image for the whole ensemble with TTA, milliseconds.
        tta, merge, tta_merge: how the views and members were merged.
        view_std: member name -> ``[N, K]`` standard deviation of the probabilities over the TTA views (zeros
            without TTA); the uncertainty a single model shows when the image is flipped or rotated.
        view_logits: member name -> raw logits ``[V, N, K]`` of every view (what was merged).
        errors: image id -> one-line reason for images that could not be read; their rows are NaN (the one rule:
            score the rest, name each bad image, fail only when nothing could be scored).
        multilabel: the heads are independent sigmoids (chest X-ray findings).

    Built in one place only: :func:`lesion.infer.ensemble.merge_predictions`.
    """

    probs: np.ndarray
    member_probs: dict[str, np.ndarray]
    ids: list[str]
    classes: tuple[str, ...]
    device: str
    ms_per_image: float
    tta: str = "none"
    merge: str = "mean_prob"
    tta_merge: str = "mean_prob"
    notes: list[str] = field(default_factory=list)
    view_std: dict[str, np.ndarray] | None = None
    view_logits: dict[str, np.ndarray] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    multilabel: bool = False

    def positive_scores(self) -> np.ndarray:
        """``[N]`` score of the positive class (binary head: the only column)."""
        return self.probs[:, -1] if self.probs.shape[1] == 1 else self.probs.max(axis=1)

    def uncertainty(self, multilabel: bool = False) -> dict[str, np.ndarray]:
        """Per image: ``tta_std`` (the members' mean spread of the positive score over TTA views; NaN when the
        views were not kept, e.g. from an older cache), ``member_std`` (spread of the positive score over the
        ensemble's members; 0 for one member) and ``entropy`` of the ensemble's mean probabilities (nats; binary
        and multi-label heads: of each column's Bernoulli, averaged)."""
        col = self.positive_column()
        members = np.stack([p[:, col] for p in self.member_probs.values()])  # [M, N]
        member_std = members.std(axis=0) if len(members) > 1 else np.zeros(members.shape[1])
        if self.view_std is not None and len(self.view_std) == len(self.member_probs):
            tta_std = np.mean([v[:, col] for v in self.view_std.values()], axis=0)
        else:
            tta_std = np.full(len(self.ids), np.nan)
        p = np.clip(np.asarray(self.probs, np.float64), 1e-12, 1 - 1e-12)
        if p.shape[1] == 1 or multilabel:
            entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean(axis=1)
        else:
            entropy = -(p * np.log(p)).sum(axis=1)
        return {"tta_std": tta_std, "member_std": member_std, "entropy": entropy}

    def positive_column(self) -> int:
        """The column :meth:`positive_scores` reads for binary heads (the only one), else the argmax's."""
        return 0 if self.probs.shape[1] == 1 else int(np.argmax(self.probs.mean(axis=0)))

    def to_frame(self):
        """One row per image: ``id``, ``p_<class>`` per class, ``<member>:p_<class>`` per member, and the
        uncertainty columns ``tta_std``, ``member_std``, ``entropy`` (:meth:`uncertainty`)."""
        import pandas as pd

        df = pd.DataFrame({"id": self.ids})
        for j, c in enumerate(self.classes):
            df[f"p_{c}"] = self.probs[:, j]
        for name, p in self.member_probs.items():
            for j, c in enumerate(self.classes):
                df[f"{name}:p_{c}"] = p[:, j]
        for k, v in self.uncertainty().items():
            df[k] = v
        df["error"] = [self.errors.get(i) for i in self.ids]
        return df


@dataclass
class _Item:
    id: str
    image: np.ndarray | None
    path: Path | None
    meta: Mapping[str, Any]

    def load(self) -> np.ndarray:
        if self.image is not None:
            return self.image
        return read_image(self.path)


def as_items(data: Any) -> list[_Item]:
    """Accept a Dataset, a list of Records, of RGB uint8 arrays, of ``(array, metadata dict)`` pairs (an
    upload with its age / sex / site), or of image paths."""
    records = getattr(data, "records", data)
    items: list[_Item] = []
    for i, r in enumerate(records):
        if isinstance(r, np.ndarray):
            items.append(_Item(f"image_{i:05d}", r, None, {}))
        elif isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], np.ndarray) and isinstance(r[1], Mapping):
            items.append(_Item(f"image_{i:05d}", r[0], None, dict(r[1])))
        elif isinstance(r, (str, Path)):
            items.append(_Item(Path(r).stem, None, Path(r), {}))
        elif hasattr(r, "image_path"):
            items.append(_Item(r.id, None, Path(r.image_path), dict(r.meta or {})))
        else:
            raise DataError(f"Cannot predict on a {type(r).__name__}: pass a Dataset, Records, arrays or paths.")
    if not items:
        raise DataError("Nothing to predict: the data set has no images.")
    return items
