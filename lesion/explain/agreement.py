"""Attention consistency: one score per image saying whether a model "looked in one sensible place".

Seed 003 observes that images with inconsistent attention maps tend to be misclassified. We turn that into
a number in [0, 1] built from parts that can each be checked by hand:

* ``compactness = 1 / n_components`` of the binarised heatmap (Otsu + opening); 0 when nothing survives;
* ``focus = 1 - spread``, where ``spread = sqrt((var_y + var_x) / ((H² + W²) / 12))`` is the heat-weighted
  second moment around the heat's centre of mass, normalised so that a uniform map scores 1 and a single
  point 0 (``(H² + W²) / 12`` is the variance of a uniform distribution over the image);
* ``overlap``: share of the heat inside a reference mask (lesion truth or a segmentation), when given;
* ``cam_attention_iou``: IoU of the binarised CAM and binarised attention mask (multi-task models), when given.

``agreement`` is the plain mean of the parts that are available (2 to 4 of them). Plain mean because no part
is known to matter more, and each lies in [0, 1]; the parts are returned too, so a page can show why.
**With a reference, a map must be on the lesion:** the mean is multiplied by ``on_lesion = min(1, overlap /``
:data:`ON_LESION_SHARE` ``)``, so a compact, focused map wholly off the lesion (PH2 IMD091: 0.72 as a plain mean)
scores 0, and one with at least half its heat on the lesion keeps its mean.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.classify.classifier import as_classifier
from lesion.classify.metadata import encode_metadata
from lesion.classify.models import normalize, prepare_image
from lesion.data.io import read_image, read_mask
from lesion.errors import LesionError, MaskShapeError
from lesion.explain.attention import binarize_heatmap, heat_inside
from lesion.explain.cam import compute_cams
from lesion.metrics import binary_auc, ci_verdict, roc_auc_ci

Progress = Callable[[int, int], None]
#: Share of the heat on the reference from which a map counts as wholly "on the lesion" (see the docstring).
ON_LESION_SHARE = 0.5


def n_components(mask: np.ndarray) -> int:
    """Number of 8-connected foreground components of a bool mask."""
    from skimage.measure import label

    return int(label(np.asarray(mask, dtype=bool), connectivity=2).max())


def spread(heat: np.ndarray) -> float:
    """Normalised second moment of the heat mass: 0 = one point, 1 = uniform over the image (can exceed 1
    slightly for heat piled in opposite corners). NaN for an all-zero map."""
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0, None)
    total = h.sum()
    if total <= 0:
        return float("nan")
    rows, cols = h.shape
    y, x = np.mgrid[0:rows, 0:cols]
    cy, cx = (h * y).sum() / total, (h * x).sum() / total
    var = (h * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / total
    return float(np.sqrt(var / ((rows**2 + cols**2) / 12.0)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum() / union)


def agreement_score(
    heat: np.ndarray,
    attention: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    opening_radius: int = 3,
) -> dict[str, float]:
    """Attention-consistency score of one image (formula in the module docstring).

    Args:
        heat: CAM (or attention, when that is all there is) ``[H, W]``, >= 0.
        attention: the multi-task attention mask ``[H, W]`` in [0, 1], or None.
        reference: bool lesion mask ``[H, W]`` (truth or segmentation), or None.
        opening_radius: for the Otsu + opening binarisation.

    Returns:
        ``agreement`` in [0, 1] and its parts: ``n_components``, ``compactness``, ``spread``, ``focus``,
        ``overlap`` (NaN if no reference), ``cam_attention_iou`` and ``cam_attention_corr`` (NaN without
        attention; the correlation is shown, not averaged in, because it is signed).
    """
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float64)), 0, None)
    b = binarize_heatmap(h, opening_radius)
    n = n_components(b)
    out: dict[str, float] = {"n_components": float(n), "compactness": 1.0 / n if n else 0.0}
    s = spread(h)
    out["spread"] = s
    out["focus"] = 0.0 if np.isnan(s) else float(np.clip(1.0 - s, 0.0, 1.0))
    out["overlap"] = float("nan")
    if reference is not None:
        # heat_inside is NaN for an all-zero map; here such a map points at nothing, so its overlap counts as 0
        out["overlap"] = float(np.nan_to_num(heat_inside(h, reference), nan=0.0))
    out["cam_attention_iou"] = out["cam_attention_corr"] = float("nan")
    if attention is not None:
        a = np.asarray(attention, dtype=np.float64)
        if a.shape != h.shape:
            raise MaskShapeError(f"Attention {a.shape} and heatmap {h.shape} differ in size.")
        out["cam_attention_iou"] = _iou(b, binarize_heatmap(a, opening_radius))
        if h.std() > 0 and a.std() > 0:
            out["cam_attention_corr"] = float(np.corrcoef(h.ravel(), a.ravel())[0, 1])
    if n == 0:
        # An empty map (all zero, or flat: nothing survives the binarisation) points nowhere: every part that
        # measures where it points is 0, and so is the agreement. The page draws it as an empty map too.
        out["focus"] = 0.0
        if reference is not None:
            out["overlap"] = 0.0
        if attention is not None:
            out["cam_attention_iou"] = 0.0
        out["on_lesion"] = 0.0 if reference is not None else 1.0
        out["agreement"] = 0.0
        return out
    parts = [out["compactness"], out["focus"], out["overlap"], out["cam_attention_iou"]]
    mean = float(np.mean([p for p in parts if not np.isnan(p)]))
    on_lesion = 1.0 if np.isnan(out["overlap"]) else float(min(1.0, out["overlap"] / ON_LESION_SHARE))
    out["on_lesion"] = on_lesion
    out["agreement"] = mean * on_lesion
    return out


def wrongness_auc(agreement_scores: Sequence[float], is_wrong: Sequence[bool], n_boot: int = 1000,
                  seed: int = 0) -> tuple[float, float, float]:
    """ROC-AUC (95% bootstrap CI) of *low* agreement as a detector of wrong predictions.

    0.5 = agreement says nothing about errors; 1.0 = every wrong case has lower agreement than every right one.

    Returns:
        ``(auc, lo, hi)`` from :func:`lesion.metrics.roc_auc_ci` on ``-agreement``; all NaN when every prediction
        is right (or every one wrong): the one-class rule of :mod:`lesion.metrics`.
    """
    a = np.asarray(agreement_scores, dtype=np.float64)
    w = np.asarray(is_wrong).astype(bool)
    keep = np.isfinite(a)
    return roc_auc_ci(w[keep], -a[keep], n_boot=n_boot, seed=seed)


def _input_views(card: ModelCard, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]):
    """Each image (and its mask) at the network's input view: ``(views uint8 [S, S, C], masks bool or None)``."""
    prep = card.preprocessing
    views, refs = [], []
    for im, m in zip(images, masks):
        if m is None:
            views.append(prepare_image(im, prep))
            refs.append(None)
        else:
            v, r = prepare_image(im, prep, m)
            views.append(v)
            refs.append(r)
    return views, refs


def explain_batch(model, card: ModelCard, images: Sequence[np.ndarray],
                  masks: Sequence[np.ndarray | None] | None = None,
                  metas: Sequence[Mapping[str, Any] | None] | None = None, methods: Sequence[str] = ("gradcam",),
                  class_index: int | None = None, aug_smooth: bool = False,
                  opening_radius: int = 3) -> list[dict[str, Any]]:
    """CAMs, attention (models with a mask) and agreement for a few images, at the network's input view.

    Images are centre-cropped / resized as the model's card says (:func:`lesion.classify.models.prepare_image`),
    and the masks with them, so heatmaps, masks and the shown image line up pixel for pixel.

    Args:
        model, card: a loaded classifier (:func:`lesion.zoo.load_model`).
        images: RGB uint8 ``[H, W, 3]`` each.
        masks: bool ``[H, W]`` reference per image, or None (no references).
        metas: metadata per image (``age``, ``sex``, ``site``) for models that use it; None = all unknown.
        methods: CAM methods (:data:`lesion.explain.cam.METHODS`); the first one is scored for agreement
            (none: logits and attention only).
        class_index: class to explain; None = the predicted class (binary: positive if p >= 0.5).
        aug_smooth: average each CAM over pytorch-grad-cam's TTA (flips x brightness).

    Returns:
        one dict per image: ``view`` (uint8 ``[S, S, C]``), ``mask`` (bool ``[S, S]`` or None), ``heats``
        {method: ``[S, S]``}, ``heat`` (the first method's, or None), ``attention`` ``[S, S]`` or None, ``logits``
        ``[K]``, ``class_index`` and (with a method) the :func:`agreement_score` parts of ``heat``.
    """
    import torch

    methods = list(methods)
    clf = as_classifier(model)
    views, refs = _input_views(card, images, masks if masks is not None else [None] * len(images))
    x = torch.from_numpy(normalize(np.stack(views), card.preprocessing))
    meta = None
    if clf.uses_metadata:
        meta = torch.from_numpy(np.stack([encode_metadata(m or {}) for m in (metas or [None] * len(views))]))
    dev = next(clf.parameters()).device  # the engine may have moved a shared model to the GPU
    with torch.inference_mode():
        out = clf.eval()(x.to(dev), meta)
    logits = out.logits.float().cpu().numpy()
    # the attention map is the mask branch's sigmoid at the input size (lesion.explain.attention.attention_maps)
    att = torch.sigmoid(out.mask_logits[:, 0].float()).cpu().numpy() if out.mask_logits is not None else None
    if class_index is None:
        cls = (logits[:, 0] >= 0).astype(int) if logits.shape[1] == 1 else logits.argmax(axis=1)
    else:
        cls = np.full(len(views), int(class_index))
    heats = compute_cams(clf, x, [int(c) for c in cls], methods, aug_smooth=aug_smooth, meta=meta) if methods else {}
    rows = []
    for i in range(len(views)):
        a = None if att is None else att[i]
        row = {"view": views[i], "mask": refs[i], "heats": {m: heats[m][i] for m in methods},
               "heat": heats[methods[0]][i] if methods else None, "attention": a, "logits": logits[i],
               "class_index": int(cls[i])}
        if methods:
            row.update(agreement_score(row["heat"], a, refs[i], opening_radius))
        rows.append(row)
    return rows


def explain_image(model, card: ModelCard, image: np.ndarray, meta: Mapping[str, Any] | None = None,
                  mask: np.ndarray | None = None, methods: Sequence[str] = ("gradcam",),
                  class_index: int | None = None, aug_smooth: bool = False, opening_radius: int = 3) -> dict[str, Any]:
    """:func:`explain_batch` of one image held in memory (an upload, or an image a page has read).

    Args:
        image: RGB uint8 ``[H, W, 3]``.
        meta: its metadata (``age``, ``sex``, ``site``), or None.
        mask: bool ``[H, W]`` reference (truth or a segmentation), or None.

    Returns:
        the one dict :func:`explain_batch` returns for it.
    """
    return explain_batch(model, card, [image], [mask], [meta], methods, class_index, aug_smooth, opening_radius)[0]


def agreement_over_dataset(model, card: ModelCard, records: Sequence[Any], method: str = "gradcam",
                           batch_size: int = 8, use_masks: bool = True, opening_radius: int = 3,
                           progress: Progress | None = None):
    """Agreement parts of every record (one batched CAM call per ``batch_size`` images).

    Args:
        records: :class:`lesion.data.records.Record` list; masks are used as the reference when present
            and ``use_masks``.
        progress: ``progress(done, total)``.

    Returns:
        pandas DataFrame, one row per record: ``id``, ``logit`` (first/argmax logit), ``class_index`` and the
        :func:`agreement_score` columns. Unreadable images get NaN and an ``error`` message.
    """
    import pandas as pd

    cols = ["n_components", "compactness", "spread", "focus", "overlap", "cam_attention_iou",
            "cam_attention_corr", "agreement"]
    rows: list[dict[str, Any]] = []
    total = len(records)
    for start in range(0, total, batch_size):
        chunk = records[start:start + batch_size]
        good, images, masks = [], [], []
        for r in chunk:
            try:
                im = read_image(r.image_path)
                m = read_mask(r.mask_path, im.shape[:2]) if (use_masks and r.mask_path) else None
                good.append(r)
                images.append(im)
                masks.append(m)
            except LesionError as e:
                rows.append({"id": r.id, "error": str(e), **{c: float("nan") for c in cols}})
        if good:
            out = explain_batch(model, card, images, masks, [dict(r.meta or {}) for r in good], (method,),
                                opening_radius=opening_radius)
            for r, o in zip(good, out):
                rows.append({"id": r.id, "logit": float(o["logits"].max()), "class_index": o["class_index"],
                             **{c: o[c] for c in cols}, "error": None})
        if progress is not None:
            progress(min(start + batch_size, total), total)
    order = {r.id: i for i, r in enumerate(records)}
    df = pd.DataFrame(rows)
    return df.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)


def agreement_verdict(agreement: Sequence[float], is_wrong: Sequence[bool], pred_class: Sequence[float],
                      n_perm: int = 200, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Whether low agreement flags wrong predictions, overall and **within each predicted class**, against a
    control that a model with no real link between its maps and its errors would also reach.

    An untrained network's errors and maps both follow its predicted class (it calls almost everything one
    class; its maps differ by class), so the overall AUC alone "supports" the claim for a random network. The
    control is the same statistic with the right / wrong labels shuffled **within each predicted class**
    (``n_perm`` times): it keeps what the class alone explains and removes any link inside a class. The claim is
    supported only when the overall 95% CI lies above 0.5 **and** the AUC exceeds the control's 97.5th
    percentile; contradicted when the CI lies below 0.5 and the AUC is under the control's 2.5th percentile.

    Args:
        agreement: ``[N]`` agreement scores (NaN = left out). is_wrong: ``[N]`` bool (judged at the threshold
            in use). pred_class: ``[N]`` predicted class per image.

    Returns:
        ``auc, lo, hi`` (overall), ``per_class``: list of ``{class, n, wrong, auc, lo, hi}``, ``control``:
        ``{mean, lo, hi}`` (2.5th / 97.5th percentiles of the within-class shuffled AUC), ``verdict``
        (supports / contradicts / inconclusive) and ``reason`` (one line).
    """
    a = np.asarray(agreement, dtype=np.float64)
    w = np.asarray(is_wrong).astype(bool)
    c = np.asarray(pred_class, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(c)
    a, w, c = a[ok], w[ok], c[ok]
    auc, lo, hi = roc_auc_ci(w, -a, n_boot=n_boot, seed=seed)
    per_class = []
    for k in np.unique(c):
        m = c == k
        ka, klo, khi = roc_auc_ci(w[m], -a[m], n_boot=n_boot, seed=seed)
        per_class.append({"class": int(k), "n": int(m.sum()), "wrong": int(w[m].sum()), "auc": ka, "lo": klo,
                          "hi": khi, "verdict": ci_verdict(klo, khi)})
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(int(n_perm) if np.isfinite(auc) else 0):
        ws = w.copy()
        for k in np.unique(c):
            idx = np.flatnonzero(c == k)
            ws[idx] = ws[rng.permutation(idx)]
        if 0 < ws.sum() < ws.size:
            null.append(binary_auc(ws, -a))
    null_a = np.asarray(null, dtype=np.float64)
    control = ({"mean": float(null_a.mean()), "lo": float(np.quantile(null_a, 0.025)),
                "hi": float(np.quantile(null_a, 0.975))} if null_a.size else
               {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")})
    base = ci_verdict(lo, hi)
    if base == "supports" and not auc > control["hi"]:
        verdict = "inconclusive"
        reason = (f"the overall AUC {auc:.3f} is no higher than the same statistic with right / wrong shuffled "
                  f"within each predicted class (control up to {control['hi']:.3f}): the predicted class alone "
                  "explains it, as it would for an untrained network")
    elif base == "contradicts" and not auc < control["lo"]:
        verdict = "inconclusive"
        reason = (f"the overall AUC {auc:.3f} is within the within-class shuffled control "
                  f"({control['lo']:.3f}–{control['hi']:.3f}): the predicted class alone explains it")
    else:
        verdict = base
        reason = ("the 95% CI and the control agree" if base != "inconclusive" else "the 95% CI contains 0.5")
    return {"auc": auc, "lo": lo, "hi": hi, "per_class": per_class, "control": control, "verdict": verdict,
            "reason": reason}
