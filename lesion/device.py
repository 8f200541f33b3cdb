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


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (CUDA needs one); a cheap check that avoids importing torch."""
    import os
    import shutil

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def describe_device_quick() -> str:
    """:func:`describe_device`, without the seconds of importing torch on machines that have no NVIDIA driver."""
    import os
    import sys

    if "torch" in sys.modules or nvidia_driver_present():
        return describe_device()
    return f"CPU ({os.cpu_count()} cores)"
