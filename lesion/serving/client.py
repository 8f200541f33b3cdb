"""The ``remote`` backend: a client of ``lesion serve`` that returns the same :class:`PredictionResult`.

Images are read here and sent as lossless PNG, in chunks of at most :data:`MAX_IMAGES`; the server runs the
ensemble x TTA and merges the members. Before predicting, the client checks that the server's checkpoints are
the ones the caller's cards describe (same sha256), so a remote score is never silently another model's. A
server that is down, refuses the token or rejects a request raises :class:`ServerError` with one readable line.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.errors import LesionError
from lesion.infer.results import PredictionResult, as_items
from lesion.serving.protocol import MAX_IMAGES, decode_array, encode_image, predict_request

Progress = Callable[[int, int], None]


class ServerError(LesionError):
    """The model server could not be reached, refused the request, or answered with an error.

    ``status`` is the HTTP status of an answer with an error (401: the token was refused), None when the server
    could not be reached at all.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def refused_token(self) -> bool:
        """True when the server answered 401: a missing or wrong ``LESION_SERVE_TOKEN``."""
        return self.status == 401


class RemoteClient:
    """Talk to a ``lesion serve`` application.

    Args:
        url: e.g. ``http://127.0.0.1:8000``.
        token: ``LESION_SERVE_TOKEN`` of the server (default: that environment variable).
        timeout: seconds per HTTP request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        if not url.startswith(("http://", "https://")):
            raise ServerError(f"Server URL must start with http:// or https://, got '{url}'.")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("LESION_SERVE_TOKEN") or None
        self.timeout = float(timeout)

    def _call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                reason = json.loads(e.read()).get("error") or e.reason
            except ValueError:
                reason = e.reason
            raise ServerError(f"{self.url}{path}: {e.code} {reason}", status=e.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerError(f"Cannot reach the model server at {self.url} ({reason}).") from None

    def health(self) -> dict:
        """``{"ok", "device", "models"}``."""
        return self._call("/health")

    def cards(self) -> list[ModelCard]:
        """The served models' cards."""
        return [ModelCard.from_dict(d) for d in self._call("/models")["models"]]

    def check_same_weights(self, cards: Sequence[ModelCard]) -> None:
        """Refuse when the server lacks a model or serves other weights under its name.

        Raises:
            ServerError: naming the model.
        """
        served = {c.name: c for c in self.cards()}
        for c in cards:
            if c.name not in served:
                raise ServerError(f"The server at {self.url} does not serve '{c.name}' "
                                  f"(it serves {', '.join(sorted(served)) or 'nothing'}).")
            if c.sha256 and served[c.name].sha256 and c.sha256 != served[c.name].sha256:
                raise ServerError(f"The server's '{c.name}' has other weights than the local card "
                                  f"(sha256 {served[c.name].sha256[:12]}… vs {c.sha256[:12]}…).")

    def predict(self, cards: Sequence[ModelCard], data: Any, tta: str = "d4", merge: str = "mean_prob",
                tta_merge: str | None = None, progress: Progress | None = None,
                chunk: int = MAX_IMAGES) -> PredictionResult:
        """The ensemble's prediction computed by the server, as a local :class:`PredictionResult`."""
        if not cards:
            raise ServerError("No models given.")
        self.check_same_weights(cards)
        items = as_items(data)
        names = [c.name for c in cards]
        probs, member, ids = [], {n: [] for n in names}, []
        t0, device = time.perf_counter(), "remote"
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            body = predict_request(names, [it.load() for it in part], [it.meta for it in part],
                                   [it.id for it in part], tta, merge, tta_merge)
            out = self._call("/predict", body)
            probs.append(np.asarray(out["probs"], np.float64))
            for n in names:
                member[n].append(np.asarray(out["member_probs"][n], np.float64))
            ids += [it.id for it in part]
            device = f"{out['device']} at {self.url}"
            if progress is not None:
                progress(min(start + chunk, len(items)), len(items))
        ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(items))
        return PredictionResult(np.concatenate(probs), {n: np.concatenate(v) for n, v in member.items()}, ids,
                                tuple(cards[0].classes), device, ms, tta, merge, tta_merge or merge)

    def explain(self, model: str, image: np.ndarray, metadata: dict | None = None,
                methods: Sequence[str] = ("gradcam",), class_index: int | None = None) -> dict[str, Any]:
        """CAM heatmaps ``{method: float32 [S, S]}`` (and ``attention``) of one image, computed by the server."""
        out = self._call("/explain", {"model": model, "image": encode_image(image), "metadata": metadata or {},
                                      "methods": list(methods), "class_index": class_index})
        maps = {m: decode_array(v).astype(np.float32) for m, v in out["maps"].items()}
        att = out.get("attention")
        return {"heats": maps, "attention": decode_array(att).astype(np.float32) if att else None,
                "logits": np.asarray(out["logits"]), "class_index": out["class_index"]}
