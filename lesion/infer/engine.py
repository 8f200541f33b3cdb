"""The one entry point of every prediction: :func:`predict` (members x TTA views over a data set).

Pages, the CLI, the model server's deployments, the Ray Data actors, the trainers and the benchmarks all call
it. It

1. builds the members (:func:`lesion.infer.members.build_members`: ``backend`` says how — ``torch`` here,
   ``onnx`` / ``remote`` registered by :mod:`lesion.serving`), and wraps each in the prediction cache when
   ``cache`` is given (:class:`lesion.infer.cache.CachedMember`, keyed by image content and checkpoint sha256);
2. asks each member for the whole data set at once (:meth:`Member.predict_all`: a cache hit, a server), and
   runs the others batch by batch: images are read once per batch and preprocessed once per distinct
   preprocessing (:class:`~lesion.infer.members.Batch`), all TTA views of one shape go through **one** forward
   pass per member;
3. checks every logit is finite and hands the per-view logits to the one merge,
   :func:`lesion.infer.ensemble.merge_predictions`, which builds the :class:`PredictionResult`.

:func:`predict_naive` does the same maths one image, one view, one model at a time (fp32, no batching); the
tests prove the two agree and ``bench/bench_ensemble.py`` times both.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from lesion.device import pick_device
from lesion.errors import DataError, ModelOutputError
from lesion.infer.cache import CachedMember, cache_spec
from lesion.infer.ensemble import check_merge, merge_predictions
from lesion.infer.members import Batch, Member, TensorMember, build_members, members_classes
from lesion.infer.results import PredictionResult, _Item, as_items  # noqa: F401  (the engine's result types)
from lesion.infer.torch_member import TorchMember  # noqa: F401  (registers the torch backend)
from lesion.infer.tta import DEFAULT_TTA, TTA, parse_tta

Progress = Callable[[int, int], None]


def check_finite_logits(name: str, logits: np.ndarray, ids: Sequence[str]) -> None:
    """Raise :class:`ModelOutputError` when a member's logits ``[V, N, K]`` hold NaN or Inf for any image."""
    bad = ~np.isfinite(logits).all(axis=(0, 2))
    if bad.any():
        first = ", ".join(str(ids[i]) for i in np.flatnonzero(bad)[:3])
        raise ModelOutputError(
            f"Model '{name}' output NaN or Inf for {int(bad.sum())} of {len(ids)} images (e.g. {first}): its "
            "weights are corrupt or it overflowed; no scores were computed."
        )


#: Images per forward pass (views included) that suit each kind of device. Measured on 2 CPU threads with the
#: four shipped derm classifiers at 256 px (bench/bench_ensemble.py): 8 per forward ran 1.7-1.9x the naive
#: loop, 128 per forward 0.9x (the activations leave the caches); a GPU wants large batches.
FORWARD_IMAGES = {"cpu": 8, "cuda": 256}


def auto_batch_size(device: str, tta: "str | TTA") -> int:
    """Images per batch so that one forward pass holds about :data:`FORWARD_IMAGES` views on ``device``."""
    views = parse_tta(tta).views
    per_forward = FORWARD_IMAGES.get(device.split(":", 1)[0], FORWARD_IMAGES["cpu"])
    return max(1, per_forward // views)


def predict(
    members: Sequence[Any],
    data: Any,
    tta: "str | TTA" = DEFAULT_TTA,
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    backend: str = "torch",
    cache: Any = None,
    batch_size: int | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    **backend_options: Any,
) -> PredictionResult:
    """Ensemble x TTA prediction; the only way predictions are made.

    Args:
        members: :class:`~lesion.infer.members.Member` objects, ``(model, card)`` pairs or (``remote``) cards.
        data: a Dataset, Records, RGB uint8 arrays ``[H, W, 3]``, ``(array, metadata)`` pairs or image paths.
        tta: ``none | hflip | vflip | flips | d4`` (or a parsed :class:`TTA`); default :data:`DEFAULT_TTA`.
        merge: member merge mode (:data:`lesion.infer.ensemble.MERGE_MODES`); tta_merge: per member over its
            views (default: ``merge``).
        backend: how members are built from pairs: ``torch`` (this process), ``onnx``, ``remote``
            (:mod:`lesion.serving`; options such as ``url``, ``token``, ``int8``, ``calibration`` pass through).
        cache: None (no disk cache), True (the lesion cache) or a cache root folder; every member is wrapped in
            :class:`~lesion.infer.cache.CachedMember` (keyed by image content, member identity, TTA,
            preprocessing, classes). ``(root, refresh, warn)`` may be given as a :class:`~lesion.infer.cache.CacheSpec`.
        batch_size: images per batch (the forward pass holds ``batch_size x views`` images); None:
            :func:`auto_batch_size` for the device and TTA.
        device: ``auto | cpu | cuda`` for local members.
        progress: ``progress(done_images, total_images)``.

    Raises:
        ModelOutputError: a member output NaN or Inf for any image (the message names it and counts them).
        ConfigError / DataError: a bad TTA, merge, backend, member set or data (one line).
    """
    t = parse_tta(tta)
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    built = build_members(members, backend=backend, **backend_options)
    items = as_items(data)
    spec = cache_spec(cache)
    if spec is not None:
        built = [CachedMember(m, data, items, spec) for m in built]
    return run(built, items, t, merge, tta_merge, batch_size, device, progress)


def run(members: Sequence[Member], items: Sequence[_Item], tta: TTA, merge: str, tta_merge: str,
        batch_size: int | None = None, device: str = "auto", progress: Progress | None = None) -> PredictionResult:
    """:func:`predict` once the members are built and the data read as items (the loop and the merge)."""
    device = pick_device(device)
    t0 = time.perf_counter()
    ids = [it.id for it in items]
    logits: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    todo: list[Member] = []
    for m in members:
        z = m.predict_all(items, tta, progress)
        if z is None:
            todo.append(m)
        else:
            logits[m.name] = np.asarray(z, np.float32)
    where = {m.where for m in members if m.name in logits}
    if todo:
        for m in todo:
            m.place(device)
        batch_size = batch_size or auto_batch_size(device, tta)
        parts: dict[str, list[np.ndarray]] = {m.name: [] for m in todo}
        for start in range(0, len(items), batch_size):
            batch = Batch(items[start:start + batch_size])
            errors.update(batch.errors)
            for m in todo:
                parts[m.name].append(m.forward_views(batch, tta))
            if progress is not None:
                progress(min(start + batch_size, len(items)), len(items))
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        for m in todo:
            logits[m.name] = np.concatenate(parts[m.name], axis=1)
            where.add(m.where)
    elif progress is not None:
        progress(len(items), len(items))
    bad = np.asarray([i in errors for i in ids])
    if bad.all():
        first = next(iter(errors.items()))
        raise DataError(f"None of the {len(ids)} image(s) could be read, so nothing was scored; the first: "
                        f"{first[0]}: {first[1]}")
    for m in members:
        check_finite_logits(m.name, logits[m.name][:, ~bad], [i for i, b in zip(ids, bad) if not b])
    for m in todo:
        if not bad.any():  # a run with unreadable images is not cached: the files may be fixed
            m.computed(items, tta, logits[m.name])
        logits[m.name][:, bad] = np.nan
    classes, multilabel = members_classes(members)
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(items))
    notes = [n for m in members for n in m.notes()]
    if errors:
        notes.append(f"{len(errors)} of {len(ids)} image(s) could not be read and have no scores (e.g. "
                     f"{next(iter(errors))}: {next(iter(errors.values()))})")
    return merge_predictions({m.name: logits[m.name] for m in members}, ids, classes, multilabel, tta.name, merge,
                             tta_merge, ", ".join(sorted(where)) or "cache", ms, notes, errors=errors)


def predict_naive(
    members: Sequence[Any],
    data: Any,
    tta: "str | TTA" = DEFAULT_TTA,
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> PredictionResult:
    """Reference path: one image, one view, one model per forward pass, fp32, no channels_last.

    Same arguments and result as :func:`predict` (PyTorch and ONNX members); exists to check it and to measure
    the speed-up.
    """
    import torch

    t = parse_tta(tta)
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    built = build_members(members)
    items = as_items(data)
    device = pick_device(device)
    for m in built:
        if not isinstance(m, TensorMember):
            raise ModelOutputError(f"predict_naive runs tensor members only, not {m.kind} ('{m.name}').")
        if hasattr(m, "mixed_precision"):
            m.mixed_precision = False  # the reference is fp32 as said, also on CUDA
        m.place(device)
    logits: dict[str, list[np.ndarray]] = {m.name: [] for m in built}
    t0 = time.perf_counter()
    for i, it in enumerate(items):
        batch = Batch([it])
        meta = batch.meta()
        for m in built:
            views = t.augment(torch.from_numpy(batch.inputs(m.prep)))
            per_view = [m.forward(xv, meta if m.uses_metadata else None) for xv in views]
            logits[m.name].append(np.stack(per_view))  # [V, 1, K]
        if progress is not None:
            progress(i + 1, len(items))
    ids = [it.id for it in items]
    z = {m.name: np.concatenate(logits[m.name], axis=1) for m in built}
    for m in built:
        check_finite_logits(m.name, z[m.name], ids)
    classes, multilabel = members_classes(built)
    ms = (time.perf_counter() - t0) * 1000.0 / len(items)
    return merge_predictions(z, ids, classes, multilabel, t.name, merge, tta_merge, device, ms)
