"""Compute-device choice and description (imports torch lazily: it takes seconds)."""
from __future__ import annotations

from lesion.errors import unknown_option

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(preference: str = "auto") -> str:
    """Return ``"cuda"`` or ``"cpu"``: ``auto`` takes a CUDA GPU when one is usable.

    Raises:
        ConfigError: unknown preference, or ``cuda`` asked for on a machine without a usable GPU.
    """
    import torch

    if preference not in DEVICE_CHOICES:
        raise unknown_option("device", preference, DEVICE_CHOICES)
    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        from lesion.errors import ConfigError

        raise ConfigError("A CUDA GPU was asked for, but none is available here; use --device cpu or auto.")
    if preference == "auto":
        return "cuda" if has_cuda else "cpu"
    return preference


def describe_device(device: str | None = None) -> str:
    """Human-readable name of the device that runs models, e.g. ``"CUDA GPU: NVIDIA H100"`` or ``"CPU (2 threads)"``."""
    import torch

    device = device or pick_device("auto")
    if device.startswith("cuda"):
        return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"
