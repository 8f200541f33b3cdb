"""``lesion evaluate cls``: score a classifier ensemble with TTA over a data set, on any backend.

Example::

    lesion evaluate cls --models derm_cls_efficientnet_lite1_bce,derm_multitask_efficientnet_lite0 \\
        --tta d4 --merge mean_prob --data ../shared/data/PH2 --target melanoma --out ph2_preds.parquet

``--backend torch`` (default: this process, through the prediction cache), ``onnx`` (onnxruntime on the CPU),
``remote --url URL`` (a ``lesion serve`` server); ``--engine ray [--address ADDR] [--actors N]`` runs the same
evaluation as a Ray Data pipeline (a local Ray instance unless an address is given). The **last line** of stdout
is JSON: ``{"n", "auc", "auc_ci": [lo, hi], "members": {name: auc}, "device", "ms_per_image", "backend"}``.
"""
from __future__ import annotations

import sys
from typing import Any

from lesion.cliutil import json_line
from lesion.errors import ConfigError, unknown_option
from lesion.infer.evaluate import _parser as base_parser
from lesion.infer.evaluate import check_args, evaluate_classifiers, local_predictor, write_parquet
from lesion.infer.predictions import PredictionsMember
from lesion.serving.backends import BACKENDS
from lesion.serving.batch import ray_predict
from lesion.zoo import read_model_card

ENGINES = ("local", "ray")


def parser():
    p = base_parser()
    p.add_argument("--backend", default="torch", help=f"where the models run: {', '.join(BACKENDS)} (default %(default)s)")
    p.add_argument("--url", default=None, help="the model server of --backend remote (e.g. http://127.0.0.1:8000)")
    p.add_argument("--engine", default="local", help="local (this process) or ray (a Ray Data pipeline)")
    p.add_argument("--address", default=None, help="--engine ray: an existing Ray cluster (default: a local instance)")
    p.add_argument("--actors", type=int, default=1, help="--engine ray: predictor actors (default %(default)s)")
    p.add_argument("--no-verify", action="store_true",
                   help="load a checkpoint whose bytes no longer match its card's sha256 (your own edited checkpoint)")
    return p


def make_predictor(a) -> Any:
    """The predictor for :func:`evaluate_classifiers` that the options ask for (None: the default cached engine)."""
    if a.backend not in BACKENDS:
        raise unknown_option("backend", a.backend, BACKENDS)
    if a.engine not in ENGINES:
        raise unknown_option("engine", a.engine, ENGINES)
    if a.backend == "remote" and not a.url:
        raise ConfigError("--backend remote needs --url (the address of a `lesion serve` server).")
    if a.engine == "ray":
        if a.backend != "torch":
            raise ConfigError("--engine ray runs the PyTorch backend on its actors; drop --backend.")
        if a.actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {a.actors}.")
        def run_ray(members, dataset, tta, merge, batch_size=None, device="auto", progress=None):
            return ray_predict([m[1].path or m[1].name for m in members], dataset.records, tta=tta, merge=merge,
                               address=a.address, actors=a.actors, progress=progress, verify=not a.no_verify)

        return run_ray
    return local_predictor(lambda m: print(m, file=sys.stderr), use_cache=not a.no_cache, backend=a.backend,
                           url=a.url)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    a = parser().parse_args(argv)
    out = check_args(a)
    predictor = make_predictor(a)
    bar = tqdm(total=0, desc="images", file=sys.stderr, unit="img")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    names: list = [n.strip() for n in a.models.split(",") if n.strip()]
    if a.predictions:
        if a.engine == "ray":
            raise ConfigError("--engine ray runs checkpoints on its actors; a --predictions file needs no engine.")
        classes = [c.strip() for c in a.classes.split(",") if c.strip()] or (
            list(read_model_card(names[0]).classes) if names else ["melanoma"])
        columns = [c.strip() for c in a.columns.split(",") if c.strip()] or None
        for f in a.predictions:
            m = PredictionsMember(f, classes=classes, id_column=a.id_column, columns=columns,
                                  target=a.target or (read_model_card(names[0]).target if names else None))
            print(f"note: {m.note}", file=sys.stderr)
            names.append(m)
    try:
        df, summary = evaluate_classifiers(names, a.data, a.tta, a.merge, a.target, a.device, a.batch_size,
                                           not a.no_cache, progress, predictor=predictor, verify=not a.no_verify)
    finally:
        bar.close()
    summary["backend"] = a.backend if a.engine == "local" else f"ray ({a.actors} actors)"
    if out is not None:
        write_parquet(df, out)
        print(f"wrote {len(df)} predictions to {out}", file=sys.stderr)
    print(json_line(summary))  # NaN (an undefined AUC) prints null
    return 0
