"""Where lesion-lab keeps generated and cached files (never inside a user's data folder)."""
from __future__ import annotations

import os
from pathlib import Path

#: Folder of the shipped checkpoints and model cards (``$LESION_WEIGHTS_DIR`` points the app and the CLI at
#: another folder of checkpoints, e.g. a lab's own models or a test's).
WEIGHTS_DIR = Path(os.environ.get("LESION_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


def cache_dir() -> Path:
    """Root of caches (demo data, predictions, review tags): ``$LESION_CACHE`` or ``~/.cache/lesion-lab``."""
    root = Path(os.environ.get("LESION_CACHE") or Path.home() / ".cache" / "lesion-lab")
    root.mkdir(parents=True, exist_ok=True)
    return root


def dataset_cache_dir(fingerprint: str) -> Path:
    """Cache folder for one data set (predictions, tags), keyed by :meth:`Dataset.fingerprint`."""
    d = cache_dir() / "datasets" / fingerprint
    d.mkdir(parents=True, exist_ok=True)
    return d
