"""End to end: the real app under ``streamlit run``, driven by a headless Chromium through Playwright.

Opens every page by URL at 1400 × 1000, waits for its title and saves a full-page screenshot (test artefacts:
``$LESION_SCREENSHOTS`` when set, else a temporary folder); then drives the paths of issue 13 in one browser
session: a real-data folder chosen once on Home and kept across three pages (sidebar navigation), the fusion page
on that folder (PH2: no id column), an upload after the session's upload folder was removed, and no Plotly chart
of the main pages (Models, Chest X-ray, Segmentation, Classification, Multi-view fusion, after their runs)
narrower than 300 px. Skips when Debian's ``/usr/bin/chromium`` or Playwright is missing (we
never run ``playwright install``: no downloads).
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
    ("", "views/home.py", "lesion-lab"),
    ("segmentation", "views/segmentation.py", "Segmentation"),
    ("classification", "views/classification.py", "Classification"),
    ("explain", "views/explain.py", "Explain"),
    ("review", "views/review.py", "Failure review"),
    ("slices", "views/slices.py", "Slices"),
    ("shortcuts", "views/shortcuts.py", "Shortcut audit"),
    ("embedding", "views/embedding.py", "Embedding map"),
    ("fusion", "views/fusion.py", "Multi-view fusion"),
    ("chest-xray", "views/chest_xray.py", "Chest X-ray"),
    ("upload", "views/upload.py", "Upload"),
    ("models", "views/models.py", "Models"),
]
VIEWPORT = {"width": 1400, "height": 1000}


def _shots() -> Path:
    """Where screenshots go: ``$LESION_SCREENSHOTS`` (kept as test artefacts) or a temporary folder."""
    import tempfile

    dest = Path(os.environ.get("LESION_SCREENSHOTS") or Path(tempfile.gettempdir()) / "lesion-e2e-screenshots")
    dest.mkdir(parents=True, exist_ok=True)
    return dest

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
        yield url, cache
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


def test_a_deep_link_on_a_fresh_server_opens_the_routed_page(server, browser):
    """The first request after a start is a bookmark of a page (it runs first in this module, on a fresh server):
    the router's page opens — wide layout, titled navigation — not Streamlit's old multipage mode, which a folder
    named ``pages/`` beside ``app.py`` would switch on (centred 736-px layout, file names as navigation)."""
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(f"{url}/review", wait_until="domcontentloaded", timeout=60_000)
        page.locator("h1", has_text="Failure review").first.wait_for(timeout=150_000)
        _wait_done(page)
        nav = page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
        assert any(t.strip().endswith("Failure review") for t in nav), nav  # the router's titles, not file names
        width = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]')"
                              ".getBoundingClientRect().width")
        assert width > 900, width
    finally:
        page.close()


@pytest.mark.parametrize("path,page_file,title", PAGES, ids=[p[1] for p in PAGES])
def test_page_renders(server, browser, path, page_file, title):
    server, _ = server
    if page_file not in APP_TEXT:
        pytest.skip(f"{page_file} is not registered in {APP} yet")
    page = browser.new_page(viewport=VIEWPORT)
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
        assert not _layout_problems(page), (page_file, _layout_problems(page))
        shot = _shots() / f"{Path(page_file).stem}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


# ------------------------------------------------------------------------------------------------ issue 13 paths
def _wait_done(page, timeout: int = 150_000) -> None:
    """Wait until the page's script has finished (the sidebar shows the device) and no run is in progress."""
    page.get_by_text("Compute device").first.wait_for(timeout=timeout)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(500)
    assert page.locator("[data-testid='stException']").count() == 0


def _nav(page, title: str) -> None:
    """Go to a page by the sidebar's navigation (the same browser session, unlike a new URL)."""
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    page.locator("h1", has_text=title).first.wait_for(timeout=150_000)
    _wait_done(page)


def _plotly_widths(page) -> list[float]:
    return page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')]"
                         ".map(e => e.getBoundingClientRect().width)")


#: What a 1,400 × 1,000 window must show readably (issue 21.5), measured in the page's main area.
LAYOUT_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  const edge = main.getBoundingClientRect().right + 1;
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const out = {tables_cut: [], small_images: [], overlapping_charts: [], legends_outside: [], crowded_charts: []};
  main.querySelectorAll('[data-testid="stDataFrame"]').forEach(e => {
    if (shown(e) && e.getBoundingClientRect().right > edge) out.tables_cut.push(e.getBoundingClientRect().right);
  });
  main.querySelectorAll('[data-testid="stImage"] img').forEach(i => {
    if (shown(i) && i.getBoundingClientRect().width < 180) out.small_images.push(Math.round(i.getBoundingClientRect().width));
  });
  const plots = [...main.querySelectorAll('.js-plotly-plot')].filter(shown);
  const rects = plots.map(p => p.getBoundingClientRect());
  for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {
    const a = rects[i], b = rects[j];
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left), h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 2 && h > 2) out.overlapping_charts.push([i, j]);
  }
  plots.forEach((p, i) => {
    const svg = p.querySelector('.main-svg'), leg = p.querySelector('.legend');
    if (svg && leg) {
      const a = leg.getBoundingClientRect(), b = svg.getBoundingClientRect();
      if (a.width > 0 && (a.left < b.left - 1 || a.right > b.right + 1 || a.top < b.top - 1 || a.bottom > b.bottom + 1))
        out.legends_outside.push(i);
    }
    const series = (p.data || []).filter(t => t.showlegend !== false && t.visible !== 'legendonly').length;
    if (series > 8) out.crowded_charts.push(series);
  });
  return out;
}"""


def _layout_problems(page) -> dict:
    """Tables past the main area's right edge, images under 180 px wide, charts on top of each other, legends
    outside their chart, charts with more than 8 overlaid series: each list must be empty."""
    return {k: v for k, v in page.evaluate(LAYOUT_JS).items() if v}


def test_folder_kept_across_pages_and_fusion_without_id_column(server, browser, shared_data):
    url, _ = server
    folder = str(shared_data / "PH2")
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        _wait_done(page)
        page.get_by_text("Folder on this machine").first.click()
        box = page.locator("input[aria-label='Folder path']")
        box.fill(folder)
        box.press("Enter")
        page.get_by_text("PH2", exact=False).first.wait_for(timeout=60_000)
        _wait_done(page)
        for title in ("Segmentation", "Classification", "Multi-view fusion"):
            _nav(page, title)
            assert page.locator("input[aria-label='Folder path']").input_value() == folder, title  # chosen once, kept
            assert page.get_by_text("Data set: PH2", exact=False).count() or page.get_by_text("PH2").count()
        # PH2 has a diagnosis column but no id column: fusion proposes none, and says why
        assert page.get_by_text("no id column that repeats", exact=False).count() >= 1
        page.screenshot(path=str(_shots() / "fusion_ph2_no_id_column.png"), full_page=True)
    finally:
        page.close()


def _png_file(folder: Path, name: str, shade: int) -> Path:
    import numpy as np
    from PIL import Image

    img = np.full((160, 220, 3), (210, 170, 140), np.uint8)
    img[50:110, 70:140] = (shade, 40, 30)
    path = folder / name
    Image.fromarray(img).save(path)
    return path


def test_upload_after_its_folder_was_removed(server, browser, tmp_path):
    url, cache = server
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(f"{url}/upload", wait_until="domcontentloaded", timeout=60_000)
        _wait_done(page)
        chooser = page.locator("[data-testid='stFileUploader'] input[type='file']").first
        chooser.set_input_files(str(_png_file(tmp_path, "first.png", 90)))
        page.get_by_text("first.png (220×160)", exact=False).first.wait_for(timeout=150_000)
        _wait_done(page)
        uploads = cache / "uploads"
        assert list(uploads.glob("*/image/first.png"))
        shutil.rmtree(uploads)  # the temp storage disappears while the session lives
        chooser.set_input_files(str(_png_file(tmp_path, "second.png", 60)))
        page.get_by_text("second.png (220×160)", exact=False).first.wait_for(timeout=150_000)  # the new image's caption
        _wait_done(page)
        assert list(uploads.glob("*/image/second.png"))  # recreated, no FileNotFoundError
        assert page.get_by_text("FileNotFoundError").count() == 0
        page.screenshot(path=str(_shots() / "upload_after_folder_removed.png"), full_page=True)
    finally:
        page.close()


def test_no_plotly_chart_is_narrower_than_300px(server, browser):
    """Models (training curves) and Chest X-ray (per-finding ROC, after a run on the 60 demo radiographs)."""
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(f"{url}/models", wait_until="domcontentloaded", timeout=60_000)
        _wait_done(page)
        widths = _plotly_widths(page)
        assert not _layout_problems(page), _layout_problems(page)
        page.goto(f"{url}/", wait_until="domcontentloaded", timeout=60_000)
        _wait_done(page)
        page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
        page.get_by_role("option", name="Demo chest X-ray (synthetic)").click()
        _wait_done(page)
        _nav(page, "Chest X-ray")
        run = page.get_by_role("button", name="Run on the data set")
        if run.count():
            run.click()
            page.locator(".js-plotly-plot").first.wait_for(timeout=150_000)
            _wait_done(page)
            widths += _plotly_widths(page)
            page.screenshot(path=str(_shots() / "chest_xray_after_run.png"), full_page=True)
        if not widths:
            pytest.skip("no chart drawn (no checkpoints with histories or chest X-ray models)")
        assert min(widths) >= 300, widths
    finally:
        page.close()


def test_no_plotly_chart_on_the_scored_pages_is_narrower_than_300px(server, browser):
    """Segmentation (whole data set), Classification (the ensemble), Multi-view fusion, Shortcut audit and Embedding
    map after their runs on the demo set: every chart at least 300 px wide and no layout problem (LAYOUT_JS)."""
    url, _ = server
    page = browser.new_page(viewport=VIEWPORT)
    widths: dict[str, list[float]] = {}
    try:
        page.goto(f"{url}/", wait_until="domcontentloaded", timeout=60_000)
        _wait_done(page)
        for title, button in (("Segmentation", "Run on the whole data set"), ("Classification", "Run the ensemble"),
                              ("Multi-view fusion", "Run fusion"), ("Shortcut audit", "Run the audit"),
                              ("Embedding map", "Compute the map")):
            _nav(page, title)
            run = page.get_by_role("button", name=button)
            if not run.count():
                continue
            run.first.click()
            page.wait_for_timeout(1000)
            _wait_done(page, timeout=240_000)
            if title != "Multi-view fusion":  # these always draw charts after a run: wait until they are drawn
                page.locator(".js-plotly-plot").first.wait_for(timeout=240_000)
                page.wait_for_timeout(500)
            widths[title] = _plotly_widths(page)
            assert not _layout_problems(page), (title, _layout_problems(page))
            page.screenshot(path=str(_shots() / f"{title.lower().replace(' ', '_')}_after_run.png"), full_page=True)
        drawn = [w for ws in widths.values() for w in ws]
        if not drawn:
            pytest.skip("no chart drawn on these pages (no checkpoints)")
        assert widths.get("Segmentation"), widths  # the whole-data-set histogram and scatter at least
        assert min(drawn) >= 300, widths
    finally:
        page.close()
