"""``lesion serve``: a Ray Serve application that serves the chosen checkpoints over HTTP.

One deployment per model loads its checkpoint once (on the GPU when the machine has one: ``num_gpus`` is a
fraction, so several models share one GPU) and batches concurrent requests with ``serve.batch``; a FastAPI
ingress validates requests and merges the members. Routes:

* ``GET  /health``  -> ``{"ok", "device", "models"}``
* ``GET  /models``  -> ``{"models": [card, …]}`` (the cards as stored, schema 2)
* ``POST /predict`` -> images (base64 PNG/JPEG) + metadata + TTA (default d4, as everywhere) + merge ->
  per-member and merged probabilities and each member's raw logits of every view (``view_logits``)
* ``POST /explain`` -> one image + method(s) + class -> CAM heatmaps (and the attention map of multi-task models)

It binds 127.0.0.1 unless told otherwise; another address needs ``LESION_SERVE_TOKEN``, which every request must
then carry (``Authorization: Bearer <token>``; also checked on 127.0.0.1 when set, on every route; the API
documentation routes are off then). The Ray processes it starts listen on 127.0.0.1 only
(:mod:`lesion.serving.local_ray`). Request bodies are validated against a schema
(:mod:`lesion.serving.protocol`: types, lengths, ranges, one id and one metadata object per image, metadata under
the data loaders' rule); models are named, never given as paths. A client's mistake gets a 4xx with a one-line
reason (401 for any token problem); a server fault is logged with its traceback and answered 500 with one line.

(No ``from __future__ import annotations`` in this file: FastAPI reads the routes' ``Request`` annotations
when they are defined, inside :func:`build_app`.)
"""

import argparse
import asyncio
import errno
import hmac
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lesion.cliutil import OneLineParser
from lesion.device import pick_device
from lesion.errors import ConfigError, DataError, LesionError
from lesion.explain.agreement import explain_image
from lesion.explain.cam import METHODS
from lesion.infer.ensemble import MERGE_MODES, check_merge, merge_predictions
from lesion.infer.torch_member import TorchMember
from lesion.infer.tta import DEFAULT_TTA, TTA_NAMES, check_tta
from lesion.serving.backends import predict as engine_predict
from lesion.serving.local_ray import init_local_ray, keep_replica_grpc_on_loopback
from lesion.serving.protocol import (
    MAX_BODY_BYTES,
    TOKEN_HEADER,
    ExplainBody,
    PredictBody,
    decode_image,
    encode_array,
    loader_metadata,
    parse_body,
)
from lesion.weights import resolve_weights, verify_weights, weights_sha256
from lesion.zoo import CLASSIFIER_TASKS, load_model, read_model_card

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger("ray.serve")


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
    verify: bool = True  # check each checkpoint against its card's sha256 before serving (False: --no-verify)


def check_config(cfg: ServeConfig) -> ServeConfig:
    """Validate before anything starts (names exist and are classifiers, port, token rule).

    Raises:
        ConfigError / CheckpointError: one readable line.
    """
    if not cfg.models:
        raise ConfigError("lesion serve needs at least one --models name.")
    seen: dict[str, str] = {}
    for name in cfg.models:  # shipped names, or paths of the operator's own (e.g. `lesion import`ed) models
        card = read_model_card(name, task=CLASSIFIER_TASKS)
        if card.name in seen:
            raise ConfigError(f"--models {seen[card.name]} and {name} are both called '{card.name}'; clients name "
                              "models by their card's name, so serve one of them.")
        seen[card.name] = name
        if cfg.verify:  # here, in one line, rather than as a replica that fails to start
            verify_weights(resolve_weights(name)[0], card)
    if not 1 <= int(cfg.port) <= 65535:
        raise ConfigError(f"--port must be 1..65535, got {cfg.port}.")
    if cfg.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size must be >= 1, got {cfg.max_batch_size}.")
    token = cfg.token if cfg.token is not None else os.environ.get("LESION_SERVE_TOKEN") or None
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        raise ConfigError("LESION_SERVE_TOKEN must be printable ASCII without spaces (clients send it in an HTTP "
                          "header).")
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


class RequestError(Exception):
    """What the client got wrong (or a server fault, 500), answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _token_ok(headers: Sequence[tuple[bytes, bytes]], token: str) -> bool:
    """The request's ``Authorization`` header equals ``Bearer <token>``, compared in constant time as bytes (a
    header of any bytes, non-ASCII included, is simply wrong)."""
    expected = b"Bearer " + token.encode("utf-8")
    given = [v for k, v in headers if k.lower() == TOKEN_HEADER.encode()]
    return len(given) == 1 and hmac.compare_digest(given[0], expected)


def _one_line(e: BaseException) -> str:
    """The first line of an exception's message (a Ray task error carries the remote traceback after it)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        e = cause
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _status_of(e: BaseException) -> int:
    """HTTP status of a library error raised while answering: the client's data or options (422), else a server
    fault (500: a checkpoint that does not load, a model that outputs NaN)."""
    cause = getattr(e, "cause", None)
    e = cause if isinstance(cause, BaseException) else e
    return 422 if isinstance(e, (DataError, ConfigError)) else 500


def install_edge(api: Any, token: str | None) -> None:
    """The checks every request passes before a route sees it, on the FastAPI app ``api``: the token (401, every
    route), the Content-Length (400 / 413), and the one shape of every error answer, ``{"error": one line}``: a
    :class:`RequestError` or library error as its status and message, anything else as a server fault (logged
    with its traceback, answered 500)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status, headers=headers)

    @api.middleware("http")
    async def edge(request: Request, call_next):
        if token and not _token_ok(request.scope.get("headers", ()), token):
            return error(401, "missing or wrong token (send 'Authorization: Bearer <LESION_SERVE_TOKEN>')")
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error(400, "the Content-Length header is not a number")
            if int(length) > MAX_BODY_BYTES:
                return error(413, f"request of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
        try:
            return await call_next(request)
        except RequestError as e:
            return error(e.status, str(e))
        except LesionError as e:
            status = _status_of(e)
            if status >= 500:
                log.error("lesion serve: %s %s failed", request.method, request.url.path, exc_info=e)
            return error(status, _one_line(e))
        except Exception as e:  # noqa: BLE001  (a server fault: the traceback goes to the log, one line to the client)
            log.error("lesion serve: %s %s failed", request.method, request.url.path, exc_info=e)
            return error(500, f"server error ({type(e).__name__}: {_one_line(e)}); the traceback is in the server log")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))


def build_app(cfg: ServeConfig):
    """The Ray Serve application (``serve.run(build_app(cfg))``).

    Every request is checked at the edge: the token first (401 for any authentication problem, on every route,
    the documentation routes included, which are off when a token is set), then the size (413), then the body
    against :class:`~lesion.serving.protocol.PredictBody` / :class:`~lesion.serving.protocol.ExplainBody` (400
    not JSON, 422 a wrong field, 404 an unknown model). Metadata goes through the data loaders' rule
    (:func:`~lesion.serving.protocol.loader_metadata`). Anything else that fails is a server fault: logged with
    its traceback, answered 500 with a one-line reason.
    """
    from fastapi import FastAPI, Request
    from ray import serve

    device = pick_device(cfg.device)
    gpus = _gpus_per_model(len(cfg.models), device)
    token = cfg.token
    docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if token else {}
    api = FastAPI(title="lesion-lab model server", **docs)

    install_edge(api, token)

    @serve.deployment(ray_actor_options={"num_cpus": 0, "num_gpus": gpus}, max_ongoing_requests=64)
    class ModelDeployment:
        """One checkpoint, loaded once; concurrent predict calls are batched into one engine call per TTA."""

        def __init__(self, name: str, device: str, verify: bool = True):
            import torch

            keep_replica_grpc_on_loopback()  # before Serve starts this replica's gRPC server
            torch.set_num_threads(max(1, int(os.environ.get("LESION_SERVE_THREADS", "1"))))
            self.model, self.card = load_model(name, device=device, task=CLASSIFIER_TASKS, verify=verify)
            self.member = TorchMember(self.model, self.card)
            self.device = device

        @serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_ms / 1000.0)
        async def predict(self, requests: list[tuple[list, list, str]]) -> list[np.ndarray]:
            # requests with the same TTA go through the one entry point together (one forward per batch of
            # views); each gets back its images' raw logits of every view [V, n, K], merged by the ingress
            out: list[np.ndarray | None] = [None] * len(requests)
            groups: dict[str, list[int]] = {}
            for i, (_, _, tta) in enumerate(requests):
                groups.setdefault(tta, []).append(i)
            for tta, idx in groups.items():
                items = [pair for i in idx for pair in zip(requests[i][0], requests[i][1])]
                res = engine_predict([self.member], items, tta=tta, device=self.device)
                z = res.view_logits[self.member.name]
                start = 0
                for i in idx:
                    n = len(requests[i][0])
                    out[i] = z[:, start:start + n]
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
        def __init__(self, handles: dict, cards: dict, device: str):
            keep_replica_grpc_on_loopback()
            self.handles, self.cards, self.device = handles, cards, device

        @api.get("/health")
        async def health(self):
            return {"ok": True, "device": self.device, "models": sorted(self.handles)}

        @api.get("/models")
        async def models(self):
            return {"models": [self.cards[n] for n in sorted(self.cards)]}

        async def _body(self, request: Request, schema: type) -> Any:
            """The body read up to :data:`MAX_BODY_BYTES` (a body without Content-Length is counted as it comes)
            and validated against ``schema``."""
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise RequestError(413, f"request over the {MAX_BODY_BYTES}-byte limit")
                chunks.append(chunk)
            try:
                return parse_body(b"".join(chunks), schema)
            except DataError as e:
                raise RequestError(400 if "not valid JSON" in str(e) else 422, str(e)) from None

        def _known(self, names: Sequence[str]) -> list[str]:
            unknown = [n for n in names if n not in self.handles]
            if unknown:
                raise RequestError(404, f"unknown model(s) {', '.join(unknown)}; this server has "
                                        f"{', '.join(sorted(self.handles))}.")
            return list(names)

        @api.post("/predict")
        async def predict(self, request: Request):
            body = await self._body(request, PredictBody)
            names = self._known(body.models)
            try:
                tta = check_tta(body.tta or DEFAULT_TTA)
                merge = check_merge(body.merge)
                tta_merge = check_merge(body.tta_merge or merge)
            except ConfigError as e:
                raise RequestError(422, str(e)) from None
            if len({tuple(self.cards[n]["classes"]) for n in names}) > 1:
                raise RequestError(422, "the models predict different classes; combine only models of one target.")
            arrays = []
            for i, im in enumerate(body.images):
                try:
                    arrays.append(decode_image(im, i))
                except DataError as e:
                    raise RequestError(422, _one_line(e)) from None
            cleaned = [loader_metadata(m, i) for i, m in enumerate(body.metadata or [None] * len(arrays))]
            metas, notes = [m for m, _ in cleaned], [n for _, n in cleaned if n]
            t0 = time.perf_counter()
            parts = await asyncio.gather(*[self.handles[n].predict.remote((arrays, metas, tta)) for n in names])
            ids = body.ids or [f"image_{i:05d}" for i in range(len(arrays))]
            res = merge_predictions({n: np.asarray(p, np.float64) for n, p in zip(names, parts)}, ids,
                                    self.cards[names[0]]["classes"], bool(self.cards[names[0]].get("multilabel")),
                                    tta, merge, tta_merge, self.device,
                                    (time.perf_counter() - t0) * 1000.0 / len(arrays))
            return {"ids": list(res.ids), "classes": list(res.classes), "probs": res.probs.tolist(),
                    "member_probs": {n: p.tolist() for n, p in res.member_probs.items()},
                    "view_logits": {n: z.tolist() for n, z in res.view_logits.items()},
                    "device": self.device, "ms_per_image": res.ms_per_image, "tta": tta, "merge": merge,
                    "tta_merge": tta_merge, "notes": notes}

        @api.post("/explain")
        async def explain(self, request: Request):
            body = await self._body(request, ExplainBody)
            name = self._known([body.model])[0]
            bad = [m for m in body.methods if m not in METHODS]
            if bad or len(set(body.methods)) != len(body.methods):
                raise RequestError(422, f"methods: each of {', '.join(METHODS)} at most once"
                                        + (f", not {', '.join(map(repr, bad))}." if bad else "."))
            k = len(self.cards[name].get("classes") or []) or 1
            k = 2 if k == 1 else k  # a one-logit head explains class 1 (the logit) and class 0 (its negation)
            if body.class_index is not None and body.class_index >= k:
                raise RequestError(422, f"class_index: {body.class_index} is out of range; '{name}' has {k} "
                                        f"class{'es' if k > 1 else ''} (0..{k - 1}).")
            try:
                image = decode_image(body.image, 0)
            except DataError as e:
                raise RequestError(422, _one_line(e)) from None
            meta, note = loader_metadata(body.metadata, 0)
            out = await self.handles[name].explain.remote(image, meta, list(body.methods), body.class_index)
            return {**out, "notes": [note] if note else []}

    served = {read_model_card(ref).name: ref for ref in cfg.models}  # requests name models by the card's name
    handles = {n: ModelDeployment.options(name=f"model-{n}").bind(ref, device, cfg.verify) for n, ref in served.items()}
    cards = {n: read_model_card(ref).replace(path=None).to_dict() for n, ref in served.items()}
    if not cfg.verify:  # the cards say which weights are served, so a client never takes them for the card's
        for name, d in cards.items():
            d["provenance"] = {**dict(d.get("provenance") or {}),
                               "sha256": weights_sha256(resolve_weights(served[name])[0])}
    return Ingress.bind(handles, cards, device)


def check_port_free(host: str, port: int) -> None:
    """Refuse, before Ray starts, an address that another process already listens on.

    Raises:
        ConfigError: naming the address.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server binds (TIME_WAIT is fine)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            what = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror or e})"
            raise ConfigError(f"--port {port}: {host}:{port} {what}; choose another --port (or stop the server "
                              "that holds it).") from None


def start(cfg: ServeConfig, num_cpus: int | None = None):
    """Start Ray (a local instance listening on 127.0.0.1 only, :func:`lesion.serving.local_ray.init_local_ray`,
    unless ``RAY_ADDRESS`` is set), Serve on ``cfg.host:cfg.port`` and the app. Returns the app handle;
    :func:`stop` shuts it down."""
    import ray
    from ray import serve

    cfg = check_config(cfg)
    check_port_free(cfg.host, cfg.port)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False, ignore_reinit_error=True)
        else:
            init_local_ray(num_cpus=num_cpus)
    serve.start(http_options={"host": cfg.host, "port": int(cfg.port)})
    return serve.run(build_app(cfg), name="lesion", route_prefix="/")


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lesion serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="comma-separated checkpoint names (shipped or in $LESION_WEIGHTS_DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s; others need LESION_SERVE_TOKEN)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-batch-size", type=int, default=32, help="images per batched forward of one model")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a model waits to fill a batch")
    p.add_argument("--no-verify", action="store_true",
                   help="serve a checkpoint whose bytes no longer match its card's sha256 (your own edited checkpoint; "
                        "/models then gives the file's own sha256)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``lesion serve --models A,B [--host H --port P]``: serve until interrupted."""
    a = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = ServeConfig(models=tuple(n.strip() for n in a.models.split(",") if n.strip()), host=a.host,
                      port=a.port, device=a.device, max_batch_size=a.max_batch_size, batch_wait_ms=a.batch_wait_ms,
                      verify=not a.no_verify)
    start(check_config(cfg))
    print(f"lesion serve: {', '.join(cfg.models)} at http://{cfg.host}:{cfg.port} (Ctrl-C stops)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
    return 0


__all__ = ["MERGE_MODES", "TTA_NAMES", "ServeConfig", "build_app", "check_config", "main", "start", "stop"]
