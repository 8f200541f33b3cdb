"""Test-time augmentation, parsed once into a small value: :class:`TTA` (the views, from ttach, library first).

Names: ``none`` (1 view), ``hflip`` (2), ``vflip`` (2), ``flips`` (4: {identity, hflip} x {identity, vflip}; ttach's
``flip_transform``) and ``d4`` (8: the dihedral group = {identity, hflip} x rotations 0/90/180/270; ttach's
``d4_transform``; it contains seed 003's original/hflip/vflip/transpose). Classification needs no
de-augmentation (a label does not move), so a classifier only needs the augmented images.

:data:`DEFAULT_TTA` (``d4``) is the one default of every caller: pages, the CLI, the server and the Ray actors.
:func:`parse_tta` validates a name once and returns the cached :class:`TTA` (its ttach ``Compose`` is built once
per process, not once per batch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lesion.errors import unknown_option

TTA_NAMES: tuple[str, ...] = ("none", "hflip", "vflip", "flips", "d4")
#: The TTA every caller uses unless told otherwise.
DEFAULT_TTA = "d4"


@dataclass(frozen=True)
class TTA:
    """A parsed TTA: its ``name``, number of ``views`` and the ttach transforms (None for ``none``)."""

    name: str
    views: int
    transforms: Any = field(default=None, compare=False, repr=False)

    def augment(self, x):
        """All views of a batch ``[B, C, H, W]`` as a list of ``V`` tensors, in view order.

        On a non-square batch the 90°/270° rotations of ``d4`` come out ``[B, C, W, H]``: a classifier with
        global pooling takes them as they are (the engine runs views of one shape per forward pass).
        """
        if self.transforms is None:
            return [x]
        return [t.augment_image(x) for t in self.transforms]

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=None)
def parse_tta(name: "str | TTA") -> TTA:
    """The :class:`TTA` of a name (a TTA is returned as it is).

    Raises:
        ConfigError: unknown name (the options are listed).
    """
    if isinstance(name, TTA):
        return name
    if name not in TTA_NAMES:
        raise unknown_option("TTA", name, TTA_NAMES)
    if name == "none":
        return TTA("none", 1, None)
    import ttach as tta

    compose = {
        "hflip": tta.aliases.hflip_transform,
        "vflip": tta.aliases.vlip_transform,  # sic: ttach's spelling
        "flips": tta.aliases.flip_transform,
        "d4": tta.aliases.d4_transform,
    }[name]()
    transforms = tuple(compose)
    return TTA(name, len(transforms), transforms)


def check_tta(name: "str | TTA") -> str:
    """The name of a valid TTA (raises ConfigError listing :data:`TTA_NAMES` otherwise)."""
    return parse_tta(name).name


def n_views(name: "str | TTA") -> int:
    """Number of views of a TTA name (1, 2, 2, 4, 8)."""
    return parse_tta(name).views
