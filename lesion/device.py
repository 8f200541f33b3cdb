"""Compute-device choice and description (imports torch lazily: it takes seconds)."""
from __future__ import annotations

import os
import shutil
import sys

from lesion.errors import ConfigError, unknown_option

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(preference: "str | torch.device | None" = "auto") -> str:
    """The one device rule of lesion-lab: ``"cuda"``, ``"mps"`` or ``"cpu"`` (or ``"cuda:N"`` as asked).

    ``auto`` (or ``None``) takes a usable CUDA GPU, else Apple's MPS, else the CPU. A ``torch.device`` is
    accepted too; callers that need one wrap the answer in ``torch.device(...)``.

    Raises:
        ConfigError: unknown preference, or ``cuda`` asked for on a machine without a usable GPU.
    """
    import torch

    pref = "auto" if preference is None else str(preference)
    base = pref.split(":", 1)[0]
    if base not in DEVICE_CHOICES + ("mps",) or (":" in pref and base != "cuda"):
        raise unknown_option("device", pref, DEVICE_CHOICES)
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("A CUDA GPU was asked for, but none is available here; use --device cpu or auto.")
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return pref


def describe_device(device: str | None = None) -> str:
    """Human-readable name of the device that runs models, e.g. ``"CUDA GPU: NVIDIA H100"`` or ``"CPU (2 threads)"``."""
    import torch

    device = device or pick_device("auto")
    if device.startswith("cuda"):
        return f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (CUDA needs one); a cheap check that avoids importing torch."""

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def describe_device_quick() -> str:
    """:func:`describe_device`, without the seconds of importing torch on machines that have no NVIDIA driver."""

    if "torch" in sys.modules or nvidia_driver_present():
        return describe_device()
    return f"CPU ({os.cpu_count()} cores)"
