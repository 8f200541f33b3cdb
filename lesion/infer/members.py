"""The one member protocol: anything that turns images into per-class logits.

A :class:`Member` is a shipped or imported PyTorch network (CPU or CUDA), an ONNX Runtime session
(:mod:`lesion.serving.onnx_backend`), a model on a ``lesion serve`` server (:mod:`lesion.serving.client`), or a
wrapper around any of them such as the prediction cache (:mod:`lesion.infer.cache`). Each carries

* its :class:`~lesion.card.ModelCard` and its own preprocessing, taken from ``card.preprocessing`` alone;
* ``identity``: what changes when its weights change (``sha256:<hex>`` of the checkpoint or state), the key of
  every cache;
* what it can do — ``gradients`` (a PyTorch module for CAMs: :attr:`TorchMember.module`), ``features`` (an
  embedding), ``uses_metadata`` (age / sex / site) — so callers ask the member, never its class;
* its forward over TTA views: :meth:`Member.forward_views` on one :class:`Batch` (images read once and
  preprocessed once per distinct preprocessing, shared by all members of an ensemble), or
  :meth:`Member.predict_all` for members that answer a whole data set at once (a cache hit, a remote server).

Backends are ways to build members: :func:`build_members` turns ``(model, card)`` pairs, member objects or
checkpoint names into members for a backend name registered with :func:`register_backend` (``torch`` here;
``onnx`` and ``remote`` by :mod:`lesion.serving.backends`, the way timm's models register themselves on import).
The PyTorch member (:mod:`lesion.infer.torch_member`) is kept apart so that this module, like the results,
imports no deep-learning framework (the model server's client builds on it).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from lesion.card import ModelCard, Preprocessing
from lesion.classify.metadata import encode_metadata
from lesion.errors import ConfigError, DataError, unknown_option
from lesion.infer.results import _Item
from lesion.infer.tta import TTA
from lesion.preprocess import prepare_batch

Progress = Callable[[int, int], None]


class Batch:
    """One batch of images shared by every member of an ensemble: read once, preprocessed once per distinct
    :class:`Preprocessing`, its TTA views built once per preprocessing and TTA."""

    def __init__(self, items: Sequence[_Item]):
        self.items = list(items)
        self.ids = [it.id for it in self.items]
        #: id -> one-line reason, for images that could not be read (their rows come out NaN, never a guess)
        self.errors: dict[str, str] = {}
        self.images = [self._load(it) for it in self.items]
        self.metas = [dict(it.meta or {}) for it in self.items]
        self._inputs: dict[Preprocessing, np.ndarray] = {}
        self._views: dict[tuple[Preprocessing, str], list] = {}
        self._meta = None

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, it: _Item) -> np.ndarray:
        try:
            return it.load()
        except DataError as e:  # unreadable, corrupt, over the pixel limit: this image only
            self.errors[it.id] = str(e)
            return np.zeros((8, 8, 3), np.uint8)  # a stand-in whose outputs are replaced by NaN

    def inputs(self, prep: Preprocessing) -> np.ndarray:
        """float32 ``[B, C, H, W]`` network inputs under ``prep`` (computed once)."""
        if prep not in self._inputs:
            self._inputs[prep] = prepare_batch(self.images, prep)
        return self._inputs[prep]

    def views(self, prep: Preprocessing, tta: TTA) -> list:
        """The ``V`` TTA views of :meth:`inputs` as torch tensors (computed once per preprocessing and TTA)."""
        import torch

        key = (prep, tta.name)
        if key not in self._views:
            self._views[key] = tta.augment(torch.from_numpy(self.inputs(prep)))
        return self._views[key]

    def meta(self):
        """Encoded metadata ``[B, D]`` (torch; all-"unknown" where a record has none)."""
        import torch

        if self._meta is None:
            self._meta = torch.from_numpy(np.stack([encode_metadata(m) for m in self.metas]))
        return self._meta


class Member:
    """What every member offers (see the module docstring). Subclasses implement :meth:`forward_views` (or
    :meth:`predict_all`)."""

    kind = "member"
    gradients = False  # a PyTorch module for CAMs (``module``)
    features = False  # penultimate features for an embedding (``embed``)
    uses_metadata = False

    def __init__(self, card: ModelCard, identity: str, name: str | None = None):
        self.card = card
        self.identity = identity
        self.name = name or card.name or "model"
        self.device = "cpu"

    @property
    def prep(self) -> Preprocessing:
        """The member's preprocessing: its card's, nothing else."""
        return self.card.preprocessing

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card.classes)

    @property
    def multilabel(self) -> bool:
        return bool(self.card.multilabel)

    @property
    def where(self) -> str:
        """Where its numbers are computed, for the page's "ran on" line."""
        return self.device

    def place(self, device: str) -> None:
        """Move to ``device`` before a run (members that run elsewhere ignore it)."""

    def predict_all(self, items: Sequence[_Item], tta: TTA, progress: Progress | None = None) -> np.ndarray | None:
        """Logits ``[V, N, K]`` of every item at once, or None to be run batch by batch (:meth:`forward_views`)."""
        return None

    def forward_views(self, batch: Batch, tta: TTA) -> np.ndarray:
        """Logits ``[V, B, K]`` (float32, on the CPU) of the batch's ``V`` TTA views."""
        raise NotImplementedError

    def computed(self, items: Sequence[_Item], tta: TTA, logits: np.ndarray) -> None:
        """Called with the member's logits once the engine has computed them (a cache stores them here)."""

    def notes(self) -> list[str]:
        """One-line notes of the last run (e.g. "from cache")."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.identity[:19]})"


class TensorMember(Member):
    """A member whose forward takes the preprocessed tensor (PyTorch, ONNX Runtime): views of one shape go
    through one forward pass together (``[V' * B, C, H, W]``)."""

    def forward_views(self, batch: Batch, tta: TTA) -> np.ndarray:
        import torch

        views = batch.views(self.prep, tta)
        meta = batch.meta() if self.uses_metadata else None
        out: list[np.ndarray | None] = [None] * len(views)
        groups: dict[tuple, list[int]] = {}
        for v, x in enumerate(views):
            groups.setdefault(tuple(x.shape), []).append(v)
        for idx in groups.values():
            x = torch.cat([views[v] for v in idx], dim=0) if len(idx) > 1 else views[idx[0]]
            m = meta.repeat(len(idx), 1) if meta is not None else None
            z = self.forward(x, m).reshape(len(idx), len(batch), -1)
            for j, v in enumerate(idx):
                out[v] = z[j]
        return np.stack(out)

    def forward(self, x, meta) -> np.ndarray:
        """Logits ``[n, K]`` float32 (numpy) of preprocessed inputs ``x`` ``[n, C, H, W]``."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------
# Building members: backends are ways to build them
# ----------------------------------------------------------------------------------------------------------
Builder = Callable[..., list[Member]]
_BACKENDS: dict[str, Builder] = {}


def register_backend(name: str, builder: Builder) -> None:
    """Register ``builder(pairs, **options) -> [Member]`` under a backend name (``lesion.serving`` registers
    ``onnx`` and ``remote``); ``pairs`` are ``(model or None, card)``."""
    _BACKENDS[name] = builder


def backend_names() -> tuple[str, ...]:
    """The registered backends, ``torch``, ``onnx``, ``remote`` first (whatever order they were imported in)."""
    known = ("torch", "onnx", "remote")
    return tuple(sorted(_BACKENDS, key=lambda n: (known.index(n) if n in known else len(known), n)))


def _pair(obj: Any) -> tuple[Any, ModelCard]:
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], ModelCard):
        return obj
    if isinstance(obj, ModelCard):
        return None, obj
    raise DataError(f"Cannot make an ensemble member of a {type(obj).__name__}: pass members, (model, card) "
                    "pairs or cards.")


def unique_names(names: Sequence[str]) -> list[str]:
    """Names made unique in order: the second ``a`` becomes ``a#2`` (an ensemble may hold one model twice)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def build_members(models: Sequence[Any], backend: str = "torch", **options: Any) -> list[Member]:
    """Members for ``backend`` from ``models``: :class:`Member` objects (kept as they are), ``(model, card)``
    pairs or cards (the ``remote`` backend needs only the card).

    Names are made unique (``name#2``…) and the members must predict the same classes.

    Raises:
        ConfigError: unknown backend. DataError: no models, or members of different targets.
    """
    if not models:
        raise DataError("No models given: pass at least one member or (model, card) pair.")
    if backend not in _BACKENDS:
        raise unknown_option("backend", backend, backend_names())
    models = [m[0] if isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], Member) else m for m in models]
    out: list[Member | None] = [m if isinstance(m, Member) else None for m in models]
    todo = [i for i, m in enumerate(out) if m is None]
    if todo:
        built = _BACKENDS[backend]([_pair(models[i]) for i in todo], **options)
        if len(built) != len(todo):
            raise ConfigError(f"backend {backend} built {len(built)} members for {len(todo)} models.")
        for i, m in zip(todo, built):
            out[i] = m
    members = [m for m in out if m is not None]
    for m, name in zip(members, unique_names([m.name for m in members])):
        m.name = name
    kinds = {(m.classes, m.multilabel) for m in members}
    if len(kinds) > 1:
        raise DataError("Ensemble members predict different classes: "
                        + "; ".join(f"{m.name}: {list(m.classes)}" for m in members)
                        + ". Combine only models trained for the same target.")
    return members


def members_classes(members: Sequence[Member]) -> tuple[tuple[str, ...], bool]:
    """``(classes, multilabel)`` shared by the members."""
    return members[0].classes, members[0].multilabel


__all__ = ["Batch", "Member", "TensorMember", "backend_names", "build_members", "unique_names",
           "members_classes", "register_backend"]
