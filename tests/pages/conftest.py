"""Shared AppTest runner for the page tests."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # pages that load torch take seconds on a busy 2-core machine


@pytest.fixture()
def run_page():
    """``run_page(page, session=None)``: run one page script under AppTest (``page`` relative to the repo or
    absolute), after putting ``session`` into its session state; fails the test on any exception.

    Pages draw the shared sidebar themselves, so they run alone: AppTest re-runs the page script, not app.py,
    after a widget changes when the app uses st.navigation, and running the page file keeps reruns identical.
    """
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    def run(page: str = "pages/home.py", session: dict | None = None) -> AppTest:
        at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
        for k, v in (session or {}).items():
            at.session_state[k] = v
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run
