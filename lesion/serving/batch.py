"""Large evaluations on Ray Data: ``lesion evaluate cls --engine ray [--address ADDR]``.

The records are cut into shards (:data:`SHARD_IMAGES` images each); a Ray Dataset of shards goes through
``map_batches`` with a stateful predictor class under ``ActorPoolStrategy`` (each actor loads the ensemble once,
on a GPU when the cluster has them) which runs the same batched engine as the app and writes its shard's
predictions to ``<work>/shard-NNNNN.parquet`` (temp file + rename). A rerun with the same models, data and
settings skips the shards already written, so an interrupted evaluation resumes where it stopped. The shards are
joined in record order into the same :class:`PredictionResult` (and parquet columns) as the in-process engine.

Without ``address`` a local Ray instance is started on this machine (and stopped afterwards); with one
(``ray://HEAD:10001`` or ``auto``) the job runs on that cluster, whose workers need lesion-lab installed and
the images at the same paths (a shared filesystem).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.data.records import Record, file_content_digest
from lesion.errors import ConfigError
from lesion.infer.ensemble import check_merge, merge_predictions
from lesion.infer.members import unique_names
from lesion.infer.results import PredictionResult
from lesion.infer.torch_member import TorchMember
from lesion.infer.tta import DEFAULT_TTA, check_tta, n_views
from lesion.paths import atomic_target, cache_dir
from lesion.serving.backends import predict as engine_predict
from lesion.serving.local_ray import init_local_ray
from lesion.zoo import CLASSIFIER_TASKS, load_model

SHARD_IMAGES = 64
Progress = Callable[[int, int], None]


class ShardPredictor:
    """A Ray Data actor: loads the ensemble once, predicts whole shards, writes one parquet file per shard."""

    def __init__(self, names: Sequence[str], tta: str, work: str, device: str = "auto", verify: bool = True):
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("LESION_RAY_THREADS", "1"))))
        self.members = [TorchMember(*load_model(n, task=CLASSIFIER_TASKS, verify=verify)) for n in names]
        self.tta, self.work, self.device = tta, Path(work), device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pandas as pd

        out_shard, out_n = [], []
        for k, rows in zip(batch["shard"], batch["rows"]):
            rows = json.loads(rows)
            records = [Record(id=r["id"], image_path=Path(r["path"]), meta=r["meta"]) for r in rows]
            res = engine_predict(self.members, records, tta=self.tta, device=self.device)
            df = pd.DataFrame({"index": [r["index"] for r in rows], "id": res.ids})
            for name, z in res.view_logits.items():  # raw logits of every view: the join merges them
                for v in range(z.shape[0]):
                    for j in range(z.shape[2]):
                        df[f"{name}:{v}:{j}"] = z[v, :, j]
            with atomic_target(self.work / f"shard-{int(k):05d}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
            out_shard.append(int(k))
            out_n.append(len(rows))
        return {"shard": np.asarray(out_shard), "n": np.asarray(out_n)}


def _job_key(cards: Sequence[ModelCard], records: Sequence[Any], tta: str) -> str:
    """The shard store's key: checkpoints' sha256, TTA, and every image's id, path, content (sha1 of its bytes)
    and metadata — like the prediction cache, never size or mtime, so changed pixels are recomputed."""
    h = hashlib.sha256()
    h.update(json.dumps([[c.name, c.sha256] for c in cards] + [tta, SHARD_IMAGES]).encode())
    for r in records:
        meta = json.dumps(dict(r.meta or {}), sort_keys=True, default=str)
        h.update(f"{r.id}|{r.image_path}|{file_content_digest(r.image_path)}|{meta}\n".encode())
    return h.hexdigest()[:20]


def ray_predict(
    model_names: Sequence[str],
    records: Sequence[Any],
    tta: str = DEFAULT_TTA,
    merge: str = "mean_prob",
    tta_merge: str | None = None,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float | None = None,
    work_dir: str | Path | None = None,
    progress: Progress | None = None,
    num_cpus: int | None = None,
    verify: bool = True,
) -> PredictionResult:
    """The ensemble's predictions over ``records`` computed by a Ray Data pipeline.

    Args:
        model_names: checkpoint names or paths (every worker must see them).
        records: :class:`lesion.data.records.Record` list (images at paths every worker can read).
        address: Ray cluster address; None starts (and stops) a local instance.
        actors: predictor actors in the pool.
        gpus_per_actor: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
        work_dir: where the shard files go (default: the lesion cache, keyed by models + data + settings);
            an existing folder of the same job is resumed.
        verify: check each checkpoint against its card's sha256 (here and on every actor); False
            (``--no-verify``) loads a user's own edited checkpoint, and the job is keyed by the file's own sha256.

    Returns:
        :class:`PredictionResult` equal to :func:`lesion.infer.engine.predict`'s on the same inputs.
    """
    import pandas as pd
    import ray
    import ray.data

    if actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {actors}.")
    if not records:
        raise ConfigError("Nothing to predict: the data set has no images.")
    tta = check_tta(tta)
    check_merge(merge)
    tta_merge = check_merge(tta_merge or merge)
    cards = []
    for n in model_names:
        net, card = load_model(n, task=CLASSIFIER_TASKS, verify=verify)
        digest = getattr(net, "weights_sha256", None)  # the file's own sha256: what the shards were computed by
        if digest and digest != card.sha256:
            card = card.replace(provenance=dataclasses.replace(card.provenance, sha256=digest))
        cards.append(card)
    key = _job_key(cards, records, tta)
    work = Path(work_dir) if work_dir is not None else cache_dir() / "ray_jobs" / key
    work.mkdir(parents=True, exist_ok=True)
    shards = [list(range(s, min(s + SHARD_IMAGES, len(records)))) for s in range(0, len(records), SHARD_IMAGES)]
    todo = [k for k in range(len(shards)) if not (work / f"shard-{k:05d}.parquet").is_file()]
    started = False
    t0 = time.perf_counter()
    if todo:
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            else:
                init_local_ray(num_cpus=num_cpus)  # its processes listen on 127.0.0.1 only
            started = True
        try:
            gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if ray.cluster_resources().get("GPU") else 0.0)
            rows = [{"shard": k, "rows": json.dumps([
                {"index": i, "id": records[i].id, "path": str(records[i].image_path),
                 "meta": {m: v for m, v in dict(records[i].meta or {}).items() if m in ("age", "sex", "site")}}
                for i in shards[k]])} for k in todo]
            ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
            out = ds.map_batches(
                ShardPredictor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=int(actors)),
                fn_constructor_kwargs={"names": [str(n) for n in model_names], "tta": tta,
                                       "work": str(work), "device": "cuda" if gpus else "cpu", "verify": verify},
                num_gpus=gpus, num_cpus=1 if not gpus else 0)
            done = len(records) - sum(len(shards[k]) for k in todo)
            for row in out.iter_rows():
                done += int(row["n"])
                if progress is not None:
                    progress(done, len(records))
        finally:
            if started:
                ray.shutdown()
    frames = [pd.read_parquet(work / f"shard-{k:05d}.parquet") for k in range(len(shards))]
    df = pd.concat(frames, ignore_index=True).sort_values("index").reset_index(drop=True)
    if list(df["index"]) != list(range(len(records))):
        raise ConfigError(f"The shard files in {work} do not cover the data set; delete the folder and rerun.")
    k, views = len(cards[0].classes) or 1, n_views(tta)
    names = unique_names([c.name or "model" for c in cards])  # as the actors' members name themselves
    logits = {n: np.stack([df[[f"{n}:{v}:{j}" for j in range(k)]].to_numpy(np.float32) for v in range(views)])
              for n in names}
    ms = (time.perf_counter() - t0) * 1000.0 / len(records)
    return merge_predictions(logits, list(df["id"]), cards[0].classes, cards[0].multilabel, tta, merge, tta_merge,
                             f"ray ({'cluster ' + address if address else 'local'})", ms)
