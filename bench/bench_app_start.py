"""Benchmark: seconds from `streamlit run app.py` to the Home page visible in a browser (demo data cached).

Target: <= 5 s. The demo set is generated (and cached) before timing, as a user's second start would find it.
Drives Debian's Chromium headless through Playwright's Python API. Run: ``python bench/bench_app_start.py``.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 5.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(env: dict, browser) -> float:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        page = browser.new_page()
        deadline = time.time() + 60
        while True:  # the server is not listening yet: retry the navigation
            try:
                page.goto(f"http://127.0.0.1:{port}/", timeout=5000)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        page.get_by_text("With masks").first.wait_for(timeout=60000)  # the demo data set's figures are drawn
        elapsed = time.perf_counter() - t0
        page.close()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    env.setdefault("LESION_CACHE", tempfile.mkdtemp(prefix="lesion-bench-"))
    sys.path.insert(0, str(ROOT))
    os.environ["LESION_CACHE"] = env["LESION_CACHE"]
    from lesion.data.demo import demo_root

    demo_root("derm"), demo_root("cxr")  # cached before timing
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(args.runs):
            times.append(one_start(env, browser))
        browser.close()
    med = statistics.median(times)
    print("| measure | runs | median s | min s | target s | pass |")
    print("|---|---|---|---|---|---|")
    print(f"| app start -> Home visible (demo cached) | {len(times)} | {med:.2f} | {min(times):.2f} | {TARGET_S:.0f} | "
          f"{'PASS' if med <= TARGET_S else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
