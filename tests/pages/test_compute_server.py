"""Issue 14 (3): the model pages through a real ``lesion serve`` application (one local Ray Serve app for the
module, shipped models, a few demo images): the same AUC and probabilities as this machine's run, where the
models ran named on the page, Explain's maps drawn by the server, and one message (never a traceback) when the
server is down or refuses the token."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")

MODELS = ("derm_cls_efficientnet_lite0_focal", "derm_multitask_efficientnet_lite0")
CXR_MODEL = "cxr_demo_findings_efficientnet_lite0"
TOKEN = "s3cret"
N_IMAGES = 24


SERVE_MODELS, SERVE_TOKEN = MODELS + (CXR_MODEL,), TOKEN


@pytest.fixture(scope="module")
def server(lesion_server):
    """``lesion serve`` of the shipped derm classifiers and the findings model, with a token."""
    return lesion_server


@pytest.fixture(scope="module")
def folder(tmp_path_factory, demo_folder):
    """The first demo dermoscopy images (both classes) in a plain folder: images/ + labels.csv with metadata."""
    root, rows = demo_folder(tmp_path_factory.mktemp("few") / "few_derm", N_IMAGES)
    assert {r["diagnosis"] for r in rows} >= {"mel", "nv"}  # both classes of 'melanoma': an AUC exists
    return root


def _session(folder, url: str | None, token: str | None = TOKEN, **more) -> dict:
    s = {"_keep.source_kind": "Folder on this machine", "_keep.folder_path": str(folder),
         "_keep.members.derm": list(MODELS), "_keep.tta": "none"}
    if url is not None:
        s.update({"_keep.compute_kind": "remote", "_keep.compute_url": url, "_keep.compute_token": token or ""})
    s.update(more)
    return s


def _texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


def test_classification_through_the_server_equals_this_machine(run_page, server, folder, monkeypatch):
    from lesion.data.spec import open_data
    from lesion.infer.evaluate import label_vector, score
    from lesion.metrics import roc_auc_ci
    from lesion.serving.backends import predict
    from lesion.zoo import load_model

    monkeypatch.delenv("LESION_SERVE_TOKEN", raising=False)
    at = run_page("views/classification.py", _session(folder, server))
    assert "Server up" in _texts(at.sidebar.success) and "cpu" in _texts(at.sidebar.success)
    assert sorted(at.multiselect(key="cls_members").options) == sorted(MODELS)  # the server's cards
    at.button(key="cls_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _texts(at.error)
    assert f"Ran on **model server {server} (cpu)" in _texts(at.caption)  # the page names the server

    # the same images and models on this machine, in-process
    ds = open_data(str(folder))
    local = predict([load_model(n) for n in MODELS], ds, tta="none", device="cpu")
    remote = predict([load_model(n)[1] for n in MODELS], ds, tta="none", backend="remote", url=server, token=TOKEN)
    assert remote.ids == local.ids and "127.0.0.1" in remote.device
    assert np.abs(remote.probs - local.probs).max() <= 1e-4
    for n in MODELS:
        assert np.abs(remote.member_probs[n] - local.member_probs[n]).max() <= 1e-4
    aucs = [d.value for d in at.dataframe if "auc" in d.value.columns][0].set_index("model")
    y = label_vector(ds.records, "melanoma")
    keep = np.isfinite(y)
    for n in MODELS:
        want = roc_auc_ci(y[keep], score(local.member_probs[n], local.classes, "melanoma")[keep], n_boot=10)[0]
        assert abs(aucs.loc[n, "auc"] - want) <= 1e-4, (n, aucs.loc[n, "auc"], want)

    # back to this machine: the numbers are this machine's, and the page says so (never the server's result)
    at.radio(key="compute_kind").set_value("torch").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = _texts(at.caption)
    assert "Ran on **this machine" in captions and server not in captions


def test_explain_draws_the_servers_maps(run_page, server, folder, monkeypatch):
    """LESION_BACKEND / LESION_SERVE_TOKEN choose the server by default; the maps come from it."""
    monkeypatch.setenv("LESION_BACKEND", server)
    monkeypatch.setenv("LESION_SERVE_TOKEN", TOKEN)
    session = _session(folder, None)
    session["_keep.explain_methods"] = ["gradcam"]
    session["_keep.explain_model"] = "derm_multitask_efficientnet_lite0"
    at = run_page("views/explain.py", session)
    assert at.radio(key="compute_kind").value == "remote"
    assert at.text_input(key="compute_url").value == server
    assert not at.error, _texts(at.error)
    flat = " ".join(str(c) for i in at.get("image") for c in (i.captions or []))
    assert "gradcam" in flat and "attention" in flat, flat  # the multi-task model's attention, from the server
    assert f"computed on **the model server at {server} (cpu)" in _texts(at.caption)
    scores = [d.value for d in at.dataframe if "pointing_game" in d.value.columns][0]
    assert list(scores["map"]) == ["gradcam", "attention"] and scores["iou"].between(0, 1).all()
    assert at.checkbox(key="explain_smooth").disabled  # TTA-smoothed maps need this machine

    # the server's map is the one this machine computes (fp16 on the wire)
    from lesion.data.io import read_image
    from lesion.data.spec import open_data
    from lesion.explain.agreement import explain_image
    from lesion.serving.client import RemoteClient
    from lesion.zoo import load_model

    rec = open_data(str(folder)).records[0]
    image = read_image(rec.image_path)
    model, card = load_model("derm_multitask_efficientnet_lite0", device="cpu")
    local = explain_image(model, card, image, {}, None, ["gradcam"], 1)
    remote = RemoteClient(server, TOKEN).explain(card.name, image, {}, ["gradcam"], 1)
    assert np.abs(remote["heats"]["gradcam"] - local["heats"]["gradcam"]).max() <= 2e-3


def test_review_fusion_upload_and_chest_xray_through_the_server(run_page, server, folder, monkeypatch):
    """The other model pages run on the server too and say so; heatmaps (gallery, upload, finding) included."""
    import io

    from PIL import Image

    from lesion.data.spec import open_data

    monkeypatch.delenv("LESION_SERVE_TOKEN", raising=False)
    at = run_page("views/review.py", _session(folder, server, **{"_keep.members.derm": [MODELS[1]]}))
    at.button(key="review_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] or _texts(at.error)
    assert f"ran on **model server {server} (cpu)" in _texts(at.caption)
    flat = " ".join(str(c) for i in at.get("image") for c in (i.captions or []))
    assert "as scored" in flat and "attention" in flat, flat  # the gallery's maps, from the server

    at = run_page("views/fusion.py", _session(folder, server))
    at.button(key="fus_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] or _texts(at.error)
    assert f"Ran on **model server {server} (cpu)" in _texts(at.caption)

    buf = io.BytesIO()
    Image.open(open_data(str(folder)).records[2].image_path).save(buf, format="PNG")
    at = run_page("views/upload.py", _session(folder, server, upload_test_file=("mine.png", buf.getvalue())))
    assert not at.error, _texts(at.error)
    assert f"ran on model server {server} (cpu)" in _texts(at.markdown)
    probs = [d.value for d in at.dataframe if "ensemble" in d.value.columns][0]
    assert probs["ensemble"].between(0, 1).all() and set(MODELS) <= set(probs.columns)
    assert "network view" in " ".join(str(c) for i in at.get("image") for c in (i.captions or []))

    at = run_page("views/chest_xray.py", _session(folder, server, **{"_keep.source_kind": "Built-in demo (synthetic)",
                                                                     "_keep.demo_choice": "demo:cxr"}))
    box = at.selectbox(key="cxr_model")
    assert box.value == CXR_MODEL and len(box.options) == 1  # the server's chest X-ray model only
    at.button(key="cxr_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] or _texts(at.error)
    assert f"Ran on **model server {server} (cpu)" in _texts(at.caption)
    assert f"Heatmap computed on the model server at {server}" in _texts(at.caption)


PAGES = [("views/classification.py", {}), ("views/explain.py", {}), ("views/review.py", {}),
         ("views/fusion.py", {"_keep.source_kind": "Built-in demo (synthetic)"}),
         ("views/chest_xray.py", {"_keep.source_kind": "Built-in demo (synthetic)", "_keep.demo_choice": "demo:cxr"}),
         ("views/upload.py", {})]


@pytest.mark.parametrize("page,more", PAGES, ids=[Path(p).stem for p, _ in PAGES])
def test_a_down_server_gives_one_message(run_page, folder, page, more, free_port):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    at = run_page(page, _session(folder, url, **more))
    assert at.title, "the page still renders"
    assert "Cannot reach the model server" in _texts(at.error), _texts(at.error)
    assert "Cannot reach the model server" in _texts(at.sidebar.error)


@pytest.mark.parametrize("token", ["wrong", None])
def test_a_refused_token_gives_one_message(run_page, server, folder, monkeypatch, token):
    monkeypatch.delenv("LESION_SERVE_TOKEN", raising=False)
    at = run_page("views/classification.py", _session(folder, server, token=token))
    assert "refused the token" in _texts(at.error), _texts(at.error)
    assert "refused the token" in _texts(at.sidebar.error)


def test_a_malformed_address_is_refused_before_any_request(run_page, folder):
    at = run_page("views/explain.py", _session(folder, "127.0.0.1:8000"))
    assert "not a server address" in _texts(at.sidebar.error) and "not a server address" in _texts(at.error)


def test_backend_env_and_url_rules():
    from ui.state import backend_from_env, check_server_url

    assert backend_from_env("")[:2] == ("torch", "") and backend_from_env("local")[0] == "torch"
    assert backend_from_env("onnx")[0] == "onnx"
    assert backend_from_env("http://gpu-box:8000")[:2] == ("remote", "http://gpu-box:8000")
    kind, _, note = backend_from_env("gpu")
    assert kind == "torch" and "LESION_BACKEND='gpu'" in note
    assert check_server_url("http://127.0.0.1:8000") is None and check_server_url("https://a.b-c.org:443/") is None
    for bad in ("127.0.0.1:8000", "http://host", "http://host:8000/predict", "ftp://h:1", "http://h:70000"):
        assert check_server_url(bad), bad
