"""Test-time augmentation views from ttach (library first), generated as one stacked batch.

Names: ``none`` (1 view), ``hflip`` (2), ``vflip`` (2), ``flips`` (4: {identity, hflip} x {identity, vflip}; ttach's
``flip_transform``) and ``d4`` (8: the dihedral group = {identity, hflip} x rotations 0/90/180/270; ttach's
``d4_transform``; it contains seed 003's original/hflip/vflip/transpose). Classification needs no
de-augmentation (a label does not move), so the engine only needs the augmented images.
"""
from __future__ import annotations

import torch

from lesion.errors import unknown_option

TTA_NAMES: tuple[str, ...] = ("none", "hflip", "vflip", "flips", "d4")


def tta_transforms(name: str):
    """The ttach ``Compose`` for a TTA name (None for ``none``).

    Raises:
        ConfigError: unknown name (the options are listed).
    """
    import ttach as tta

    if name not in TTA_NAMES:
        raise unknown_option("TTA", name, TTA_NAMES)
    if name == "none":
        return None
    return {
        "hflip": tta.aliases.hflip_transform,
        "vflip": tta.aliases.vlip_transform,  # sic: ttach's spelling
        "flips": tta.aliases.flip_transform,
        "d4": tta.aliases.d4_transform,
    }[name]()


def n_views(name: str) -> int:
    """Number of views of a TTA name (1, 2, 2, 4, 8)."""
    t = tta_transforms(name)
    return 1 if t is None else len(list(t))


def augment_views(x: torch.Tensor, name: str) -> torch.Tensor:
    """All TTA views of a batch, stacked view-major.

    Args:
        x: ``[B, C, H, W]`` (square for d4: rotations by 90° keep the shape only then).

    Returns:
        ``[V * B, C, H, W]``: rows ``v * B : (v + 1) * B`` are view ``v`` of the whole batch.
    """
    t = tta_transforms(name)
    if t is None:
        return x
    return torch.cat([tr.augment_image(x) for tr in t], dim=0)


def view_list(x: torch.Tensor, name: str) -> list[torch.Tensor]:
    """The views one by one (the naive reference path), same order as :func:`augment_views`."""
    t = tta_transforms(name)
    return [x] if t is None else [tr.augment_image(x) for tr in t]
