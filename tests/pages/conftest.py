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

    def run(page: str = "views/home.py", session: dict | None = None) -> AppTest:
        at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
        for k, v in (session or {}).items():
            at.session_state[k] = v
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run


@pytest.fixture(scope="session")
def demo_folder():
    """``demo_folder(root, n, metadata=True) -> (root, rows)``: see :func:`make_demo_folder`."""
    return make_demo_folder


def make_demo_folder(root: Path, n: int, metadata: bool = True) -> tuple[Path, list[dict]]:
    """The first ``n`` demo dermoscopy images (both classes) copied into a plain folder ``root``: images/ +
    labels.csv (diagnosis, lesion_id and, with ``metadata``, age / sex / site). Returns ``(root, rows)``."""
    import shutil

    import pandas as pd

    from lesion.data.spec import open_data

    (root / "images").mkdir(parents=True)
    rows = []
    for r in open_data("demo:derm").records[:n]:
        shutil.copy(r.image_path, root / "images" / Path(r.image_path).name)
        row = {"image": Path(r.image_path).name, "diagnosis": r.diagnosis, "lesion_id": r.meta["lesion_id"]}
        if metadata:
            row.update(age=r.meta.get("age"), sex=r.meta.get("sex"), site=r.meta.get("site"))
        rows.append(row)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root, rows

