"""Typed exceptions with readable messages.

Every error a user can cause (a bad path, a corrupt image, a CSV missing a column, a checkpoint that does
not match its card) is raised as a subclass of :class:`LesionError`. Pages and the CLI catch
``LesionError`` and show ``str(err)``; anything else is a bug.
"""
from __future__ import annotations

import difflib


class LesionError(Exception):
    """Base class: the message is written for the user, not the developer."""


class DataError(LesionError):
    """A data set cannot be read: missing path, empty folder, unknown layout, CSV missing a column."""


class ImageReadError(DataError):
    """An image or mask file cannot be decoded (truncated, corrupt, not an image)."""


class MaskShapeError(DataError):
    """A mask does not have the size of its image."""


class CheckpointError(LesionError):
    """A checkpoint is missing, truncated, or does not match its card or architecture."""


class ModelOutputError(LesionError):
    """A model produced NaN or Inf (corrupt weights, or an overflow): an error, never a score."""


class ConfigError(LesionError):
    """An unknown option name (the message lists the valid ones)."""


class StorageError(LesionError):
    """A file cannot be written for a reason of the machine: the disk is full, a file-size limit, a read-only or
    forbidden folder. Nothing half-written is left at the destination."""


def unknown_option(kind: str, name: str, options: list[str] | tuple[str, ...]) -> ConfigError:
    """Build a ConfigError that lists valid options and suggests the nearest one (MONAI's look_up_option)."""

    near = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return ConfigError(f"Unknown {kind} '{name}'.{hint} Supported: {', '.join(map(str, options))}.")
