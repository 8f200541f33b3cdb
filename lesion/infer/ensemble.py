"""Merging predictions over TTA views and over ensemble members; choosing members (seed 003).

Merge modes (ttach's ``Merger`` idea: validated names), applied to logits ``[V, N, K]``:

============  =========================================================================================
``mean_logit``  activation of the mean logit (seed 003 ensemble 1)
``mean_prob``   mean of the activated probabilities (seed 003 ensemble 2, their final choice)
``log_mean``    geometric mean of probabilities, ``exp(mean log p)`` (seed 003 ensemble 3); rows are
                renormalised to sum to 1 for softmax heads
``rank``        mean over views of each view's rank of an image among the N images, scaled to (0, 1]; a
                score, not a probability (only the order matters, e.g. for AUC). Needs N > 1 to mean much.
============  =========================================================================================

The activation is ``sigmoid`` for one logit (``K == 1``) and for multi-label heads (``multilabel=True``: each
of the K findings independently, seed 002), and ``softmax`` over K otherwise.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lesion.errors import DataError, unknown_option
from lesion.infer.results import PredictionResult
from lesion.metrics import binary_auc

MERGE_MODES: tuple[str, ...] = ("mean_logit", "mean_prob", "log_mean", "rank")
_EPS = 1e-7


def check_merge(mode: str) -> str:
    """Return ``mode`` or raise ConfigError listing :data:`MERGE_MODES`."""
    if mode not in MERGE_MODES:
        raise unknown_option("merge mode", mode, MERGE_MODES)
    return mode


def activate(logits: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Sigmoid for ``K == 1`` or a multi-label head, softmax over the last axis otherwise. float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[-1] == 1 or multilabel:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def inverse_activation(probs: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """A logit whose activation gives ``probs``: ``logit(p)`` for K == 1 or multi-label, ``log p`` for softmax."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    if p.shape[-1] == 1 or multilabel:
        return np.log(p / (1 - p))
    return np.log(p)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each of the N rows within its column, ``[V, N, K]`` -> ``[V, N, K]`` in (0, 1] (ties averaged)."""
    from scipy.stats import rankdata

    n = scores.shape[1]
    return rankdata(scores, axis=1) / n


def merge_logits(logits: np.ndarray, mode: str, multilabel: bool = False) -> np.ndarray:
    """Merge ``V`` predictions of the same ``N`` images.

    Args:
        logits: ``[V, N, K]`` raw logits (views or members).
        mode: one of :data:`MERGE_MODES`.
        multilabel: K independent sigmoids instead of a softmax over K.

    Returns:
        float64 ``[N, K]``: probabilities (``rank``: scores in (0, 1]).
    """
    check_merge(mode)
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 3:
        raise DataError(f"merge_logits expects [V, N, K] logits, got shape {z.shape}.")
    if mode == "mean_logit":
        return activate(z.mean(axis=0), multilabel)
    p = activate(z, multilabel)
    if mode == "mean_prob":
        return p.mean(axis=0)
    if mode == "log_mean":
        g = np.exp(np.log(np.clip(p, _EPS, 1.0)).mean(axis=0))
        return g if (g.shape[-1] == 1 or multilabel) else g / g.sum(axis=-1, keepdims=True)
    r = _ranks(p).mean(axis=0)  # rank of probabilities (same as of logits: monotone)
    return r


def merge_members(member_probs: Sequence[np.ndarray], mode: str, multilabel: bool = False) -> np.ndarray:
    """Ensemble merge of per-member outputs ``[N, K]`` (each already TTA-merged) with ``mode``.

    Members are mapped back to logits with :func:`inverse_activation` so that ``mean_logit`` of members that
    were TTA-merged by ``mean_logit`` equals ``mean_logit`` over all member x view logits.
    """
    if not member_probs:
        raise DataError("An ensemble needs at least one member.")
    stack = np.stack([inverse_activation(p, multilabel) for p in member_probs])
    return merge_logits(stack, mode, multilabel)


def merge_predictions(
    view_logits: Mapping[str, np.ndarray],
    ids: Sequence[str],
    classes: Sequence[str],
    multilabel: bool = False,
    tta: str = "none",
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    device: str = "cpu",
    ms_per_image: float = 0.0,
    notes: Sequence[str] = (),
    errors: Mapping[str, str] | None = None,
) -> "PredictionResult":
    """The one merge: members' per-view logits -> :class:`~lesion.infer.results.PredictionResult`.

    Every prediction path (the engine over any kind of member, the server, the Ray Data join) ends here, and
    this is the only place a ``PredictionResult`` is built. Per member the ``V`` views are merged with
    ``tta_merge`` (default ``merge``) into TTA-merged probabilities, the members with ``merge``
    (:func:`merge_members`); the spread of each member's probabilities over its views is kept (``view_std``).

    Args:
        view_logits: member name -> raw logits ``[V, N, K]`` (views on axis 0), finite.
        ids: the N image ids; classes: the K class names (``class0`` … when empty or of another length).
        errors: id -> reason for images that could not be read (their rows are NaN).

    Raises:
        DataError: no member, or members of different shapes.
    """
    if not view_logits:
        raise DataError("An ensemble needs at least one member.")
    merge = check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    shapes = {np.shape(z)[1:] for z in view_logits.values()}
    if len(shapes) > 1 or any(np.ndim(z) != 3 for z in view_logits.values()):
        raise DataError(f"Members' outputs differ in shape: {sorted(map(str, shapes))}.")
    # rows of unreadable images are NaN for every member: merged on the other rows (a rank is among them only)
    ok = np.all([np.isfinite(np.asarray(z)).all(axis=(0, 2)) for z in view_logits.values()], axis=0)

    def rows(f, z):
        out = np.full(np.shape(z)[1:], np.nan)
        out[ok] = f(np.asarray(z)[:, ok])
        return out

    member_probs = {n: rows(lambda a: merge_logits(a, tta_merge, multilabel), z) for n, z in view_logits.items()}
    view_std = {n: rows(lambda a: activate(a, multilabel).std(axis=0), z) for n, z in view_logits.items()}
    probs = (rows(lambda a: merge_members([p[ok] for p in member_probs.values()], merge, multilabel),
                  np.stack(list(member_probs.values()))) if len(member_probs) > 1
             else next(iter(member_probs.values())))
    k = probs.shape[1]
    names = tuple(classes) if len(classes) == k else tuple(f"class{j}" for j in range(k))
    return PredictionResult(probs, member_probs, list(ids), names, device, float(ms_per_image), tta, merge,
                            tta_merge, list(notes), view_std=view_std,
                            view_logits={n: np.asarray(z, np.float32) for n, z in view_logits.items()},
                            errors=dict(errors or {}), multilabel=bool(multilabel))


def readable_only(result: "PredictionResult") -> "PredictionResult":
    """``result`` without the rows of images that could not be read (``result.errors``), merged again by the one
    merge (a ``rank`` merge then ranks among the readable images only); the errors stay named in ``errors``."""
    if not result.errors:
        return result
    ok = np.asarray([i not in result.errors for i in result.ids])
    if not ok.any():
        raise DataError("None of the images could be read, so nothing was scored.")
    return merge_predictions({n: np.asarray(z)[:, ok] for n, z in (result.view_logits or {}).items()},
                             [i for i, k in zip(result.ids, ok) if k], result.classes,
                             result.multilabel,
                             result.tta, result.merge, result.tta_merge, result.device, result.ms_per_image,
                             result.notes, errors=result.errors)


def correlation_matrix(member_probs: Mapping[str, np.ndarray]) -> "pandas.DataFrame":  # noqa: F821
    """Pearson correlation of members' predictions (positive-class column, or all classes flattened).

    Seed 003 ensembles *raw* outputs of low pairwise correlation; raw logits are used here (inverse of the
    stored probabilities), so saturated probabilities near 0/1 do not hide disagreement.
    """
    import pandas as pd

    names = list(member_probs)
    cols = [inverse_activation(np.asarray(member_probs[n])).ravel() for n in names]
    c = np.corrcoef(np.stack(cols)) if len(cols) > 1 else np.ones((1, 1))
    return pd.DataFrame(c, index=names, columns=names)


def suggest_members(member_scores: Mapping[str, np.ndarray], y: Sequence[int], k: int,
                    max_corr: float = 0.95) -> list[str]:
    """Greedy member choice (seed 003): best AUC first, then repeatedly the best-AUC remaining member whose
    largest correlation with those chosen is lowest, preferring members below ``max_corr``.

    Concretely each step picks ``argmax(AUC - max_corr_to_chosen)`` among candidates with correlation
    <= ``max_corr`` (all candidates if none qualifies).

    Args:
        member_scores: name -> probabilities ``[N]`` or ``[N, 1]`` (binary) of the same images.
        y: 0/1 labels ``[N]``.
        k: number of members to return (capped at the number available).

    Returns:
        chosen names, in the order chosen.
    """
    names = list(member_scores)
    if not names:
        return []
    y = np.asarray(y).ravel()
    scores = {n: np.asarray(member_scores[n], dtype=np.float64).reshape(len(y), -1)[:, -1] for n in names}
    auc = {n: binary_auc(y, s) for n, s in scores.items()}
    corr = correlation_matrix({n: s[:, None] for n, s in scores.items()})
    chosen = [max(names, key=lambda n: auc[n])]
    while len(chosen) < min(k, len(names)):
        rest = [n for n in names if n not in chosen]
        worst = {n: max(corr.loc[n, c] for c in chosen) for n in rest}
        ok = [n for n in rest if worst[n] <= max_corr] or rest
        chosen.append(max(ok, key=lambda n: auc[n] - worst[n]))
    return chosen
