"""Shared test setup: offline, a throw-away cache, and the real-data fixture.

The environment is set at import time (before any test module imports ``lesion``) so that no test writes to
the user's ``~/.cache/lesion-lab`` or asks a model hub. Set ``LESION_TEST_CACHE`` to reuse a cache folder
between runs (e.g. to keep the generated demo sets).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if os.environ.get("LESION_TEST_CACHE"):
    os.environ["LESION_CACHE"] = os.environ["LESION_TEST_CACHE"]
else:
    _session_cache = tempfile.mkdtemp(prefix="lesion-test-cache-")
    os.environ["LESION_CACHE"] = _session_cache
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)


from lesion.paths import shared_data_dir  # noqa: E402  (after the cache and offline settings above)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real data sets (HAM10000, PH2, ChestXrayMasksAndLabels, NIH_ChestXray14_mini); skips if absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set LESION_SHARED_DATA)")
    return root
