"""End to end: the real app under ``streamlit run``, driven by a headless Chromium through Playwright.

Opens Home, Segmentation, Explain and Failure review by URL, waits for each page's title and saves a
screenshot (to a temporary folder, copied to ``$LESION_SCREENSHOTS`` when set). Skips when Debian's
``/usr/bin/chromium`` or Playwright is missing (we never run ``playwright install``: no downloads).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
#: The entry script (relative to the repo root); overridable to try pages before they are routed in app.py.
APP = os.environ.get("LESION_E2E_APP", "app.py")
APP_TEXT = (ROOT / APP).read_text()

#: (URL path, page file, title shown on the page)
PAGES = [
    ("", "pages/home.py", "lesion-lab"),
    ("segmentation", "pages/segmentation.py", "Segmentation"),
    ("explain", "pages/explain.py", "Explain"),
    ("review", "pages/review.py", "Failure review"),
    ("chest-xray", "pages/chest_xray.py", "Chest X-ray"),
    ("fusion", "pages/fusion.py", "Multi-view fusion"),
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights_folder(root: Path) -> Path | None:
    """Shipped weights when they hold a derm classifier; else a copy of them plus a tiny untrained multi-task
    model (64 px), so the Explain page draws heatmaps in the screenshots. None keeps the default folder."""
    from lesion.weights import list_weights

    if [c for c in list_weights(domain="derm") if c.task in ("classification", "multitask")]:
        return None
    import torch

    from lesion.card import ModelCard, Preprocessing
    from lesion.classify.classifier import create_model
    from lesion.classify.multitask import MultiTaskConfig
    from lesion.paths import WEIGHTS_DIR
    from lesion.weights import save_checkpoint

    folder = root / "weights"
    if WEIGHTS_DIR.is_dir():
        shutil.copytree(WEIGHTS_DIR, folder)
    torch.manual_seed(0)
    cfg = MultiTaskConfig(arch="resnet10t", size=64)
    prep = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=False)
    save_checkpoint(create_model(cfg), folder / "e2e_tiny_multitask_untrained",
                    ModelCard(name="e2e_tiny_multitask_untrained", task="multitask", domain="derm",
                              classes=("melanoma",), target="melanoma", arch="resnet10t", model={**cfg.__dict__},
                              preprocessing=prep, notes="untrained, for the end-to-end test"))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app.py`` on a free port; stopped by its own PID at the end."""
    port = _free_port()
    cache = tmp_path_factory.mktemp("e2e-cache")
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", LESION_CACHE=str(cache),
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    weights = _weights_folder(cache)
    if weights is not None:
        env["LESION_WEIGHTS_DIR"] = str(weights)
    log = open(cache / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"streamlit did not start: {(cache / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.mark.parametrize("path,page_file,title", PAGES, ids=[p[1] for p in PAGES])
def test_page_renders(server, browser, tmp_path, path, page_file, title):
    if page_file not in APP_TEXT:
        pytest.skip(f"{page_file} is not registered in {APP} yet")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded", timeout=60_000)
        page.locator("h1", has_text=title).first.wait_for(timeout=150_000)
        # The page has finished its run when the sidebar shows the device (written by finish_page()) or a
        # message box; either way no Python traceback may be on screen.
        page.get_by_text("Compute device").first.wait_for(timeout=150_000)
        if path == "explain":  # with a classifier present, the heatmap panels must appear
            page.get_by_text("gradcam++").first.wait_for(timeout=150_000)
            page.wait_for_function(
                "() => { const im = [...document.querySelectorAll('[data-testid=\"stImage\"] img')];"
                " return im.length >= 5 && im.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=60_000)
        page.wait_for_timeout(1500)  # let tables (canvas) and charts paint before the screenshot
        assert page.locator("[data-testid='stException']").count() == 0
        shot = tmp_path / f"{Path(page_file).stem}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        dest = os.environ.get("LESION_SCREENSHOTS")
        if dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(dest) / shot.name)
    finally:
        page.close()
