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
# the user's models folder (`lesion import`'s default) of the tests: empty, never the person's own ~/lesion-models
_models_dir = tempfile.mkdtemp(prefix="lesion-test-models-")
os.environ["LESION_MODELS_DIR"] = _models_dir
atexit.register(shutil.rmtree, _models_dir, ignore_errors=True)


from lesion.paths import shared_data_dir  # noqa: E402  (after the cache and offline settings above)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real data sets (HAM10000, PH2, ChestXrayMasksAndLabels, NIH_ChestXray14_mini); skips if absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set LESION_SHARED_DATA)")
    return root


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """``free_port()`` -> a port nothing listens on (a down server's address, or one to start a server on)."""
    return _free_port


@pytest.fixture(scope="module")
def lesion_server(request):
    """A local ``lesion serve`` (Ray Serve, CPU) of the test module's ``SERVE_MODELS`` with its ``SERVE_TOKEN``,
    started once per module and stopped afterwards; yields its URL."""
    pytest.importorskip("ray")
    from lesion.serving import server as srv

    port = _free_port()
    srv.start(srv.ServeConfig(models=tuple(request.module.SERVE_MODELS), port=port, device="cpu",
                              token=getattr(request.module, "SERVE_TOKEN", None)), num_cpus=2)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.stop()

