"""The ``remote`` backend: a client of ``lesion serve`` that returns the same :class:`PredictionResult`.

Images are read here and sent as lossless PNG, in chunks of at most :data:`MAX_IMAGES`; the server runs the
ensemble x TTA and merges the members. Before predicting, the client checks that the server's checkpoints are
the ones the caller's cards describe (same sha256), so a remote score is never silently another model's. A
server that is down, refuses the token or rejects a request raises :class:`ServerError` with one readable line.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard
from lesion.errors import ConfigError, LesionError
from lesion.infer.members import Member, register_backend
from lesion.infer.results import _Item
from lesion.infer.tta import TTA
from lesion.serving.protocol import MAX_IMAGES, decode_array, encode_image, predict_request, wire_metadata

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

    def members(self, cards: Sequence[ModelCard]) -> list["RemoteMember"]:
        """One :class:`RemoteMember` per card, after checking the server serves those very weights."""
        if not cards:
            raise ServerError("No models given.")
        self.check_same_weights(cards)
        device = str(self.health().get("device") or "remote")  # where it runs, said even when answered from a cache
        return [RemoteMember(self, c, device) for c in cards]

    def explain(self, model: str, image: np.ndarray, metadata: dict | None = None,
                methods: Sequence[str] = ("gradcam",), class_index: int | None = None) -> dict[str, Any]:
        """CAM heatmaps ``{method: float32 [S, S]}`` (and ``attention``) of one image, computed by the server."""
        out = self._call("/explain", {"model": model, "image": encode_image(image), "metadata": wire_metadata(metadata),
                                      "methods": list(methods), "class_index": class_index})
        maps = {m: decode_array(v).astype(np.float32) for m, v in out["maps"].items()}
        att = out.get("attention")
        return {"heats": maps, "attention": decode_array(att).astype(np.float32) if att else None,
                "logits": np.asarray(out["logits"]), "class_index": out["class_index"]}


class RemoteMember(Member):
    """A model on a ``lesion serve`` server as an ensemble member: its card is the server's, its identity the
    server's address and the checkpoint's sha256, and :meth:`predict_all` sends the images (lossless PNG, in
    chunks of at most :data:`MAX_IMAGES`) and gets back the raw logits of every TTA view, which the local
    engine merges like any other member's. No gradients here (the server computes CAMs: ``/explain``)."""

    kind = "remote"

    def __init__(self, client: RemoteClient, card: ModelCard, device: str = "remote"):
        super().__init__(card, f"remote:{client.url}:sha256:{card.sha256 or card.name}")
        self.client = client
        self.uses_metadata = bool(card.uses_metadata)
        self.device = device

    @property
    def where(self) -> str:
        return f"{self.device} at {self.client.url}"

    def predict_all(self, items: Sequence[_Item], tta: TTA, progress: Progress | None = None) -> np.ndarray:
        parts = []
        for start in range(0, len(items), MAX_IMAGES):
            part = items[start:start + MAX_IMAGES]
            body = predict_request([self.name], [it.load() for it in part], [it.meta for it in part],
                                   [it.id for it in part], tta.name, "mean_prob", None)
            out = self._answer(self.client._call("/predict", body), len(part), tta)
            parts.append(out)
            if progress is not None:
                progress(min(start + MAX_IMAGES, len(items)), len(items))
        return np.concatenate(parts, axis=1)

    def _answer(self, out: dict, n: int, tta: TTA) -> np.ndarray:
        try:
            z = np.asarray(out["view_logits"][self.name], np.float32)
            self.device = str(out.get("device", "remote"))
        except (KeyError, TypeError, ValueError) as e:
            raise ServerError(f"{self.client.url}/predict answered without the view logits of '{self.name}' "
                              f"({type(e).__name__}); is it an older lesion serve?") from None
        k = len(self.classes) or 1
        if z.shape != (tta.views, n, k):
            raise ServerError(f"{self.client.url}/predict answered logits of shape {z.shape} for {n} images, "
                              f"{tta.views} views and {k} classes.")
        return z


def remote_members(pairs: Sequence[tuple[Any, ModelCard]], url: str | None = None, token: str | None = None,
                   **_: Any) -> list[RemoteMember]:
    """The ``remote`` backend: the cards of ``pairs`` (their models are not needed) served at ``url``."""
    if not url:
        raise ConfigError("The remote backend needs the server's URL (e.g. http://127.0.0.1:8000; LESION_BACKEND).")
    return RemoteClient(url, token).members([c for _, c in pairs])


register_backend("remote", remote_members)
