"""Ensemble speed with torch's thread settings, on an idle machine and with one other busy process, side by side.

    python bench/bench_threads.py [--images 16]

Each case runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads, so it cannot be changed
afterwards): the four shipped derm classifiers with d4 TTA over the first demo images, through the one
``predict``. Settings: torch's default threads with OpenMP's default (spinning) wait policy, default threads with
``OMP_WAIT_POLICY=PASSIVE`` (what ``import lesion`` sets unless the environment says otherwise), and one thread.
"Loaded" starts one other process that keeps a core busy with single-threaded matrix products for the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = (
    ("torch default threads, OMP_WAIT_POLICY=ACTIVE (spinning)", {"OMP_WAIT_POLICY": "ACTIVE"}, 0),
    ("torch default threads, OMP_WAIT_POLICY=PASSIVE (lesion's default)", {"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    ("one thread", {"OMP_WAIT_POLICY": "PASSIVE"}, 1),
)

_CHILD = """
import json, sys, time, torch
threads = int(sys.argv[1]); n = int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
from lesion.data.spec import open_data
from lesion.data.io import read_image
from lesion.infer.engine import predict
from lesion.zoo import load_model
names = ("derm_cls_efficientnet_lite0_focal", "derm_cls_efficientnet_lite0_ohem", "derm_cls_efficientnet_lite1_bce",
         "derm_multitask_efficientnet_lite0")
members = [load_model(m) for m in names]
images = [read_image(r.image_path) for r in open_data("demo:derm").records[:n]]
predict(members, images[:2], tta="d4", device="cpu")
t = time.perf_counter()
predict(members, images, tta="d4", device="cpu")
print(json.dumps({"ms": (time.perf_counter() - t) * 1000 / n, "threads": torch.get_num_threads()}))
"""

_BUSY = """
import numpy as np, os, time
os.environ["OMP_NUM_THREADS"] = "1"
a = np.random.rand(400, 400)
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    a = (a @ a) / 400.0
"""


def _run(env_extra: dict, threads: int, n: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(n)], env=env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=16)
    a = p.parse_args(argv)
    print(f"bench_threads ({time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}; 4 derm classifiers x d4, "
          f"{a.images} demo images)\n")
    print("| settings | threads | idle: ms / image | loaded (1 busy process): ms / image | loaded / idle |")
    print("|---|---|---|---|---|")
    for name, env, threads in CASES:
        idle = _run(env, threads, a.images)
        busy = subprocess.Popen([sys.executable, "-c", _BUSY, "3600"], env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            time.sleep(1.0)
            loaded = _run(env, threads, a.images)
        finally:
            busy.kill()
            busy.wait()
        print(f"| {name} | {idle['threads']} | {idle['ms']:.0f} | {loaded['ms']:.0f} | "
              f"{loaded['ms'] / idle['ms']:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
