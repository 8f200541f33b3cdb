"""Benchmark: one ensemble, every backend, side by side in one run.

The shipped derm ensemble of 4 with d4 TTA on N held-out HAM10000 images (the fold each card records; the
built-in demo set when HAM10000 is absent):

1. ms per image on the CPU for torch naive (one image x one view x one model per forward), torch batched,
   onnx fp32 and onnx int8 (onnxruntime), with the largest probability difference to torch batched;
2. the model server (``lesion serve`` on a local Ray instance): throughput and p50 / p95 request latency
   under 1, 4 and 16 concurrent clients (each request: 4 images);
3. Ray Data (``lesion evaluate cls --engine ray``): images per second with 1 and 2 actors.

Run: ``python bench/bench_backends.py [--n 256] [--threads 2] [--skip-server] [--skip-ray] [--out FILE]``.
The machine's load average is printed: times hold only for the machine named.
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import data_root, emit  # noqa: E402  (repository on sys.path, offline settings)

MODELS = ("derm_cls_efficientnet_lite0_focal", "derm_cls_efficientnet_lite0_ohem", "derm_cls_efficientnet_lite1_bce",
          "derm_multitask_efficientnet_lite0")
ONNX_BAR = 2.0


def _records(root, n: int):
    from lesion.data import load_dataset
    from lesion.data.spec import open_data
    from lesion.train.heldout import held_out
    from lesion.zoo import read_model_card

    ham = root / "HAM10000"
    if ham.is_dir():
        split = held_out(read_model_card(MODELS[0]), load_dataset(ham))
        return split.records[:n], f"HAM10000 held-out ({split.how}), first {min(n, len(split.records))} images"
    recs = open_data("demo:derm").records[:n]
    return recs, f"demo dermoscopy (HAM10000 not found), {len(recs)} images"


def _row(name: str, ms: float, ref_ms: float | None, diff: float | None) -> str:
    speed = f"{ref_ms / ms:.2f}x" if ref_ms else ""
    d = f"{diff:.1e}" if diff is not None else ""
    return f"| {name} | {ms:.1f} | {speed} | {d} |"


def run(root, n: int, threads: int, server: bool, ray_data: bool, device: str = "cpu") -> str:
    import torch

    from lesion.data.io import read_image
    from lesion.infer.engine import predict, predict_naive
    from lesion.serving.onnx_backend import onnx_members
    from lesion.zoo import load_model

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    records, what = _records(root, n)
    images = [read_image(r.image_path) for r in records]
    items = [(im, dict(r.meta or {})) for im, r in zip(images, records)]
    members = [load_model(m) for m in MODELS]
    out = [f"bench_backends  ({time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
           f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, torch threads {threads})",
           f"data: {what}; ensemble of {len(MODELS)} with d4 TTA (8 views), images decoded in memory", "",
           f"1. ms per image (torch on {device}, onnx on the CPU)", "", "| backend | ms / image | vs torch batched | max abs Δp vs torch batched |",
           "|---|---|---|---|"]
    naive_n = min(len(items), 32)
    t = time.perf_counter()
    naive = predict_naive(members, items[:naive_n], tta="d4", device=device)
    naive_ms = (time.perf_counter() - t) * 1000 / naive_n
    t = time.perf_counter()
    batched = predict(members, items, tta="d4", device=device)
    batched_ms = (time.perf_counter() - t) * 1000 / len(items)
    calib = [im for im in images[: min(64, len(images))]]
    fp32 = onnx_members(members, threads=threads)
    int8 = onnx_members(members, int8=True, calibration=calib, threads=threads)
    t = time.perf_counter()
    onnx32 = predict(fp32, items, tta="d4", device="cpu")
    onnx32_ms = (time.perf_counter() - t) * 1000 / len(items)
    t = time.perf_counter()
    onnx8 = predict(int8, items, tta="d4", device="cpu")
    onnx8_ms = (time.perf_counter() - t) * 1000 / len(items)
    out += [_row(f"torch naive (first {naive_n} images)", naive_ms, batched_ms,
                 float(np.abs(naive.probs - batched.probs[:naive_n]).max())),
            _row("torch batched", batched_ms, batched_ms, 0.0),
            _row("onnx fp32 (onnxruntime)", onnx32_ms, batched_ms, float(np.abs(onnx32.probs - batched.probs).max())),
            _row("onnx int8 (static QDQ)", onnx8_ms, batched_ms, float(np.abs(onnx8.probs - batched.probs).max()))]
    ratio = batched_ms / onnx32_ms
    out.append(f"\nbar: onnx batched >= {ONNX_BAR}x torch batched: {'MET' if ratio >= ONNX_BAR else 'NOT MET'} "
               f"({ratio:.2f}x fp32, {batched_ms / onnx8_ms:.2f}x int8)")
    if server:
        out += ["", *_server_table(records, members, device)]
    if ray_data:
        out += ["", *_ray_table(records, batched)]
    return "\n".join(out)


def _server_table(records, members, device: str = "cpu") -> list[str]:
    from lesion.serving import server as srv
    from lesion.serving.backends import predict
    from lesion.serving.client import RemoteClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv.start(srv.ServeConfig(models=MODELS, port=port, device=device), num_cpus=os.cpu_count())
    lines = [f"2. Model server (lesion serve, local Ray, models on {device}), requests of 4 images, d4 TTA",
             "", "| concurrent clients | requests | images / s | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    try:
        client = RemoteClient(f"http://127.0.0.1:{port}")
        remote = client.members([c for _, c in members])  # the served weights checked once
        chunks = [records[i:i + 4] for i in range(0, min(len(records), 64), 4)]
        predict(remote, chunks[0], tta="d4")  # warm-up
        for clients in (1, 4, 16):
            lat = []

            def one(chunk):
                t = time.perf_counter()
                predict(remote, chunk, tta="d4")
                lat.append((time.perf_counter() - t) * 1000)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, chunks))
            wall = time.perf_counter() - t0
            q = statistics.quantiles(lat, n=20)
            lines.append(f"| {clients} | {len(chunks)} | {4 * len(chunks) / wall:.1f} | {statistics.median(lat):.0f} "
                         f"| {q[18]:.0f} |")
    finally:
        srv.stop()
    return lines


def _ray_table(records, reference) -> list[str]:
    from lesion.serving.batch import ray_predict

    lines = ["3. Ray Data (local instance), d4 TTA", "", "| actors | images / s | max abs Δp vs torch batched |",
             "|---|---|---|"]
    for actors in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            res = ray_predict(MODELS, records, tta="d4", actors=actors, work_dir=d, num_cpus=os.cpu_count())
            wall = time.perf_counter() - t
        lines.append(f"| {actors} | {len(records) / wall:.1f} | {float(np.abs(res.probs - reference.probs).max()):.1e} |")
    lines.append("(wall time includes starting the local Ray instance and loading the models in each actor)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="folder holding HAM10000/ (default ../shared/data)")
    ap.add_argument("--n", type=int, default=256, help="held-out images")
    ap.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    ap.add_argument("--device", default="cpu", help="where torch and the server run (cpu, cuda)")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    a = ap.parse_args(argv)
    return emit(run(data_root(a.data_root), a.n, a.threads, not a.skip_server, not a.skip_ray, a.device), a.out)


if __name__ == "__main__":
    raise SystemExit(main())
