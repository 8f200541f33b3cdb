"""lesion-lab: segmentation and classification of medical images, and why models succeed or fail.

The library never imports streamlit. Heavy packages (torch, timm, smp, grad-cam) are imported lazily inside
the functions that need them so that importing ``lesion`` stays fast.
"""
import os

# Offline by default: a stray hub request fails in 0.2 s instead of hanging (no code path here asks a hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that wait by sleeping, not spinning: with another busy process on a 2-core machine, torch's
# default (spinning) threads ran the 4-model d4 ensemble 12x slower than with PASSIVE (bench/bench_threads.py).
# Read by OpenMP when torch loads, so it is set here, before any lesion module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lesion.errors import (  # noqa: F401
    CheckpointError,
    ConfigError,
    DataError,
    ImageReadError,
    LesionError,
    MaskShapeError,
)

__version__ = "0.1.0"
