"""One corrupt image in a folder: every scoring page scores the rest and names it (the one bad-image rule)."""
from __future__ import annotations

from pathlib import Path

import pytest


pytest.importorskip("streamlit")

MODEL = "derm_cls_efficientnet_lite0_focal"
N_IMAGES = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory, demo_folder):
    """Demo dermoscopy images (both classes) in a plain folder, one of them replaced by broken bytes."""
    root, rows = demo_folder(tmp_path_factory.mktemp("bad") / "one_bad", N_IMAGES, metadata=False)
    (root / "images" / rows[1]["image"]).write_bytes(b"\x89PNG\r\n\x1a\n not the rest of an image")
    return root, Path(rows[1]["image"]).stem


def _session(root) -> dict:
    return {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(root),
            "_keep.members.derm": [MODEL], "_keep.tta": "none"}


@pytest.mark.parametrize("page, run_key", [("views/classification.py", "cls_run"), ("views/review.py", "review_run")])
def test_one_corrupt_image_is_named_and_the_rest_scored(run_page, folder, page, run_key):
    root, bad = folder
    at = run_page(page, _session(root))
    at.button(key=run_key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    warnings = " ".join(w.value for w in at.warning)
    assert "could not be read" in warnings and bad in warnings
