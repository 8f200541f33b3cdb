"""Shared AppTest runner for the page tests."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # pages that load torch take seconds on a busy 2-core machine


@pytest.fixture(autouse=True)
def _one_thread():
    """Every page test runs torch on one thread: the pages share two cores with the test runner (and, in a run of
    the whole suite, with servers other tests start), where spinning threads are many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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



@pytest.fixture(scope="session")
def plans_held_out_only():
    """``plans_held_out_only(at, card, folder)``: see :func:`assert_plans_held_out_only`."""
    return assert_plans_held_out_only


def assert_plans_held_out_only(at, card, folder) -> None:
    """The page's plan, said before Run, computes the held-out images of ``card`` on the data set at ``folder``
    only, and says the training images are not computed (issue 21.1)."""
    from lesion.data.spec import open_data
    from lesion.train.heldout import held_out

    ds = open_data(str(folder))
    n_held = len(held_out(card, ds).records)
    assert 0 < n_held < len(ds)
    plan = [c.value for c in at.caption if "This run computes" in c.value]
    assert plan and f"computes {n_held} images" in plan[0], plan
    assert f"the {len(ds) - n_held} training images are not computed" in plan[0]
