"""``lesion serve`` on a local Ray instance: the remote backend equals the in-process engine; bad requests are
4xx with a reason; the token rule holds. One Serve application for the module (start-up takes seconds)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from lesion.data.spec import open_data
from lesion.errors import ConfigError
from lesion.serving.backends import predict
from lesion.serving.client import RemoteClient, ServerError
from lesion.serving.protocol import encode_image
from lesion.serving.server import ServeConfig, check_config
from lesion.zoo import load_model

MODELS = ("derm_cls_efficientnet_lite0_focal", "derm_multitask_efficientnet_lite0", "cxr_demo_findings_efficientnet_lite0")


SERVE_MODELS, SERVE_TOKEN = MODELS, "s3cret"


@pytest.fixture(scope="module")
def server(lesion_server):
    return lesion_server


def _post(url: str, body, token: str | None = "s3cret") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("names,domain", [(MODELS[:2], "derm"), (MODELS[2:], "cxr")])
@pytest.mark.parametrize("tta", ["none", "hflip"])
def test_remote_equals_torch(server, names, domain, tta):
    records = open_data(f"demo:{domain}").records[:6]
    members = [load_model(n) for n in names]
    local = predict(members, records, tta=tta, device="cpu")
    remote = predict(members, records, tta=tta, backend="remote", url=server, token="s3cret")
    assert remote.ids == local.ids and remote.classes == local.classes
    assert np.abs(remote.probs - local.probs).max() <= 1e-4
    for n in names:
        assert np.abs(remote.member_probs[n] - local.member_probs[n]).max() <= 1e-4
    assert "127.0.0.1" in remote.device  # the result says where the models ran


def test_health_models_and_explain(server):
    client = RemoteClient(server, token="s3cret")
    h = client.health()
    assert h["ok"] and sorted(h["models"]) == sorted(MODELS)
    assert {c.name for c in client.cards()} == set(MODELS)
    image = open_data("demo:derm").records[0]
    from lesion.data.io import read_image

    out = client.explain(MODELS[1], read_image(image.image_path), {"age": 50}, ["gradcam"])
    assert out["heats"]["gradcam"].ndim == 2 and out["attention"] is not None  # multi-task: attention too


@pytest.mark.parametrize("body,code,reason", [
    ({"models": ["nope"], "images": ["x"]}, 404, "unknown model"),
    ({"models": [MODELS[0]], "images": ["%%%"]}, 422, "not base64"),
    ({"models": [MODELS[0]], "images": [encode_image(np.zeros((4, 4, 3), np.uint8))], "metadata": [{"weight": 3}]},
     422, "unknown field"),
    ({"models": [MODELS[0]], "images": [encode_image(np.zeros((4, 4, 3), np.uint8))] * 65}, 422, "limit is 64"),
    ({"models": [MODELS[0], MODELS[2]], "images": [encode_image(np.zeros((8, 8, 3), np.uint8))]}, 422,
     "different classes"),
])
def test_bad_requests_are_4xx_with_a_reason(server, body, code, reason):
    status, out = _post(server + "/predict", body)
    assert status == code and reason in out["error"]


def test_token_is_checked_on_every_request(server):
    status, out = _post(server + "/predict", {"models": [MODELS[0]], "images": []}, token=None)
    assert status == 401 and "token" in out["error"]
    with pytest.raises(ServerError, match="401"):
        RemoteClient(server, token="wrong").health()


def test_down_server_is_one_line(free_port):
    with pytest.raises(ServerError, match="Cannot reach the model server"):
        RemoteClient(f"http://127.0.0.1:{free_port()}", timeout=2).health()


def test_config_rules_before_start(monkeypatch):
    monkeypatch.delenv("LESION_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="LESION_SERVE_TOKEN"):
        check_config(ServeConfig(models=(MODELS[0],), host="0.0.0.0"))
    with pytest.raises(Exception, match="No weights file found"):  # a path is read as a checkpoint, nothing else
        check_config(ServeConfig(models=("/etc/passwd",)))
    from lesion.train.loop import SHIPPED_WEIGHTS_DIR

    by_path = str(SHIPPED_WEIGHTS_DIR / MODELS[0])  # a model by path (e.g. one made by `lesion import`)
    assert check_config(ServeConfig(models=(by_path,))).models == (by_path,)
    with pytest.raises(ConfigError, match="both called"):
        check_config(ServeConfig(models=(by_path, MODELS[0])))
    with pytest.raises(Exception, match="is a segmentation model"):
        check_config(ServeConfig(models=("lung_unet_efficientnet_lite0",)))
    assert check_config(ServeConfig(models=(MODELS[0],), host="0.0.0.0", token="t")).token == "t"
