"""Batched inference of classifier ensembles with TTA, and a naive reference path.

:func:`predict` runs ``members x TTA views`` over a data set:

* images are read and preprocessed once per distinct preprocessing (from each member's card: crop, resize,
  CLAHE, mean/std), in batches of ``batch_size``;
* all TTA views of a batch are concatenated into **one** forward pass per model (``[V * B, 3, S, S]``);
* on CUDA the models run in ``channels_last`` under ``torch.autocast`` (bf16 where supported, else fp16);
  on the CPU in fp32, still batched;
* multi-task models receive the records' metadata (all-"unknown" when there is none).

:func:`predict_naive` does the same maths one image, one view, one model at a time; the tests prove the two
agree (CPU fp32, atol 1e-5) and ``bench/bench_ensemble.py`` times both.

Merging: per member the ``V`` views are merged with ``tta_merge`` (default: ``merge``), then the members
with ``merge`` (:mod:`lesion.infer.ensemble`).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard, Preprocessing
from lesion.classify.classifier import Classifier, as_classifier
from lesion.classify.metadata import encode_metadata
from lesion.classify.models import normalize, prepare_image
from lesion.device import pick_device
from lesion.errors import DataError, ModelOutputError
from lesion.infer.ensemble import activate, check_merge, merge_logits, merge_members
from lesion.infer.results import PredictionResult, _Item, as_items  # noqa: F401  (the engine's result types)
from lesion.infer.tta import augment_views, n_views, tta_transforms, view_list

Progress = Callable[[int, int], None]


@dataclass
class _Member:
    name: str
    model: Classifier
    card: ModelCard
    prep: Preprocessing
    uses_meta: bool


def _members(models: Sequence[tuple[Any, ModelCard]]) -> list[_Member]:
    if not models:
        raise DataError("No models given: pass at least one (model, card) pair.")
    out, seen = [], {}
    for i, (model, card) in enumerate(models):
        name = card.name or f"model{i}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        clf = as_classifier(model)
        out.append(_Member(name, clf, card, card.preprocessing, clf.uses_metadata))
    classes = {(m.card.classes, m.card.multilabel) for m in out}
    if len(classes) > 1:
        raise DataError(
            "Ensemble members predict different classes: "
            + "; ".join(f"{m.name}: {list(m.card.classes)}" for m in out)
            + ". Combine only models trained for the same target."
        )
    return out


def _classes(members: list[_Member], k: int) -> tuple[str, ...]:
    c = members[0].card.classes
    return c if len(c) == k else tuple(f"class{j}" for j in range(k))


def _forward(member: _Member, x, meta, device: str):
    """Logits ``[B, K]`` float32 on CPU for a (views) batch ``x`` on ``device``."""
    import torch

    with torch.inference_mode():
        if device.startswith("cuda"):
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            ctx = torch.autocast("cuda", dtype=dtype)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            m = meta.to(x.device) if (meta is not None and member.uses_meta) else None
            out = member.model(x, m).logits
    return out.float().cpu().numpy()


def _place(members: list[_Member], device: str) -> None:
    import torch

    for m in members:
        m.model.eval()
        m.model.to(device)
        if device.startswith("cuda"):
            m.model.to(memory_format=torch.channels_last)


def _meta_tensor(items: Sequence[_Item]):
    import torch

    return torch.from_numpy(np.stack([encode_metadata(it.meta) for it in items]))


def check_finite_logits(name: str, logits: np.ndarray, ids: Sequence[str]) -> None:
    """Raise :class:`ModelOutputError` when a member's logits ``[V, N, K]`` hold NaN or Inf for any image."""
    bad = ~np.isfinite(logits).all(axis=(0, 2))
    if bad.any():
        first = ", ".join(str(ids[i]) for i in np.flatnonzero(bad)[:3])
        raise ModelOutputError(
            f"Model '{name}' output NaN or Inf for {int(bad.sum())} of {len(ids)} images (e.g. {first}): its "
            "weights are corrupt or it overflowed; no scores were computed."
        )


def _finish(members, logits, items, tta, merge, tta_merge, device, t0) -> PredictionResult:
    ml = members[0].card.multilabel
    ids = [it.id for it in items]
    for m in members:
        check_finite_logits(m.name, np.concatenate(logits[m.name], axis=1), ids)
    member_probs = {m.name: merge_logits(np.concatenate(logits[m.name], axis=1), tta_merge, ml) for m in members}
    # spread over the TTA views of each member's probabilities (views on axis 0)
    view_std = {m.name: activate(np.concatenate(logits[m.name], axis=1), ml).std(axis=0) for m in members}
    probs = (merge_members(list(member_probs.values()), merge, ml) if len(members) > 1
             else next(iter(member_probs.values())))
    k = probs.shape[1]
    ms = (time.perf_counter() - t0) * 1000.0 / len(items)
    return PredictionResult(probs, member_probs, ids, _classes(members, k), device, ms,
                            tta, merge, tta_merge, view_std=view_std)


#: Images per forward pass (views included) that suit each kind of device. Measured on 2 CPU threads with the
#: four shipped derm classifiers at 256 px (bench/bench_ensemble.py): 8 per forward ran 1.7-1.9x the naive
#: loop, 128 per forward 0.9x (the activations leave the caches); a GPU wants large batches.
FORWARD_IMAGES = {"cpu": 8, "cuda": 256}


def auto_batch_size(device: str, tta: str) -> int:
    """Images per batch so that one forward pass holds about :data:`FORWARD_IMAGES` views on ``device``."""
    views = n_views(tta)
    per_forward = FORWARD_IMAGES.get(device.split(":", 1)[0], FORWARD_IMAGES["cpu"])
    return max(1, per_forward // views)


def predict(
    models: Sequence[tuple[Any, ModelCard]],
    data: Any,
    tta: str = "d4",
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> PredictionResult:
    """Batched ensemble x TTA prediction.

    Args:
        models: ``(model, card)`` pairs; the card gives ``name``, ``classes`` and ``preprocessing``.
        data: Dataset, Records, RGB uint8 arrays ``[H, W, 3]`` or image paths.
        tta: ``none | hflip | vflip | flips | d4``.
        merge: member merge mode (:data:`lesion.infer.ensemble.MERGE_MODES`).
        tta_merge: view merge mode per member (default: ``merge``).
        batch_size: images per batch (the forward pass holds ``batch_size x views`` images); ``None``:
            :func:`auto_batch_size` for the device and TTA.
        device: ``auto | cpu | cuda``.
        progress: ``progress(done_images, total_images)``.

    Returns:
        :class:`PredictionResult`.

    Raises:
        ModelOutputError: a member output NaN or Inf for any image (the message names it and counts them).
    """
    import torch

    tta_transforms(tta)
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    device = pick_device(device)
    batch_size = batch_size or auto_batch_size(device, tta)
    members = _members(models)
    items = as_items(data)
    _place(members, device)
    preps: dict[Preprocessing, list[_Member]] = {}
    for m in members:
        preps.setdefault(m.prep, []).append(m)
    logits: dict[str, list[np.ndarray]] = {m.name: [] for m in members}
    any_meta = any(m.uses_meta for m in members)
    t0 = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = [it.load() for it in chunk]
        meta = _meta_tensor(chunk) if any_meta else None
        for prep, group in preps.items():
            x = torch.from_numpy(normalize(np.stack([prepare_image(im, prep) for im in images]), prep))
            xv = augment_views(x, tta)
            v = xv.shape[0] // x.shape[0]
            meta_v = meta.repeat(v, 1) if meta is not None else None
            for m in group:
                out = _forward(m, xv, meta_v, device)
                logits[m.name].append(out.reshape(v, len(chunk), -1))
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return _finish(members, logits, items, tta, merge, tta_merge, device, t0)


def predict_naive(
    models: Sequence[tuple[Any, ModelCard]],
    data: Any,
    tta: str = "d4",
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> PredictionResult:
    """Reference path: one image, one view, one model per forward pass, fp32, no channels_last.

    Same arguments and result as :func:`predict`; exists to check it and to measure the speed-up.
    """
    import torch

    tta_transforms(tta)
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    device = pick_device(device)
    members = _members(models)
    items = as_items(data)
    for m in members:
        m.model.eval().to(device)
    logits: dict[str, list[np.ndarray]] = {m.name: [] for m in members}
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        image = it.load()
        meta = _meta_tensor([it]) if any(m.uses_meta for m in members) else None
        for m in members:
            x = torch.from_numpy(normalize(prepare_image(image, m.prep)[None], m.prep)).to(device)
            per_view = []
            for xv in view_list(x, tta):
                with torch.inference_mode():
                    out = m.model(xv, meta.to(device) if (meta is not None and m.uses_meta) else None).logits
                per_view.append(out.float().cpu().numpy())
            logits[m.name].append(np.stack(per_view))  # [V, 1, K]
        if progress is not None:
            progress(i + 1, len(items))
    return _finish(members, logits, items, tta, merge, tta_merge, device, t0)
