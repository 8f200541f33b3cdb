"""``lesion serve`` under careless clients (issue "Hold under careless clients"), on one real server for the module
(a local Ray instance started by ``tests/conftest.py::lesion_server``, CPU, with a token):

* every body is validated against a schema: a wrong type or length is a 4xx with a one-line reason, never echoed
  back beside another number of probability rows; metadata goes through the data loaders' rule (an age outside
  0-120 is unknown, as in a folder), non-finite numbers are refused;
* a client's mistake is never a bare 500 (an out-of-range class for /explain, a non-ASCII Authorization header);
  a server fault is a 500 with one line, its traceback in the log;
* with a token every route needs it (the documentation routes are off), and no Ray process listens beyond
  loopback;
* 32 clients for a bounded time: the server stays up, valid answers equal the single-request ones, invalid ones
  get their 4xx, memory stays bounded.
"""
from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np
import pytest

from lesion.cli import main as cli
from lesion.data.io import read_image
from lesion.data.spec import open_data
from lesion.errors import ConfigError, ModelOutputError
from lesion.serving.backends import predict
from lesion.serving.protocol import MAX_IMAGES, encode_image
from lesion.serving.server import ServeConfig, check_config, install_edge
from lesion.zoo import load_model

MODEL = "derm_multitask_efficientnet_lite0"  # a multi-task model: it reads the metadata
SERVE_MODELS, SERVE_TOKEN = (MODEL,), "tok-9f2c"


@pytest.fixture(scope="module")
def server(lesion_server):
    return lesion_server


@pytest.fixture(scope="module")
def images():
    return [read_image(r.image_path) for r in open_data("demo:derm").records[:4]]


def call(url: str, method: str, path: str, body=None, raw: bytes | None = None,
         token: str | bytes | None = SERVE_TOKEN, timeout: float = 120) -> tuple[int, dict | None, dict]:
    """One HTTP request (headers may be any bytes) -> ``(status, JSON answer or None, headers)``."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        conn.putrequest(method, path)
        if token is not None:
            conn.putheader("Authorization", token if isinstance(token, bytes) else f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data or b"")))
        conn.endheaders(data)
        r = conn.getresponse()
        text = r.read()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        return r.status, answer, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def body(images, n: int = 1, **extra) -> dict:
    return {"models": [MODEL], "images": [encode_image(im) for im in images[:n]], "tta": "none", **extra}


# ------------------------------------------------------------------------------------ malformed fields
@pytest.mark.parametrize("change,reason", [
    ({"ids": ["a"]}, "'ids' has 1 entries for 2 images"),
    ({"ids": ["a", "b", "c"]}, "'ids' has 3 entries for 2 images"),
    ({"ids": "ab"}, "ids: Input should be a valid array"),
    ({"ids": [1, 2]}, "ids[0]: Input should be a valid string"),
    ({"ids": ["a", "a"]}, "ids must be unique"),
    ({"metadata": [{"age": 50}]}, "'metadata' has 1 entries for 2 images"),
    ({"metadata": {"age": 50}}, "metadata: Input should be a valid array"),
    ({"metadata": [{"age": "50"}, None]}, "metadata[0].age: Input should be a valid number"),
    ({"metadata": [{"age": True}, None]}, "metadata[0].age"),
    ({"metadata": [None, {"sex": 1}]}, "metadata[1].sex: Input should be a valid string"),
    ({"metadata": [None, {"weight": 3}]}, "metadata[1].weight: unknown field"),
    ({"models": MODEL}, "models: Input should be a valid array"),
    ({"models": [MODEL, MODEL]}, "twice"),
    ({"images": "abc"}, "images: Input should be a valid array"),
    ({"images": []}, "images: List should have at least 1 item"),
    ({"tta": 3}, "tta: Input should be a valid string"),
    ({"tta": "sideways"}, "Unknown TTA"),
    ({"merge": None}, "merge: Input should be a valid string"),
    ({"merge": "median"}, "median"),
    ({"surprise": 1}, "surprise: unknown field"),
])
def test_malformed_fields_are_422_never_echoed(server, images, change, reason):
    status, out, _ = call(server, "POST", "/predict", {**body(images, 2), **change})
    assert status == 422, out
    assert reason.lower() in out["error"].lower() and "\n" not in out["error"]
    assert "probs" not in out and "ids" not in out


def test_too_many_images_is_422(server, images):
    too_many = [encode_image(images[0])] * (MAX_IMAGES + 1)
    status, out, _ = call(server, "POST", "/predict", {**body(images, 1), "images": too_many})
    assert status == 422 and f"limit is {MAX_IMAGES}" in out["error"]


@pytest.mark.parametrize("raw,status,reason", [
    (b'{"models": [', 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 422, "must be a JSON object"),
])
def test_a_body_that_is_not_a_json_object_is_4xx(server, raw, status, reason):
    got, out, _ = call(server, "POST", "/predict", raw=raw)
    assert got == status and reason in out["error"]


@pytest.mark.parametrize("age", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_metadata_is_422_not_500(server, images, age):
    raw = json.dumps(body(images, 1)).replace('"tta"', f'"metadata": [{{"age": {age}}}], "tta"').encode()
    status, out, _ = call(server, "POST", "/predict", raw=raw)
    assert status == 422 and "metadata[0].age" in out["error"] and "finite" in out["error"]


def test_out_of_range_age_is_unknown_as_in_a_folder(server, images):
    """The loaders' rule (lesion.data._common.parse_age): 300 and -5 are unknown; the answer is the one of an
    image without an age, over HTTP as in this process."""
    local = predict([load_model(MODEL)], [(images[0], {})], tta="none", device="cpu").probs
    answers = {}
    for age in (None, 300, -5):
        meta = [{} if age is None else {"age": age}]
        status, out, _ = call(server, "POST", "/predict", body(images, 1, metadata=meta))
        assert status == 200, out
        answers[age] = np.asarray(out["probs"])
        if age is not None:
            assert out["notes"] and "used as unknown" in out["notes"][0]
    assert np.abs(answers[300] - answers[None]).max() <= 1e-6
    assert np.abs(answers[-5] - answers[None]).max() <= 1e-6
    assert np.abs(answers[None] - local).max() <= 1e-4
    status, out, _ = call(server, "POST", "/predict", body(images, 1, metadata=[{"age": 70}]))
    assert np.abs(np.asarray(out["probs"]) - answers[None]).max() > 1e-6  # a real age is used


def test_ids_come_back_one_per_image(server, images):
    status, out, _ = call(server, "POST", "/predict", body(images, 3, ids=["a", "b", "c"]))
    assert status == 200 and out["ids"] == ["a", "b", "c"] and len(out["probs"]) == 3


# ------------------------------------------------------------------------------------ /explain and auth
@pytest.mark.parametrize("change,reason", [
    ({"class_index": 2}, "class_index: 2 is out of range"),  # a one-logit head explains 0 and 1
    ({"class_index": -1}, "class_index: Input should be greater than or equal to 0"),
    ({"class_index": 0.5}, "class_index: Input should be a valid integer"),
    ({"methods": ["nope"]}, "methods"),
    ({"methods": "gradcam"}, "methods: Input should be a valid array"),
    ({"model": "nope"}, "unknown model"),
])
def test_explain_bad_class_index_and_methods_are_4xx(server, images, change, reason):
    status, out, _ = call(server, "POST", "/explain", {"model": MODEL, "image": encode_image(images[0]), **change})
    assert status in (404, 422) and reason in out["error"]


@pytest.mark.parametrize("token", [None, "wrong", b"Bearer s\xc3\xa9cret", b"Bearer \xff\xfe", b"Basic abc"])
def test_non_ascii_or_wrong_authorization_is_401(server, token):
    status, out, headers = call(server, "GET", "/health", token=token)
    assert status == 401 and "token" in out["error"] and headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize("method,path", [("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"),
                                         ("GET", "/models"), ("POST", "/predict"), ("POST", "/explain"),
                                         ("GET", "/no-such-route"), ("DELETE", "/health")])
def test_every_route_needs_the_token(server, method, path):
    status, out, _ = call(server, method, path, raw=b"{}", token=None)
    assert status == 401, (path, out)


def test_documentation_routes_are_off_with_a_token(server):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert call(server, "GET", path)[0] == 404


def test_token_must_be_printable_ascii():
    with pytest.raises(ConfigError, match="printable ASCII"):
        check_config(ServeConfig(models=(MODEL,), token="sécret"))


# ------------------------------------------------------------------------------------ Ray's sockets
def test_ray_processes_listen_on_loopback_only(server):
    """Every listening socket of this process and of every process it started (GCS, raylet, agents, workers,
    Serve controller, proxy, replicas) is on loopback."""
    pytest.importorskip("ray")
    import psutil

    from lesion.serving.local_ray import is_loopback, listening_addresses

    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    socks = listening_addresses(pids)
    port = urlparse(server).port
    assert any(p == port for _, p, _ in socks)  # the Serve proxy is among them
    assert len({pid for *_, pid in socks}) >= 4  # GCS, raylet, proxy, replicas …
    wide = [(ip, p, " ".join(psutil.Process(pid).cmdline())[:80]) for ip, p, pid in socks if not is_loopback(ip)]
    assert not wide, f"listening beyond loopback: {wide}"


# ------------------------------------------------------------------------------------ faults and the edge
def test_server_fault_is_500_with_one_line_and_logged(free_port):
    """The edge of the app (the same install_edge the server uses) on a plain FastAPI app: a client's library
    error is a 4xx, a fault a 500 with one line, and the fault's traceback goes to the server log."""
    import uvicorn
    from fastapi import FastAPI

    api = FastAPI()
    install_edge(api, token=None)

    @api.get("/fault")
    async def fault():
        raise RuntimeError("kaboom\n  File secret.py, line 3")

    @api.get("/nan")
    async def nan():
        raise ModelOutputError("Model 'x' output NaN or Inf for 1 of 1 images")

    @api.get("/option")
    async def option():
        raise ConfigError("Unknown merge 'median'.")

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ray.serve").addHandler(handler)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        status, out, _ = call(url, "GET", "/fault", token=None)
        assert status == 500 and "RuntimeError: kaboom" in out["error"] and "\n" not in out["error"]
        assert "secret.py" not in out["error"]
        status, out, _ = call(url, "GET", "/nan", token=None)
        assert status == 500 and out["error"].startswith("Model 'x' output NaN")
        status, out, _ = call(url, "GET", "/option", token=None)
        assert status == 422 and out["error"] == "Unknown merge 'median'."
        status, out, _ = call(url, "GET", "/missing", token=None)
        assert status == 404 and out["error"] == "Not Found"
    finally:
        srv.should_exit = True
        thread.join(10)
        logging.getLogger("ray.serve").removeHandler(handler)
    faults = [r for r in records if r.exc_info]
    assert len(faults) == 2 and faults[0].exc_info[0] is RuntimeError  # logged with the traceback


def test_serve_port_taken_is_one_line_before_ray(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        t0 = time.perf_counter()
        assert cli(["serve", "--models", MODEL, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} is already in use" in err and "Traceback" not in err
    assert time.perf_counter() - t0 < 30  # refused before Ray starts


# ------------------------------------------------------------------------------------ soak
def _serve_rss() -> int:
    import psutil

    total = 0
    for p in psutil.Process().children(recursive=True):
        try:
            if any(k in " ".join(p.cmdline()) for k in ("ServeReplica", "ProxyActor", "ServeController")):
                total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def test_soak_32_clients_valid_equal_single_invalid_4xx(server, images):
    """32 clients for 20 s (at most 3000 requests), half valid, half invalid bodies."""
    pytest.importorskip("ray")
    valid = [body(images, 1, ids=[f"v{i}"], metadata=[{"age": 40 + i, "sex": "male", "site": "back"}])
             for i in range(3)]
    valid.append(body(images, 2, ids=["w0", "w1"]))
    single = []
    for b in valid:
        status, out, _ = call(server, "POST", "/predict", b)
        assert status == 200
        single.append(np.asarray(out["probs"]))
    good = json.dumps(valid[0])
    invalid = [
        (json.dumps({**valid[0], "ids": ["a", "b"]}).encode(), SERVE_TOKEN, 422),
        (json.dumps({**valid[0], "metadata": [{"age": "old"}]}).encode(), SERVE_TOKEN, 422),
        (good.replace('"age": 40', '"age": NaN').encode(), SERVE_TOKEN, 422),
        (good[: len(good) // 2].encode(), SERVE_TOKEN, 400),
        (json.dumps({**valid[0], "models": ["nope"]}).encode(), SERVE_TOKEN, 404),
        (good.encode(), b"Bearer t\xc3\xb6k", 401),
        (good.encode(), None, 401),
    ]
    rss0 = _serve_rss()
    deadline, budget = time.monotonic() + 20.0, threading.Semaphore(3000)
    lock = threading.Lock()
    seen = {"valid": 0, "invalid": 0}
    problems: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline and budget.acquire(blocking=False):
            try:
                if rng.random() < 0.5:
                    k = rng.randrange(len(valid))
                    status, out, _ = call(server, "POST", "/predict", valid[k], timeout=90)
                    ok = status == 200 and np.abs(np.asarray(out["probs"]) - single[k]).max() <= 1e-5
                    kind, what = "valid", f"valid {k}: {status} {str(out)[:120]}"
                else:
                    raw, token, want = invalid[rng.randrange(len(invalid))]
                    status, out, _ = call(server, "POST", "/predict", raw=raw, token=token, timeout=90)
                    ok = status == want and bool(out and out.get("error"))
                    kind, what = "invalid", f"invalid (want {want}): {status} {str(out)[:120]}"
            except OSError as e:  # refused, reset, timed out: the server did not hold
                ok, kind, what = False, "error", f"{type(e).__name__}: {e}"
            with lock:
                seen[kind] = seen.get(kind, 0) + 1
                if not ok:
                    problems.append(what)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(200)
    print(f"soak: {seen}, Serve RSS {rss0 / 1e6:.0f} MB before")
    assert not problems, f"{len(problems)} wrong answers, e.g. {problems[:3]}"
    assert seen["valid"] >= 20 and seen["invalid"] >= 20, seen
    status, out, _ = call(server, "GET", "/health")
    assert status == 200 and out["ok"]  # still up
    rss1 = _serve_rss()
    print(f"soak: Serve RSS {rss1 / 1e6:.0f} MB after")
    assert rss1 - rss0 < max(300e6, 0.5 * rss0), f"Serve processes grew from {rss0 / 1e6:.0f} to {rss1 / 1e6:.0f} MB"
