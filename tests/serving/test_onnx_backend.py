"""The onnx backend equals the PyTorch engine (max |Δp| <= 1e-4) for a plain classifier, the multi-task model with
metadata and a multi-label chest X-ray model, with and without TTA; files are built once and reused by sha256."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.data.spec import open_data
from lesion.serving.backends import predict
from lesion.serving.onnx_backend import onnx_file
from lesion.zoo import load_model


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.parametrize("name,domain", [("derm_cls_efficientnet_lite0_focal", "derm"),
                                         ("derm_multitask_efficientnet_lite0", "derm"),
                                         ("cxr_demo_findings_efficientnet_lite0", "cxr")])
@pytest.mark.parametrize("tta", ["none", "flips"])
def test_onnx_equals_torch(name, domain, tta, monkeypatch, onnx_root):
    import lesion.serving.onnx_backend as ob

    monkeypatch.setattr(ob, "onnx_cache_dir", lambda root=None: onnx_root)
    records = open_data(f"demo:{domain}").records[:5]
    if domain == "derm":
        assert any(r.meta.get("age") is not None for r in records)  # the multi-task model gets real metadata
    member = load_model(name)
    a = predict([member], records, tta=tta, device="cpu")
    b = predict([member], records, tta=tta, backend="onnx")
    assert a.ids == b.ids and a.classes == b.classes
    assert np.abs(a.probs - b.probs).max() <= 1e-4


def test_onnx_file_is_reused_and_keyed_by_weights(tmp_path):
    model, card = load_model("derm_cls_efficientnet_lite0_focal")
    first = onnx_file(model, card, root=tmp_path)
    mtime = first.stat().st_mtime_ns
    assert onnx_file(model, card, root=tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert card.sha256[:20] in first.name  # another checkpoint (another sha256) gets another file
