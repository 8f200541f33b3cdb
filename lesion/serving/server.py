"""``lesion serve``: a Ray Serve application that serves the chosen checkpoints over HTTP.

One deployment per model loads its checkpoint once (on the GPU when the machine has one: ``num_gpus`` is a
fraction, so several models share one GPU) and batches concurrent requests with ``serve.batch``; a FastAPI
ingress validates requests and merges the members. Routes:

* ``GET  /health``  -> ``{"ok", "device", "models"}``
* ``GET  /models``  -> ``{"models": [card, …]}`` (the cards as stored, schema 2)
* ``POST /predict`` -> images (base64 PNG/JPEG) + metadata + TTA + merge -> per-member and merged probabilities
* ``POST /explain`` -> one image + method(s) + class -> CAM heatmaps (and the attention map of multi-task models)

It binds 127.0.0.1 unless told otherwise; another address needs ``LESION_SERVE_TOKEN``, which every request must
then carry (``Authorization: Bearer <token>``; also checked on 127.0.0.1 when set). Requests have size limits
(:mod:`lesion.serving.protocol`); models are named, never given as paths. A bad request gets a 4xx with a
one-line reason.

(No ``from __future__ import annotations`` in this file: FastAPI reads the routes' ``Request`` annotations
when they are defined, inside :func:`build_app`.)
"""

import argparse
import asyncio
import hmac
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lesion.device import pick_device
from lesion.errors import ConfigError, LesionError
from lesion.explain.agreement import explain_image
from lesion.explain.cam import METHODS
from lesion.infer.engine import predict as engine_predict
from lesion.infer.ensemble import MERGE_MODES, check_merge, merge_members
from lesion.infer.tta import TTA_NAMES, tta_transforms
from lesion.serving.protocol import (
    MAX_BODY_BYTES,
    MAX_IMAGES,
    check_metadata,
    decode_image,
    encode_array,
)
from lesion.weights import list_weights
from lesion.zoo import CLASSIFIER_TASKS, load_model, read_model_card

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """One ``lesion serve`` application."""

    models: tuple[str, ...]  # shipped names (or names in $LESION_WEIGHTS_DIR) of classifiers to serve
    host: str = "127.0.0.1"  # address to bind; another than 127.0.0.1 needs LESION_SERVE_TOKEN
    port: int = 8000
    device: str = "auto"  # where the models run: auto (CUDA when present), cpu, cuda
    max_batch_size: int = 32  # images per batched forward pass of one model
    batch_wait_ms: float = 5.0  # how long a deployment waits to fill a batch
    token: str | None = None  # required on every request when set (default: $LESION_SERVE_TOKEN)


def check_config(cfg: ServeConfig) -> ServeConfig:
    """Validate before anything starts (names exist and are classifiers, port, token rule).

    Raises:
        ConfigError / CheckpointError: one readable line.
    """
    if not cfg.models:
        raise ConfigError("lesion serve needs at least one --models name.")
    for name in cfg.models:
        if os.sep in name or "/" in name:
            raise ConfigError(f"--models takes checkpoint names, not paths ('{name}'); set LESION_WEIGHTS_DIR "
                              "to serve another folder.")
        read_model_card(name, task=CLASSIFIER_TASKS)
    if not 1 <= int(cfg.port) <= 65535:
        raise ConfigError(f"--port must be 1..65535, got {cfg.port}.")
    if cfg.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be >= 1, got {cfg.max_batch_size}.")
    token = cfg.token if cfg.token is not None else os.environ.get("LESION_SERVE_TOKEN") or None
    if cfg.host not in LOCAL_HOSTS and not token:
        raise ConfigError(f"Binding {cfg.host} exposes the models to the network: set LESION_SERVE_TOKEN "
                          "(clients send it as 'Authorization: Bearer <token>'), or bind 127.0.0.1.")
    return ServeConfig(**{**cfg.__dict__, "token": token})


def _gpus_per_model(n_models: int, device: str) -> float:
    """GPU share of one deployment: the machine's GPUs split over the models (0 without a GPU)."""
    if not device.startswith("cuda"):
        return 0.0
    import torch

    n = torch.cuda.device_count()
    return 0.0 if n == 0 else min(1.0, n / max(1, n_models))


def build_app(cfg: ServeConfig):
    """The Ray Serve application (``serve.run(build_app(cfg))``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    device = pick_device(cfg.device)
    gpus = _gpus_per_model(len(cfg.models), device)
    api = FastAPI(title="lesion-lab model server")

    @serve.deployment(ray_actor_options={"num_cpus": 0, "num_gpus": gpus}, max_ongoing_requests=64)
    class ModelDeployment:
        """One checkpoint, loaded once; concurrent predict calls are batched into one engine call per TTA."""

        def __init__(self, name: str, device: str):
            import torch

            torch.set_num_threads(max(1, int(os.environ.get("LESION_SERVE_THREADS", "1"))))
            self.model, self.card = load_model(name, device=device, task=CLASSIFIER_TASKS)
            self.device = device

        @serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_ms / 1000.0)
        async def predict(self, requests: list[tuple[list, list, str, str]]) -> list[np.ndarray]:
            # requests with the same TTA go through the engine together (one forward per batch of views)
            out: list[np.ndarray | None] = [None] * len(requests)
            groups: dict[tuple[str, str], list[int]] = {}
            for i, (_, _, tta, tta_merge) in enumerate(requests):
                groups.setdefault((tta, tta_merge), []).append(i)
            for (tta, tta_merge), idx in groups.items():
                items = [pair for i in idx for pair in zip(requests[i][0], requests[i][1])]
                res = engine_predict([(self.model, self.card)], items, tta=tta, merge=tta_merge,
                                     device=self.device)
                probs = next(iter(res.member_probs.values()))
                start = 0
                for i in idx:
                    n = len(requests[i][0])
                    out[i] = probs[start:start + n]
                    start += n
            return out  # type: ignore[return-value]

        def explain(self, image: np.ndarray, meta: dict, methods: list[str], class_index: int | None) -> dict:
            r = explain_image(self.model, self.card, image, meta, None, methods, class_index)
            maps = {m: encode_array(h.astype(np.float16)) for m, h in r["heats"].items()}
            return {"maps": maps, "attention": encode_array(r["attention"].astype(np.float16))
                    if r.get("attention") is not None else None,
                    "logits": [float(v) for v in np.asarray(r["logits"]).ravel()], "class_index": r["class_index"]}

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    @serve.ingress(api)
    class Ingress:
        def __init__(self, handles: dict, cards: dict, token: str | None, device: str):
            self.handles, self.cards, self.token, self.device = handles, cards, token, device

        def _refused(self, request: Request) -> JSONResponse | None:
            if self.token:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given, f"Bearer {self.token}"):
                    return JSONResponse({"error": "missing or wrong token (Authorization: Bearer …)"}, 401)
            size = int(request.headers.get("content-length") or 0)
            if size > MAX_BODY_BYTES:
                return JSONResponse({"error": f"request of {size} bytes is over the {MAX_BODY_BYTES}-byte limit"}, 413)
            return None

        @api.get("/health")
        async def health(self, request: Request):
            refused = self._refused(request)
            return refused or {"ok": True, "device": self.device, "models": sorted(self.handles)}

        @api.get("/models")
        async def models(self, request: Request):
            refused = self._refused(request)
            return refused or {"models": [self.cards[n] for n in sorted(self.cards)]}

        async def _body(self, request: Request) -> dict | JSONResponse:
            refused = self._refused(request)
            if refused:
                return refused
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                return JSONResponse({"error": f"request over the {MAX_BODY_BYTES}-byte limit"}, 413)
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"error": "the body is not JSON"}, 400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"}, 400)
            return body

        def _models(self, names: Any) -> list[str]:
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise LesionError("'models' must be a non-empty list of model names.")
            unknown = [n for n in names if n not in self.handles]
            if unknown:
                raise LesionError(f"unknown model(s) {', '.join(unknown)}; this server has {', '.join(sorted(self.handles))}.")
            return names

        @api.post("/predict")
        async def predict(self, request: Request):
            body = await self._body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                names = self._models(body.get("models"))
                images = body.get("images")
                if not isinstance(images, list) or not images:
                    raise LesionError("'images' must be a non-empty list of base64 images.")
                if len(images) > MAX_IMAGES:
                    raise LesionError(f"{len(images)} images in one request; the limit is {MAX_IMAGES}.")
                arrays = [decode_image(im, i) for i, im in enumerate(images)]
                metas = check_metadata(body.get("metadata"), len(arrays))
                tta = str(body.get("tta", "none"))
                tta_transforms(tta)
                merge = check_merge(str(body.get("merge", "mean_prob")))
                tta_merge = check_merge(str(body.get("tta_merge") or merge))
                classes = {tuple(self.cards[n]["classes"]) for n in names}
                if len(classes) > 1:
                    raise LesionError("the models predict different classes; combine only models of one target.")
            except LesionError as e:
                return JSONResponse({"error": str(e)}, 422 if "unknown model" not in str(e) else 404)
            t0 = time.perf_counter()
            parts = await asyncio.gather(*[self.handles[n].predict.remote((arrays, metas, tta, tta_merge))
                                           for n in names])
            member = {n: np.asarray(p, np.float64) for n, p in zip(names, parts)}
            multilabel = bool(self.cards[names[0]].get("multilabel"))
            probs = merge_members(list(member.values()), merge, multilabel) if len(names) > 1 else parts[0]
            ms = (time.perf_counter() - t0) * 1000.0 / len(arrays)
            ids = body.get("ids") or [f"image_{i:05d}" for i in range(len(arrays))]
            return {"ids": list(ids), "classes": list(self.cards[names[0]]["classes"]),
                    "probs": np.asarray(probs, np.float64).tolist(),
                    "member_probs": {n: p.tolist() for n, p in member.items()},
                    "device": self.device, "ms_per_image": ms, "tta": tta, "merge": merge, "tta_merge": tta_merge}

        @api.post("/explain")
        async def explain(self, request: Request):
            body = await self._body(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                name = self._models([body.get("model")])[0]
                image = decode_image(body.get("image") or "", 0)
                meta = check_metadata([body.get("metadata")], 1)[0]
                methods = body.get("methods") or ["gradcam"]
                if not isinstance(methods, list) or any(m not in METHODS for m in methods):
                    raise LesionError(f"'methods' must be a list of {', '.join(METHODS)}.")
                ci = body.get("class_index")
                if ci is not None and not isinstance(ci, int):
                    raise LesionError("'class_index' must be an integer or null.")
            except LesionError as e:
                return JSONResponse({"error": str(e)}, 404 if "unknown model" in str(e) else 422)
            return await self.handles[name].explain.remote(image, meta, methods, ci)

    handles = {n: ModelDeployment.options(name=f"model-{n}").bind(n, device) for n in cfg.models}
    cards = {c.name: c.to_dict() for c in list_weights() if c.name in cfg.models}
    return Ingress.bind(handles, cards, cfg.token, device)


def start(cfg: ServeConfig, num_cpus: int | None = None):
    """Start Ray (local instance unless ``RAY_ADDRESS`` is set), Serve on ``cfg.host:cfg.port`` and the app.
    Returns the app handle; :func:`stop` shuts it down."""
    import ray
    from ray import serve

    cfg = check_config(cfg)
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    serve.start(http_options={"host": cfg.host, "port": int(cfg.port)})
    return serve.run(build_app(cfg), name="lesion", route_prefix="/")


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lesion serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="comma-separated checkpoint names (shipped or in $LESION_WEIGHTS_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s; others need LESION_SERVE_TOKEN)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-batch-size", type=int, default=32, help="images per batched forward of one model")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a model waits to fill a batch")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``lesion serve --models A,B [--host H --port P]``: serve until interrupted."""
    a = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = ServeConfig(models=tuple(n.strip() for n in a.models.split(",") if n.strip()), host=a.host,
                      port=a.port, device=a.device, max_batch_size=a.max_batch_size, batch_wait_ms=a.batch_wait_ms)
    start(check_config(cfg))
    print(f"lesion serve: {', '.join(cfg.models)} at http://{cfg.host}:{cfg.port} (Ctrl-C stops)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
    return 0


__all__ = ["MERGE_MODES", "TTA_NAMES", "ServeConfig", "build_app", "check_config", "main", "start", "stop"]
