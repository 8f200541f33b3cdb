"""What every benchmark script shares: the repository on sys.path, offline settings, the real-data folder
and how a report is printed and saved. Each script stays runnable alone: ``python bench/bench_x.py``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lesion.paths import shared_data_dir  # noqa: E402  (after the repository is on sys.path)


def data_root(arg: str | None) -> Path:
    """``--data-root`` when given, else :func:`lesion.paths.shared_data_dir`."""
    return Path(arg) if arg else shared_data_dir()


def emit(report: str, out: str | None) -> int:
    """Print the report and, with ``--out FILE``, also write it there. Returns the exit code 0."""
    print(report)
    if out:
        Path(out).write_text(report + "\n")
    return 0
