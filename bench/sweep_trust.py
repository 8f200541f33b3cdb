#!/usr/bin/env python
"""Trust sweep (issue 12): bad input and faults tried as a hostile but fair user would.

Every case builds its input in a temporary folder from generated images and masks whose answer is known
(lesion.data.demo, numpy, PIL), runs it against the CLI (``.venv/bin/lesion`` subprocesses), the library,
the Upload page (streamlit AppTest) or one ``lesion serve`` on 127.0.0.1 (the HTTP cases, a 4xx expected),
and declares what it expects:

* ``error``   - one readable error line and exit code 2 (ideally before any work);
* ``result``  - exit 0 and the known answer (IoU of a drawn disk, AUC 0.5 of identical images, ...);
* ``warning`` - the known answer *and* a ``warning``/note line that says what happened;
* ``either``  - a clear error or the right result are both fair.

Each outcome is classified automatically as ``clear error``, ``right result``, ``silently wrong`` (a wrong
number, a bad input accepted, a missing warning), ``traceback`` (a Python traceback, a crash, an exit code
other than 0/2) or ``data lost`` (a pre-existing user file changed or removed; this wins over the rest).

Nothing is written into the repository: LESION_CACHE, LESION_WEIGHTS_DIR, --runs-dir and the working
directory of every command point into the temporary folder; the shipped weights are copied there when a case
corrupts or replaces one, and the repository's ``weights/`` is hashed before and after the sweep.

    .venv/bin/python bench/sweep_trust.py [--keep] [--jobs 2] [--only SUBSTRING] [--tree DIR]

``--tree DIR`` sweeps another copy of the sources (e.g. ``git archive HEAD | tar -x -C DIR``, to measure the
committed state while the working tree is being edited): the commands run with ``PYTHONPATH=DIR`` and its
``weights/`` is the shipped folder.

Prints one table (case, expected, outcome, category) and the totals per category; exits 0.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
LESION = str(VENV / "lesion")
PYTHON = str(VENV / "python") if (VENV / "python").exists() else sys.executable
SHIPPED = REPO / "weights"

CATEGORIES = ("clear error", "right result", "silently wrong", "traceback", "data lost")
TINY_SEG = ["--arch", "unet", "--encoder", "resnet18", "--encoder-depth", "3", "--init", "random", "--size", "64",
            "--epochs", "1", "--batch-size", "4", "--patience", "0", "--augment", "0", "--device", "cpu",
            "--val-fraction", "0.25", "--threads", "1"]
TINY_CLS = ["--arch", "resnet10t", "--size", "64", "--epochs", "1", "--batch-size", "4", "--patience", "0",
            "--device", "cpu", "--n-splits", "2", "--threads", "1"]
FOCAL = "derm_cls_efficientnet_lite0_focal"
OHEM = "derm_cls_efficientnet_lite0_ohem"
DERM_UNET = "derm_unet_efficientnet_lite0"
LUNG_UNET = "lung_unet_efficientnet_lite0"


# ============================================================================================ running things
@dataclass
class Run:
    rc: int
    out: str
    err: str
    wall: float

    @property
    def last_json(self) -> dict | None:
        for line in reversed(self.out.strip().splitlines()):
            try:
                v = json.loads(line)
                return v if isinstance(v, dict) else None
            except ValueError:
                continue
        return None

    def error_lines(self) -> list[str]:
        text = self.err.replace("\r", "\n")
        return [ln.strip() for ln in text.splitlines() if re.search(r"\berror\b", ln, re.I)]

    def warning_text(self) -> str:
        return self.err.replace("\r", "\n")


class Ctx:
    """Shared temporary folder, environment and fixtures built once."""

    def __init__(self, root: Path):
        self.T = root
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.weights = root / "weights"          # a copy of the shipped weights (cases may corrupt copies of it)
        self.cache = root / "cache"
        self.env = dict(os.environ)
        self.env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1",
                        LESION_CACHE=str(self.cache), LESION_WEIGHTS_DIR=str(self.weights),
                        PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1")
        self.fixtures: dict[str, Any] = {}
        self.cleanups: list[Callable[[], None]] = []  # run after every case (a server to stop)
        self._n = 0
        self._lock = threading.Lock()

    def tmp(self, name: str) -> Path:
        with self._lock:
            self._n += 1
            p = self.T / "cases" / f"{self._n:03d}-{re.sub(r'[^A-Za-z0-9]+', '_', name)[:40]}"
        p.mkdir(parents=True)
        return p

    def lesion(self, *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 400) -> Run:
        return self.run([LESION, *map(str, args)], env=env, cwd=cwd, timeout=timeout)

    def run(self, argv: list[str], env: dict | None = None, cwd: Path | None = None, timeout: int = 400) -> Run:
        e = dict(self.env)
        e.update(env or {})
        t0 = time.time()
        try:
            p = subprocess.run(argv, env=e, cwd=str(cwd or self.cwd), capture_output=True, text=True,
                               timeout=timeout)
            return Run(p.returncode, p.stdout, p.stderr, time.time() - t0)
        except subprocess.TimeoutExpired as ex:
            return Run(124, ex.stdout or "" if isinstance(ex.stdout, str) else "", f"TIMEOUT after {timeout}s",
                       time.time() - t0)

    def python(self, code: str, env: dict | None = None, timeout: int = 400) -> Run:
        return self.run([PYTHON, "-c", textwrap.dedent(code)], env=env, timeout=timeout)


# ============================================================================================ protection
def digest_tree(paths) -> dict[str, str | None]:
    """sha256 of every file under ``paths`` (files or folders); a missing path maps to None."""
    out: dict[str, str | None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = None
    return out


def lost(before: dict[str, str | None]) -> list[str]:
    """Files of ``before`` that were changed or removed."""
    bad = []
    for f, h in before.items():
        if h is None:
            continue
        p = Path(f)
        if not p.is_file():
            bad.append(f"{p.name} removed")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != h:
            bad.append(f"{p.name} changed")
    return bad


# ============================================================================================ judging
@dataclass
class Outcome:
    category: str
    outcome: str
    refused_valid: bool = False


def _tb(run: Run) -> bool:
    return "Traceback (most recent call last)" in run.err or run.rc not in (0, 2)


def _first_tb_line(run: Run) -> str:
    lines = [ln for ln in run.err.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {run.rc}")[:150]


def judge_error(run: Run, must: str | None = None) -> Outcome:
    """Expect exit 2 with one readable error line (``must``: a regex the message should match)."""
    if _tb(run):
        return Outcome("traceback", f"exit {run.rc}: {_first_tb_line(run)}")
    if run.rc == 0:
        return Outcome("silently wrong", "exit 0: the bad input was accepted")
    lines = run.error_lines() or [run.err.strip().splitlines()[-1] if run.err.strip() else "(no message)"]
    msg = lines[-1][:150]
    extra = "" if len(lines) == 1 else f" [{len(lines)} error lines]"
    if must and not re.search(must, run.err, re.I):
        extra += f" [message lacks /{must}/]"
    return Outcome("clear error", f"exit 2: {msg}{extra}")


def judge_result(run: Run, ok: bool, detail: str, warn: str | None = None) -> Outcome:
    """Expect exit 0 and ``ok`` (the known answer); with ``warn`` also a stderr line matching it."""
    if _tb(run):
        return Outcome("traceback", f"exit {run.rc}: {_first_tb_line(run)}")
    if run.rc == 2:
        return Outcome("clear error", f"refused a fair input: {(run.error_lines() or [run.err.strip()])[-1][:140]}",
                       refused_valid=True)
    if not ok:
        return Outcome("silently wrong", detail)
    if warn and not re.search(warn, run.warning_text(), re.I):
        return Outcome("silently wrong", f"{detail}; but no note/warning matching /{warn}/")
    return Outcome("right result", detail + (" + warning" if warn else ""))


def judge_either(run: Run, ok: bool, detail: str, must: str | None = None) -> Outcome:
    """A clear error or the right result are both fair."""
    if _tb(run):
        return Outcome("traceback", f"exit {run.rc}: {_first_tb_line(run)}")
    if run.rc == 2:
        return judge_error(run, must)
    return judge_result(run, ok, detail)


def judge_lib(fn: Callable[[], tuple[bool, str]], expect: str) -> Outcome:
    """Library call in this process: LesionError = clear error, any other exception = traceback."""
    from lesion.errors import LesionError

    try:
        ok, detail = fn()
    except LesionError as e:
        msg = str(e).splitlines()[0][:150] if str(e) else type(e).__name__
        if expect in ("error", "either"):
            return Outcome("clear error", f"{type(e).__name__}: {msg}")
        return Outcome("clear error", f"refused a fair input: {type(e).__name__}: {msg}", refused_valid=True)
    except Exception as e:  # noqa: BLE001
        return Outcome("traceback", f"{type(e).__name__}: {str(e)[:140]}")
    if expect == "error":
        return Outcome("silently wrong", f"no error: {detail}")
    return Outcome("right result" if ok else "silently wrong", detail)


# ============================================================================================ registry
@dataclass
class Case:
    name: str
    expected: str
    fn: Callable[[Ctx], Outcome]
    serial: bool = False          # runs in this process (library / AppTest) or depends on shared state
    result: Outcome | None = None
    wall: float = 0.0


CASES: list[Case] = []


def case(name: str, expected: str, serial: bool = False):
    def deco(fn):
        CASES.append(Case(name, expected, fn, serial))
        return fn
    return deco


# ============================================================================================ inputs
def blob(seed: int, h: int = 64, w: int = 64, r: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A dark off-centre disk on light skin-like noise, and its exact mask."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (205, 170, 150)
    img += rng.normal(0, 4, img.shape)
    r = r or int(rng.integers(min(h, w) // 7, min(h, w) // 5))
    cy, cx = int(rng.integers(r + 4, h // 2)), int(rng.integers(r + 4, w // 2))  # upper-left: rotations move it
    yy, xx = np.mgrid[:h, :w]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[m] = (70, 45, 35) + rng.normal(0, 4, (int(m.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), m


def save_png(arr: np.ndarray, path: Path, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)


def blob_set(root: Path, n: int = 4, mask_writer=None, image_writer=None, h: int = 64, w: int = 64) -> Path:
    """A plain folder images/ + masks/ of ``n`` blobs; writers may store image or mask another way."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "blobs", "domain": "derm"}))
    for i in range(n):
        img, m = blob(100 + i, h, w)
        if image_writer:
            image_writer(img, root / "images", f"b{i}")
        else:
            save_png(img, root / "images" / f"b{i}.png")
        if mask_writer:
            mask_writer(m, root / "masks" / f"b{i}.png")
        else:
            save_png((m * 255).astype(np.uint8), root / "masks" / f"b{i}.png")
    return root


def eval_seg(ctx: Ctx, data: Path | str, model: str = "otsu", *extra: str, env=None) -> Run:
    return ctx.lesion("evaluate", "seg", "--model", model, "--data", data, *extra, env=env)


def iou_of(run: Run) -> tuple[float | None, int | None]:
    j = run.last_json or {}
    return j.get("iou"), j.get("n")


def copy_weights(dst: Path, *names: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        for suf in (".safetensors", ".json"):
            shutil.copy2(SHIPPED / f"{n}{suf}", dst / f"{n}{suf}")
    return dst


def ff_inside(path: Path, n: int = 200_000) -> None:
    """Overwrite ``n`` bytes in the middle of the tensor data with 0xFF (fp16 NaN), keeping the size and mtime."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + n] = b"\xff" * n
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def parquet_probs(path: Path) -> np.ndarray:
    import pandas as pd

    df = pd.read_parquet(path)
    cols = [c for c in df.columns if c.startswith("p_") or c in ("prob", "probability", "p")]
    if not cols:
        cols = [c for c in df.columns if df[c].dtype.kind == "f" and c != "label"]
    return df[cols].to_numpy(dtype=float)


# ============================================================================================ fixtures
def build_fixtures(ctx: Ctx) -> None:
    from lesion.data.demo import ensure_demo

    T = ctx.T
    shutil.copytree(SHIPPED, ctx.weights)
    f = ctx.fixtures
    f["derm"] = ensure_demo(T / "data" / "derm", "derm", seed=3, n=16, size=64)
    f["cxr"] = ensure_demo(T / "data" / "cxr", "cxr", seed=3, n=8, size=64)
    f["blobs"] = blob_set(T / "data" / "blobs", n=4)
    # a labelled classification set: 12 demo images, alternating mel / nv (any AUC; both classes present)
    cls = T / "data" / "clsset"
    (cls / "images").mkdir(parents=True)
    rows = ["image,diagnosis"]
    for i, p in enumerate(sorted((f["derm"] / "images").iterdir())[:12]):
        shutil.copy2(p, cls / "images" / p.name)
        rows.append(f"{p.name},{'mel' if i % 2 else 'nv'}")
    (cls / "labels.csv").write_text("\n".join(rows) + "\n")
    (cls / "dataset.json").write_text(json.dumps({"name": "clsset", "domain": "derm"}))
    f["clsset"] = cls


def make_ham(root: Path, n: int = 30, with_rows: int | None = None, dx: dict | None = None,
             ages: dict | None = None, dup: bool = False) -> Path:
    """A HAM10000-layout folder of ``n`` demo images; rows for the first ``with_rows`` only."""
    from PIL import Image

    part = root / "HAM10000_images_part_1"
    part.mkdir(parents=True)
    codes = ["nv", "mel", "bkl", "bcc", "akiec", "df", "vasc"]
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i in range(n):
        img, _ = blob(300 + i)
        iid = f"ISIC_{i:07d}"
        Image.fromarray(img).save(part / f"{iid}.jpg", quality=92)
        if with_rows is None or i < with_rows:
            d = (dx or {}).get(i, codes[i % 7])
            a = (ages or {}).get(i, 40 + i)
            lines.append(f"HAM_{i:07d},{iid},{d},histo,{a},male,back")
            if dup and i == 0:
                lines.append(f"HAM_{i:07d},{iid},mel,histo,{a},male,back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


# ============================================================================================ cases
# ---------------------------------------------------------------- A. training destinations, names, logs
@case("train seg default: own run folder, never weights/", "result", serial=True)
def c_train_default(ctx: Ctx) -> Outcome:
    before = digest_tree([ctx.weights]) | digest_tree([SHIPPED])
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--name", "tiny_seg")
    j = r.last_json or {}
    path = Path(ctx.cwd, j.get("path", "missing"))
    ctx.fixtures["tiny_seg"] = path if path.is_file() else None
    ctx.fixtures["tiny_seg_run"] = Path(ctx.cwd, j.get("run_dir", "missing"))
    ok = path.is_file() and "runs/seg/tiny_seg-" in str(path) and not lost(before)
    return judge_result(r, ok, f"saved {j.get('path')}; weights dirs unchanged={not lost(before)}")


@case("train seg same --name again: earlier run kept", "result", serial=True)
def c_train_name_reuse(ctx: Ctx) -> Outcome:
    run1 = ctx.fixtures.get("tiny_seg_run")
    before = digest_tree([run1]) if run1 and run1.is_dir() else {}
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--name", "tiny_seg")
    j = r.last_json or {}
    runs = sorted((ctx.cwd / "runs" / "seg").glob("tiny_seg-*"))
    bad = lost(before)
    if bad:
        return Outcome("data lost", f"first run's files: {', '.join(bad)}")
    return judge_result(r, len(runs) == 2 and bool(before), f"{len(runs)} run folders; first run intact")


@case("train seg --out a shipped checkpoint --overwrite", "error")
def c_shipped_overwrite(ctx: Ctx) -> Outcome:
    target = SHIPPED / DERM_UNET
    before = digest_tree([target.with_suffix(".safetensors"), target.with_suffix(".json")])
    t = ctx.tmp("shipped")
    r = ctx.lesion("train", "seg", "--data", t / "no-such-data", *TINY_SEG, "--out", target, "--overwrite",
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", "shipped U-Net changed")
    return judge_error(r, "shipped")


@case("train seg --out an existing checkpoint, no --overwrite", "error")
def c_existing_out(ctx: Ctx) -> Outcome:
    t = ctx.tmp("existing")
    copy_weights(t / "mine", DERM_UNET)
    (t / "mine" / f"{DERM_UNET}.history.csv").write_text("epoch,loss\n1,0.5\n")
    before = digest_tree([t / "mine"])
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--out", t / "mine" / DERM_UNET,
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    o = judge_error(r, "already exists")
    if o.category == "clear error" and (t / "runs").exists() and any((t / "runs").rglob("*.safetensors")):
        o.outcome += " [but trained first]"
    return o


@case("train seg --out user's own checkpoint --overwrite", "result", serial=True)
def c_overwrite_user(ctx: Ctx) -> Outcome:
    t = ctx.tmp("overwrite_user")
    (t / "m.safetensors").write_bytes(b"old")
    (t / "m.json").write_text("{}")
    keep = t / "notes.txt"
    keep.write_text("keep me")
    before = digest_tree([keep])
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--out", t / "m", "--overwrite",
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    ok = (t / "m.safetensors").is_file() and (t / "m.safetensors").stat().st_size > 100
    try:
        card_ok = json.loads((t / "m.json").read_text()).get("name") == "m"
    except ValueError:
        card_ok = False
    return judge_result(r, ok and card_ok, f"replaced as asked (card name m: {card_ok})")


@case("train seg --log-csv onto an existing file", "either")
def c_log_csv(ctx: Ctx) -> Outcome:
    t = ctx.tmp("logcsv")
    log = t / "mylog.csv"
    log.write_text("my,own\n1,2\n")
    before = digest_tree([log])
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--log-csv", log,
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", "mylog.csv overwritten")
    return judge_either(r, True, "log written elsewhere; file kept")


@case("train cls --out an existing stem with history.csv", "error")
def c_cls_existing(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cls_existing")
    for f, txt in (("model.safetensors", "weights"), ("model.json", "{}"), ("model.history.csv", "e\n1\n"),
                   ("history.csv", "epoch\n1\n")):
        (t / f).write_text(txt)
    before = digest_tree([t])
    r = ctx.lesion("train", "cls", "--data", ctx.fixtures["derm"], *TINY_CLS, "--out", t / "model",
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    o = judge_error(r, "already exists")
    if r.wall > 30:
        o.outcome += f" [after {r.wall:.0f}s]"
    return o


@case("train cxr --out an existing stem", "error")
def c_cxr_existing(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cxr_existing")
    (t / "x.safetensors").write_text("w")
    (t / "x.json").write_text("{}")
    before = digest_tree([t])
    r = ctx.lesion("train", "cxr", "--data", ctx.fixtures["cxr"], "--out", t / "x", "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    return judge_error(r, "already exists")


@case("train seg --out X where X.safetensors is a folder", "error")
def c_out_is_dir(ctx: Ctx) -> Outcome:
    t = ctx.tmp("outdir")
    (t / "m.safetensors").mkdir()
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--out", t / "m", "--overwrite",
                   "--runs-dir", t / "runs")
    return judge_error(r, "folder")


@case("train cls --out inside a file (file/x)", "error")
def c_out_in_file(ctx: Ctx) -> Outcome:
    t = ctx.tmp("outinfile")
    (t / "afile").write_text("keep")
    before = digest_tree([t / "afile"])
    r = ctx.lesion("train", "cls", "--data", ctx.fixtures["derm"], *TINY_CLS, "--out", t / "afile" / "m",
                   "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", "afile changed")
    return judge_error(r, "is a file")


@case("train seg --runs-dir naming a file", "error")
def c_runs_dir_file(ctx: Ctx) -> Outcome:
    t = ctx.tmp("runsfile")
    (t / "runs").write_text("keep")
    before = digest_tree([t / "runs"])
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--runs-dir", t / "runs")
    if lost(before):
        return Outcome("data lost", "the file was replaced")
    return judge_error(r, "file")


@case("train seg --runs-dir on a read-only file system (/proc)", "error")
def c_runs_readonly(ctx: Ctx) -> Outcome:
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--runs-dir", "/proc/lesion-runs")
    return judge_error(r)


@case("train seg --name ../escape", "error")
def c_name_escape(ctx: Ctx) -> Outcome:
    t = ctx.tmp("escape")
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--name", "../../escape",
                   "--runs-dir", t / "runs")
    return judge_error(r, "name")


@case("train seg --init-from a corrupt checkpoint", "error")
def c_init_from_corrupt(ctx: Ctx) -> Outcome:
    t = ctx.tmp("initfrom")
    (t / "bad.safetensors").write_bytes(os.urandom(5000))
    (t / "bad.json").write_text(json.dumps({"name": "bad", "task": "segmentation", "arch": "unet",
                                            "encoder": "resnet18"}))
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--init-from", t / "bad",
                   "--runs-dir", t / "runs")
    return judge_error(r)


# ---------------------------------------------------------------- B. options
def _opt_case(name: str, argv_fn: Callable[[Ctx, Path], list], must: str | None = None):
    @case(name, "error")
    def _c(ctx: Ctx) -> Outcome:
        t = ctx.tmp(name)
        r = ctx.lesion(*argv_fn(ctx, t), cwd=t)
        o = judge_error(r, must)
        made = [p for p in t.rglob("*") if p.is_file()]
        if o.category == "clear error" and made:
            o.outcome += f" [left {len(made)} file(s)]"
        return o
    return _c


_D = lambda c: str(c.fixtures["derm"])  # noqa: E731
_X = lambda c: str(c.fixtures["cxr"])  # noqa: E731
_opt_case("train seg --size 0", lambda c, t: ["train", "seg", "--data", _D(c), "--size", "0"], "--size")
_opt_case("train seg --size 100 (not /32)", lambda c, t: ["train", "seg", "--data", _D(c), "--size", "100"], "32")
_opt_case("train seg --batch-size 0", lambda c, t: ["train", "seg", "--data", _D(c), "--batch-size", "0"], "batch")
_opt_case("train cls --batch-size 0", lambda c, t: ["train", "cls", "--data", _D(c), "--batch-size", "0"], "batch")
_opt_case("train cxr --batch-size 0", lambda c, t: ["train", "cxr", "--data", _X(c), "--batch-size", "0"], "batch")
_opt_case("train seg --epochs 0", lambda c, t: ["train", "seg", "--data", _D(c), "--epochs", "0"], "epochs")
_opt_case("train cls --epochs 0", lambda c, t: ["train", "cls", "--data", _D(c), "--epochs", "0"], "epochs")
_opt_case("train cls --fold 7 (5 folds)", lambda c, t: ["train", "cls", "--data", _D(c), "--fold", "7"], "fold")
_opt_case("train cls --target nonsense", lambda c, t: ["train", "cls", "--data", _D(c), "--target", "cancer"],
          "target")
_opt_case("train cls --arch no_such_net", lambda c, t: ["train", "cls", "--data", _D(c), *TINY_CLS[2:],
                                                       "--arch", "no_such_net_v9", "--runs-dir", str(t / "r")],
          "no_such_net")
_opt_case("evaluate cls --batch-size -3",
          lambda c, t: ["evaluate", "cls", "--models", FOCAL, "--data", str(c.fixtures["clsset"]), "--batch-size",
                        "-3"], "batch")
_opt_case("evaluate cls --tta sideways",
          lambda c, t: ["evaluate", "cls", "--models", FOCAL, "--data", str(c.fixtures["clsset"]), "--tta",
                        "sideways"], "tta")
_opt_case("evaluate cls --merge median",
          lambda c, t: ["evaluate", "cls", "--models", FOCAL, "--data", str(c.fixtures["clsset"]), "--merge",
                        "median"], "merge")
_opt_case("evaluate cls --models ''",
          lambda c, t: ["evaluate", "cls", "--models", "", "--data", str(c.fixtures["clsset"])], "model")
_opt_case("evaluate cls --models no_such_model",
          lambda c, t: ["evaluate", "cls", "--models", "no_such_model", "--data", str(c.fixtures["clsset"])],
          "no_such_model")
_opt_case("evaluate cls a segmentation model as classifier",
          lambda c, t: ["evaluate", "cls", "--models", DERM_UNET, "--data", str(c.fixtures["clsset"])], None)
_opt_case("evaluate cls --backend remote without --url",
          lambda c, t: ["evaluate", "cls", "--models", FOCAL, "--data", str(c.fixtures["clsset"]), "--backend",
                        "remote"], "url")
_opt_case("evaluate seg --threshold 2",
          lambda c, t: ["evaluate", "seg", "--model", "otsu", "--data", str(c.fixtures["blobs"]), "--threshold",
                        "2"], "threshold")
_opt_case("evaluate seg --model no_such_model",
          lambda c, t: ["evaluate", "seg", "--model", "no_such_model", "--data", str(c.fixtures["blobs"])],
          "no_such_model")
_opt_case("evaluate seg --model a classifier",
          lambda c, t: ["evaluate", "seg", "--model", FOCAL, "--data", str(c.fixtures["blobs"])], None)
_opt_case("export --opset 99", lambda c, t: ["export", FOCAL, "--out", str(t / "x.onnx"), "--opset", "99"], "opset")
_opt_case("export --int8 without --calibrate", lambda c, t: ["export", FOCAL, "--out", str(t / "x.onnx"),
                                                             "--int8"], "calibrate")
_opt_case("demo data --n -4", lambda c, t: ["demo", "data", "--out", str(t / "demo"), "--n", "-4"], None)
_opt_case("lesion frobnicate", lambda c, t: ["frobnicate", "now"], "unknown command")


@case("model card with \"size\": \"big\"", "error")
def c_card_size_big(ctx: Ctx) -> Outcome:
    t = ctx.tmp("card_big")
    copy_weights(t, FOCAL)
    card = json.loads((t / f"{FOCAL}.json").read_text())
    card["preprocessing"]["size"] = "big"
    (t / f"{FOCAL}.json").write_text(json.dumps(card))
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--no-cache")
    return judge_error(r, "size")


@case("model card that is not JSON", "error")
def c_card_garbage(ctx: Ctx) -> Outcome:
    t = ctx.tmp("card_garbage")
    copy_weights(t, FOCAL)
    (t / f"{FOCAL}.json").write_text("{not json")
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none")
    return judge_error(r, "json|card")


@case("weights without their card", "error")
def c_card_missing(ctx: Ctx) -> Outcome:
    t = ctx.tmp("card_missing")
    shutil.copy2(SHIPPED / f"{FOCAL}.safetensors", t / "lonely.safetensors")
    r = ctx.lesion("evaluate", "cls", "--models", t / "lonely", "--data", ctx.fixtures["clsset"], "--tta", "none")
    return judge_error(r, "card")


@case("train seg batch larger than the training set", "either", serial=True)
def c_big_batch(ctx: Ctx) -> Outcome:
    t = ctx.tmp("bigbatch")
    args = [a for a in TINY_SEG]
    args[args.index("--batch-size") + 1] = "64"
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *args, "--runs-dir", t / "runs", "--name", "bb")
    saved = list((t / "runs").rglob("bb.safetensors"))
    if r.rc == 0:
        logs = list((t / "runs").rglob("log.csv"))
        steps_ok = False
        if logs:
            import csv
            rows = list(csv.DictReader(open(logs[0])))
            steps_ok = bool(rows) and all(np.isfinite(float(x.get("train_loss") or "nan")) for x in rows)
        return judge_result(r, bool(saved) and steps_ok, f"saved={bool(saved)}, trained steps={steps_ok}")
    o = judge_error(r, "step|batch")
    if saved:
        o = Outcome("silently wrong", "error but a checkpoint was saved")
    return o


@case("train seg zero optimiser steps (--samples-per-epoch 1)", "either", serial=True)
def c_zero_steps(ctx: Ctx) -> Outcome:
    t = ctx.tmp("zerostep")
    r = ctx.lesion("train", "seg", "--data", ctx.fixtures["derm"], *TINY_SEG, "--samples-per-epoch", "1",
                   "--runs-dir", t / "runs", "--name", "zs")
    saved = list((t / "runs").rglob("zs.safetensors"))
    if r.rc == 0:
        logs = list((t / "runs").rglob("log.csv"))
        rows = []
        if logs:
            import csv
            rows = list(csv.DictReader(open(logs[0])))
        trained = bool(rows) and all(np.isfinite(float(x.get("train_loss") or "nan")) for x in rows)
        return judge_result(r, bool(saved) and trained, f"saved={bool(saved)}, steps taken={trained}")
    o = judge_error(r, "step")
    if saved:
        o = Outcome("silently wrong", "said zero steps but saved a checkpoint")
    return o


@case("export --int8 --calibrate a missing folder: no fp32 left", "error")
def c_int8_bad_calib(ctx: Ctx) -> Outcome:
    t = ctx.tmp("int8")
    r = ctx.lesion("export", FOCAL, "--out", t / "m.onnx", "--int8", "--calibrate", t / "no-such-folder", cwd=t)
    o = judge_error(r, "calibrat|no-such")
    left = [p.name for p in t.iterdir()]
    if o.category == "clear error" and left:
        return Outcome("silently wrong", f"error, but left {left}")
    return o


@case("export --int8 --calibrate an empty folder", "error")
def c_int8_empty_calib(ctx: Ctx) -> Outcome:
    t = ctx.tmp("int8e")
    (t / "empty").mkdir()
    r = ctx.lesion("export", FOCAL, "--out", t / "out" / "m.onnx", "--int8", "--calibrate", t / "empty", cwd=t)
    o = judge_error(r)
    left = [p.name for p in (t / "out").iterdir()] if (t / "out").exists() else []
    if o.category == "clear error" and left:
        return Outcome("silently wrong", f"error, but left {left}")
    return o


# ---------------------------------------------------------------- C. --out files and folders
@case("evaluate seg --out an existing CSV, no --overwrite", "error")
def c_seg_out_exists(ctx: Ctx) -> Outcome:
    t = ctx.tmp("segout")
    (t / "res.csv").write_text("mine\n")
    before = digest_tree([t / "res.csv"])
    r = eval_seg(ctx, ctx.fixtures["blobs"], "otsu", "--out", t / "res.csv")
    if lost(before):
        return Outcome("data lost", "res.csv overwritten")
    return judge_error(r, "exists")


@case("evaluate seg --out naming a folder", "error")
def c_seg_out_dir(ctx: Ctx) -> Outcome:
    t = ctx.tmp("segoutdir")
    r = eval_seg(ctx, ctx.fixtures["blobs"], "otsu", "--out", t)
    return judge_error(r, "folder")


@case("evaluate seg --out on a read-only file system", "error")
def c_seg_out_ro(ctx: Ctx) -> Outcome:
    r = eval_seg(ctx, ctx.fixtures["blobs"], "otsu", "--out", "/proc/self/lesion.csv")
    return judge_error(r)


@case("evaluate cls --out an existing parquet, no --overwrite", "error")
def c_cls_out_exists(ctx: Ctx) -> Outcome:
    t = ctx.tmp("clsout")
    (t / "p.parquet").write_text("mine")
    before = digest_tree([t / "p.parquet"])
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--out", t / "p.parquet")
    if lost(before):
        return Outcome("data lost", "p.parquet overwritten")
    return judge_error(r, "exists")


@case("evaluate cls --out naming a folder", "error")
def c_cls_out_dir(ctx: Ctx) -> Outcome:
    t = ctx.tmp("clsoutdir")
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--out", t)
    return judge_error(r, "folder")


@case("export --out naming a folder", "error")
def c_export_out_dir(ctx: Ctx) -> Outcome:
    t = ctx.tmp("exportdir")
    r = ctx.lesion("export", FOCAL, "--out", t)
    return judge_error(r, "folder")


@case("export --out an existing .onnx, no --overwrite", "error")
def c_export_exists(ctx: Ctx) -> Outcome:
    t = ctx.tmp("exportexists")
    (t / "m.onnx").write_text("mine")
    (t / "m.json").write_text("{}")
    before = digest_tree([t])
    r = ctx.lesion("export", FOCAL, "--out", t / "m.onnx")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    return judge_error(r, "exists")


# ---------------------------------------------------------------- D. integrity
@case("evaluate cls: checkpoint with 200 KB of 0xFF", "error")
def c_ff_cls(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ff_cls")
    copy_weights(t, FOCAL)
    ff_inside(t / f"{FOCAL}.safetensors")
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none")
    return judge_error(r, "sha256")


@case("evaluate cls --no-verify: 0xFF checkpoint outputs NaN", "error")
def c_ff_cls_noverify(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ff_cls_nv")
    copy_weights(t, FOCAL)
    ff_inside(t / f"{FOCAL}.safetensors")
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--no-verify")
    return judge_error(r, "nan|finite|inf")


@case("evaluate seg: U-Net with 200 KB of 0xFF", "error")
def c_ff_seg(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ff_seg")
    copy_weights(t, DERM_UNET)
    ff_inside(t / f"{DERM_UNET}.safetensors")
    r = eval_seg(ctx, ctx.fixtures["blobs"], str(t / DERM_UNET))
    return judge_error(r, "sha256")


@case("library: 0xFF U-Net loaded with verify=False gives NaN", "error", serial=True)
def c_ff_seg_lib(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ff_seg_lib")
    copy_weights(t, DERM_UNET)
    ff_inside(t / f"{DERM_UNET}.safetensors")

    def go():
        from lesion.zoo import load_segmenter

        seg = load_segmenter(t / DERM_UNET, device="cpu", verify=False)
        img, _ = blob(1)
        p = np.asarray(seg(img), dtype=float)
        return bool(np.isfinite(p).all()), f"output finite={np.isfinite(p).all()}"

    return judge_lib(go, "error")


@case("evaluate cls: truncated checkpoint (half the bytes)", "error")
def c_trunc_ckpt(ctx: Ctx) -> Outcome:
    t = ctx.tmp("trunc")
    copy_weights(t, FOCAL)
    p = t / f"{FOCAL}.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--no-verify")
    return judge_error(r, "truncated|corrupt")


@case("evaluate cls: a text file named .safetensors", "error")
def c_text_ckpt(ctx: Ctx) -> Outcome:
    t = ctx.tmp("textckpt")
    copy_weights(t, FOCAL)
    (t / f"{FOCAL}.safetensors").write_text("this is not a checkpoint\n")
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none")
    return judge_error(r)


@case("evaluate cls: LinkNet weights under a U-Net card", "error")
def c_wrong_arch(ctx: Ctx) -> Outcome:
    t = ctx.tmp("wrongarch")
    copy_weights(t, FOCAL)
    shutil.copy2(SHIPPED / "derm_cls_efficientnet_lite1_bce.safetensors", t / f"{FOCAL}.safetensors")
    r = ctx.lesion("evaluate", "cls", "--models", t / FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--no-verify")
    return judge_error(r)


# ---------------------------------------------------------------- E. review tags
@case("two processes add 100 review tags each", "result")
def c_tags_concurrent(ctx: Ctx) -> Outcome:
    t = ctx.tmp("tags")
    store = t / "review_tags.json"
    code = f"""
        import sys
        from lesion.review import TagStore
        s = TagStore({str(store)!r})
        for i in range(100):
            s.set(f"{{sys.argv[1]}}-{{i}}", "check")
    """
    procs = [subprocess.Popen([PYTHON, "-c", textwrap.dedent(code), w], env=ctx.env, stderr=subprocess.PIPE,
                              text=True) for w in ("a", "b")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    rc = max(p.returncode for p in procs)
    try:
        n = len(json.loads(store.read_text()))
    except Exception as e:  # noqa: BLE001
        n = f"unreadable ({e})"
    r = Run(rc, "", "\n".join(errs), 0)
    return judge_result(r, n == 200, f"{n} of 200 tags kept")


@case("review tags file corrupt: kept aside, not lost", "result", serial=True)
def c_tags_corrupt(ctx: Ctx) -> Outcome:
    t = ctx.tmp("tagscorrupt")
    store = t / "review_tags.json"
    store.write_text('{"a": {"tag": "x"')  # truncated JSON

    def go():
        from lesion.review import TagStore

        s = TagStore(store)
        s.set("b", "check")
        aside = list(t.glob("review_tags*.corrupt*"))
        kept = bool(aside) and aside[0].read_text() == '{"a": {"tag": "x"'
        return kept and len(s) == 1, f"corrupt file kept aside={kept}, tags now {len(s)}"

    o = judge_lib(go, "result")
    return o if o.category != "silently wrong" or list(t.glob("*.corrupt*")) else Outcome("data lost", o.outcome)


@case("lesion cache clear keeps review tags", "result")
def c_cache_clear_tags(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cacheclear")
    cache = t / "cache"
    env = {"LESION_CACHE": str(cache)}
    r0 = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none", env=env)
    tags = next(iter((cache / "datasets").iterdir()), cache / "datasets" / "x") / "review_tags.json"
    tags.parent.mkdir(parents=True, exist_ok=True)
    tags.write_text(json.dumps({"a": {"tag": "check", "note": "", "time": "t"}}))
    before = digest_tree([tags])
    dry = ctx.lesion("cache", "clear", "--dry-run", env=env)
    n_dry = len(list(cache.rglob("*.npz")))
    r = ctx.lesion("cache", "clear", env=env)
    if lost(before):
        return Outcome("data lost", "review tags deleted by cache clear")
    n_after = len(list(cache.rglob("*.npz")))
    ok = r0.rc == 0 and dry.rc == 0 and n_dry > 0 and n_after == 0
    return judge_result(r, ok, f"dry-run kept {n_dry} entries, clear left {n_after}; tags kept")


# ---------------------------------------------------------------- F. prediction cache
def _eval_cls(ctx, data, model, out: Path, env, *extra) -> Run:
    return ctx.lesion("evaluate", "cls", "--models", model, "--data", data, "--tta", "none", "--out", out,
                      "--overwrite", *extra, env=env)


@case("images overwritten under the same names (mtime kept)", "result")
def c_cache_images(ctx: Ctx) -> Outcome:
    from PIL import Image

    t = ctx.tmp("cacheimg")
    data = t / "data"
    shutil.copytree(ctx.fixtures["clsset"], data)
    env = {"LESION_CACHE": str(t / "cache")}
    r1 = _eval_cls(ctx, data, FOCAL, t / "a.parquet", env)
    for p in (data / "images").iterdir():
        st = p.stat()
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r2 = _eval_cls(ctx, data, FOCAL, t / "b.parquet", env)
    a1, a2 = (r1.last_json or {}).get("auc"), (r2.last_json or {}).get("auc")
    return judge_result(r2, r1.rc == 0 and a2 == 0.5, f"AUC before {a1}, after overwrite {a2} (truth 0.5)")


@case("checkpoint replaced (same size, mtime kept), card kept", "either")
def c_cache_ckpt_card_kept(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cacheckpt")
    w = copy_weights(t / "w", FOCAL)
    env = {"LESION_CACHE": str(t / "cache")}
    r1 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "a.parquet", env)
    p = w / f"{FOCAL}.safetensors"
    st = p.stat()
    shutil.copyfile(SHIPPED / f"{OHEM}.safetensors", p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r2 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "b.parquet", env)
    if r2.rc == 0 and r1.rc == 0:
        d = float(np.abs(parquet_probs(t / "a.parquet") - parquet_probs(t / "b.parquet")).max())
        return judge_result(r2, d > 1e-4, f"old probabilities served (max |dp| {d:.3g})")
    return judge_error(r2, "sha256")


@case("checkpoint replaced, --no-verify: recomputed", "result")
def c_cache_ckpt_noverify(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cacheckptnv")
    w = copy_weights(t / "w", FOCAL)
    env = {"LESION_CACHE": str(t / "cache")}
    r1 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "a.parquet", env, "--no-verify")
    p = w / f"{FOCAL}.safetensors"
    st = p.stat()
    shutil.copyfile(SHIPPED / f"{OHEM}.safetensors", p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r2 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "b.parquet", env, "--no-verify")
    r3 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "c.parquet", env, "--no-verify", "--no-cache")
    if r1.rc or r2.rc or r3.rc:
        return judge_result(r2 if r2.rc else r3, False, "a run failed")
    d = float(np.abs(parquet_probs(t / "b.parquet") - parquet_probs(t / "c.parquet")).max())
    return judge_result(r2, d < 1e-5, f"cached vs fresh max |dp| {d:.2g}")


@case("checkpoint and card both replaced (same size, mtime kept)", "result")
def c_cache_ckpt_and_card(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cacheckptcard")
    w = copy_weights(t / "w", FOCAL)
    env = {"LESION_CACHE": str(t / "cache")}
    r1 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "a.parquet", env)
    for suf in (".safetensors", ".json"):
        p = w / f"{FOCAL}{suf}"
        st = p.stat()
        shutil.copyfile(SHIPPED / f"{OHEM}{suf}", p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r2 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "b.parquet", env)
    r3 = _eval_cls(ctx, ctx.fixtures["clsset"], str(w / FOCAL), t / "c.parquet", env, "--no-cache")
    if r1.rc or r2.rc or r3.rc:
        return judge_result(r2 if r2.rc else r3, False, "a run failed")
    d = float(np.abs(parquet_probs(t / "b.parquet") - parquet_probs(t / "c.parquet")).max())
    return judge_result(r2, d < 1e-5, f"cached vs fresh max |dp| {d:.2g}")


def _corrupt_cache_case(name: str, damage: Callable[[Path], None]):
    @case(name, "warning")
    def _c(ctx: Ctx) -> Outcome:
        t = ctx.tmp(name)
        env = {"LESION_CACHE": str(t / "cache")}
        r1 = _eval_cls(ctx, ctx.fixtures["clsset"], FOCAL, t / "a.parquet", env)
        files = list((t / "cache").rglob("*.npz"))
        for f in files:
            damage(f)
        r2 = _eval_cls(ctx, ctx.fixtures["clsset"], FOCAL, t / "b.parquet", env)
        r3 = _eval_cls(ctx, ctx.fixtures["clsset"], FOCAL, t / "c.parquet", env)
        if r1.rc or r2.rc:
            return judge_result(r2, False, "failed")
        a = [(x.last_json or {}).get("auc") for x in (r1, r2, r3)]
        # the third run reads the rebuilt entry: no note any more (paths in stderr may contain "cache")
        ok = bool(files) and a[0] == a[1] == a[2] and r3.rc == 0 and not re.search("corrupt|recomput", r3.err, re.I)
        quiet = r3.rc == 0 and not re.search("corrupt|recomput", r3.err, re.I)
        return judge_result(r2, ok, f"{len(files)} entries damaged; AUC {a}; third run quiet={quiet}",
                            warn="corrupt.*recomput|rebuil")
    return _c


_corrupt_cache_case("truncated prediction-cache file", lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 3]))
_corrupt_cache_case("prediction-cache file of random bytes", lambda f: f.write_bytes(os.urandom(300)))


@case("--no-cache writes no cache", "result")
def c_no_cache(ctx: Ctx) -> Outcome:
    t = ctx.tmp("nocache")
    env = {"LESION_CACHE": str(t / "cache")}
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--no-cache", env=env)
    n = len(list((t / "cache").rglob("*.npz")))
    return judge_result(r, n == 0, f"{n} cache files written")


@case("lesion cache info on an empty cache", "result")
def c_cache_info(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cacheinfo")
    r = ctx.lesion("cache", "info", "--cache-dir", t / "c")
    return judge_result(r, str(t / "c") in (r.out + r.err), "names the folder")


@case("lesion cache clear --cache-dir a file", "either")
def c_cache_clear_file(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cachefile")
    (t / "f").write_text("keep")
    before = digest_tree([t / "f"])
    r = ctx.lesion("cache", "clear", "--cache-dir", t / "f")
    if lost(before):
        return Outcome("data lost", "file removed")
    return judge_either(r, True, "nothing to clear")


# ---------------------------------------------------------------- G. masks and images (Otsu, known disk)
def _seg_case(name: str, build: Callable[[Path], Path], expect: str = "result", min_iou: float = 0.85,
              warn: str | None = None, n_expected: int | None = 4):
    @case(name, expect)
    def _c(ctx: Ctx) -> Outcome:
        t = ctx.tmp(name)
        data = build(t)
        before = digest_tree([data])
        r = eval_seg(ctx, data)
        if lost(before):
            return Outcome("data lost", ", ".join(lost(before)))
        iou, n = iou_of(r)
        ok = iou is not None and iou >= min_iou and (n_expected is None or n == n_expected)
        detail = f"IoU {iou if iou is None else round(iou, 3)} on n={n} (truth >= {min_iou}, n={n_expected})"
        if expect == "error":
            return judge_error(r) if r.rc else Outcome("silently wrong", "accepted: " + detail)
        if expect == "either":
            return judge_either(r, ok, detail)
        return judge_result(r, ok, detail, warn=warn)
    return _c


def _mask_rgb_red(m, p):
    a = np.zeros(m.shape + (3,), np.uint8)
    a[m] = (255, 0, 0)
    save_png(a, p)


def _mask_palette(m, p):
    from PIL import Image

    im = Image.fromarray(m.astype(np.uint8), "L").convert("P")
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.save(p)


def _mask_rgba(m, p):
    a = np.zeros(m.shape + (4,), np.uint8)
    a[m] = (255, 255, 255, 255)
    save_png(a, p)


def _mask_soft(m, p):
    from scipy.ndimage import gaussian_filter

    soft = gaussian_filter(m.astype(float), 0.8)
    save_png((np.clip(soft * 1.6, 0, 1) * 255 * (soft > 0.3)).astype(np.uint8), p)


def _exif_writer(h_turn: bool):
    def w(img, folder: Path, stem: str):
        from PIL import Image

        stored = Image.fromarray(img).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(folder / f"{stem}.jpg", quality=95, exif=exif.tobytes())
    return w


def _tiff_multipage(img, folder: Path, stem: str):
    from PIL import Image

    other, _ = blob(999)
    Image.fromarray(img).save(folder / f"{stem}.tif", save_all=True, append_images=[Image.fromarray(other)])


def _grey16(img, folder: Path, stem: str):
    from PIL import Image

    g = (img.mean(axis=2).astype(np.uint16) * 257)
    Image.fromarray(g).save(folder / f"{stem}.png")


def _cmyk_jpeg(img, folder: Path, stem: str):
    from PIL import Image

    Image.fromarray(img).convert("CMYK").save(folder / f"{stem}.jpg", quality=95)


_seg_case("control: grey 0/255 masks", lambda t: blob_set(t / "d"))
_seg_case("red-on-black RGB masks", lambda t: blob_set(t / "d", mask_writer=_mask_rgb_red))
_seg_case("{0,100} masks", lambda t: blob_set(t / "d", mask_writer=lambda m, p: save_png((m * 100).astype(np.uint8), p)))
_seg_case("{0,1} masks", lambda t: blob_set(t / "d", mask_writer=lambda m, p: save_png(m.astype(np.uint8), p)))
_seg_case("palette (P mode) masks", lambda t: blob_set(t / "d", mask_writer=_mask_palette))
_seg_case("RGBA masks (white opaque lesion)", lambda t: blob_set(t / "d", mask_writer=_mask_rgba))
_seg_case("1-bit masks", lambda t: blob_set(t / "d", mask_writer=lambda m, p: __import__("PIL.Image").Image
                                            .fromarray(m).convert("1").save(p)))
_seg_case("anti-aliased (not binary) masks: note", lambda t: blob_set(t / "d", mask_writer=_mask_soft),
          warn="not binary")
_seg_case("EXIF-rotated JPEGs, square", lambda t: blob_set(t / "d", image_writer=_exif_writer(False)))
_seg_case("EXIF-rotated JPEGs, non-square (64x96)",
          lambda t: blob_set(t / "d", image_writer=_exif_writer(True), h=64, w=96))
_seg_case("multi-page TIFF images: page named", lambda t: blob_set(t / "d", image_writer=_tiff_multipage),
          warn="page")
_seg_case("16-bit grey PNG images", lambda t: blob_set(t / "d", image_writer=_grey16))


def _with(build, fn):
    def b(t: Path) -> Path:
        d = build(t)
        fn(d)
        return d
    return b


def _mask_other_size(d: Path):
    save_png(np.zeros((40, 40), np.uint8), d / "masks" / "b0.png")


def _image_not_image(d: Path):
    (d / "images" / "b0.png").write_text("I am a text file with a .png name\n")


def _image_truncated(d: Path):
    p = d / "images" / "b0.png"
    p.write_bytes(p.read_bytes()[:200])


def _unicode(t: Path) -> Path:
    return blob_set(t / "données ü 图像 set")


_seg_case("one mask of another size: skipped, said", lambda t: _with(lambda u: blob_set(u / "d"), _mask_other_size)(t),
          warn="skipped|size", n_expected=3)
_seg_case("a text file named .png among images", lambda t: _with(lambda u: blob_set(u / "d"), _image_not_image)(t),
          expect="either", n_expected=None)
_seg_case("a truncated PNG among images", lambda t: _with(lambda u: blob_set(u / "d"), _image_truncated)(t),
          warn="skipped|truncat|corrupt", n_expected=3)
_seg_case("unicode and spaces in the data path", _unicode)


@case("1x1 image with 1x1 mask", "either")
def c_tiny_image(ctx: Ctx) -> Outcome:
    t = ctx.tmp("1x1")
    d = t / "d"
    save_png(np.full((1, 1, 3), 50, np.uint8), d / "images" / "a.png")
    save_png(np.full((1, 1), 255, np.uint8), d / "masks" / "a.png")
    r = eval_seg(ctx, d)
    iou, n = iou_of(r)
    return judge_either(r, n in (0, 1), f"n={n}, IoU={iou}")


@case("a 6000x6000 image (Otsu)", "either")
def c_huge_image(ctx: Ctx) -> Outcome:
    t = ctx.tmp("huge")
    d = t / "d"
    img = np.full((6000, 6000, 3), (205, 170, 150), np.uint8)
    yy, xx = np.ogrid[:6000, :6000]
    m = (yy - 2000) ** 2 + (xx - 2500) ** 2 <= 900 ** 2
    img[m] = (70, 45, 35)
    save_png(img, d / "images" / "a.png")
    save_png((m * 255).astype(np.uint8), d / "masks" / "a.png")
    del img
    r = eval_seg(ctx, d)
    iou, n = iou_of(r)
    return judge_either(r, iou is not None and iou > 0.9, f"IoU {iou}")


@case("mask with EXIF orientation: never rotated", "result")
def c_mask_exif(ctx: Ctx) -> Outcome:
    from PIL import Image

    t = ctx.tmp("maskexif")
    d = blob_set(t / "d")
    for p in (d / "masks").iterdir():
        im = Image.open(p)
        exif = Image.Exif()
        exif[0x0112] = 6
        im.load()
        im.save(p, exif=exif.tobytes())
    r = eval_seg(ctx, d)
    iou, n = iou_of(r)
    return judge_result(r, iou is not None and iou > 0.85, f"IoU {iou}")


# ---------------------------------------------------------------- H. folders and layouts
def _data_case(name: str, build: Callable[[Path], Path | str], must: str | None = None, cmd: str = "seg"):
    @case(name, "error")
    def _c(ctx: Ctx) -> Outcome:
        t = ctx.tmp(name)
        data = build(t)
        if cmd == "seg":
            r = eval_seg(ctx, data)
        else:
            r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", data, "--tta", "none")
        return judge_error(r, must)
    return _c


def _empty(t: Path) -> Path:
    (t / "empty").mkdir()
    return t / "empty"


def _wrong_layout(t: Path) -> Path:
    (t / "w" / "pictures").mkdir(parents=True)
    (t / "w" / "readme.txt").write_text("x")
    save_png(np.zeros((8, 8, 3), np.uint8), t / "w" / "pictures" / "a.png")
    return t / "w"


def _fake_pngs(t: Path) -> Path:
    (t / "f" / "images").mkdir(parents=True)
    for i in range(3):
        (t / "f" / "images" / f"x{i}.png").write_text("not an image")
    return t / "f"


def _no_masks(t: Path) -> Path:
    d = blob_set(t / "d")
    shutil.rmtree(d / "masks")
    return d


def _bad_dataset_json(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "dataset.json").write_text("{broken")
    return d


def _bad_domain(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "dataset.json").write_text(json.dumps({"domain": "skin"}))
    return d


def _unknown_dx_plain(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "labels.csv").write_text("image,diagnosis\nb0.png,nv\nb1.png,mel\nb2.png,weird_mole\nb3.png,nv\n")
    return d


def _bad_target(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "labels.csv").write_text("image,target\nb0.png,0\nb1.png,maybe\nb2.png,1\nb3.png,0\n")
    return d


def _rows_all_missing(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "labels.csv").write_text("image,target\nz0.png,0\nz1.png,1\n")
    return d


def _csv_no_image_col(t: Path) -> Path:
    d = blob_set(t / "d")
    (d / "labels.csv").write_text("file,target\nb0.png,0\n")
    return d


_data_case("--data a missing folder", lambda t: t / "nowhere", "nowhere|not found|exist")
_data_case("--data an empty folder", _empty, None)
_data_case("--data a folder of the wrong layout", _wrong_layout, "layout|images")
_data_case("--data images/ of text files named .png", _fake_pngs, None)
_data_case("--data an image file", lambda t: (save_png(np.zeros((8, 8, 3), np.uint8), t / "a.png"), t / "a.png")[1])
_data_case("evaluate seg on a folder without masks", _no_masks, "mask")
_data_case("dataset.json that is not JSON", _bad_dataset_json, "json")
_data_case("dataset.json domain 'skin'", _bad_domain, "domain")
_data_case("labels.csv with an unknown diagnosis", _unknown_dx_plain, "weird_mole", cmd="cls")
_data_case("labels.csv target 'maybe'", _bad_target, "maybe", cmd="cls")
_data_case("labels.csv whose rows all name missing images", _rows_all_missing, None, cmd="cls")
_data_case("labels.csv without an image column", _csv_no_image_col, "image", cmd="cls")


# ---------------------------------------------------------------- I. HAM10000 data problems
@case("HAM: 5 of 30 images without a metadata row", "warning")
def c_ham_no_rows(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ham_norows")
    d = make_ham(t / "HAM", 30, with_rows=25)
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", d, "--tta", "none")
    n = (r.last_json or {}).get("n")
    nl = (r.last_json or {}).get("n_labelled")
    return judge_result(r, n == 30 and nl == 25, f"n={n}, labelled={nl} (truth 30/25)", warn="no row|without (a )?(metadata|row)")


@case("HAM: unknown dx 'xyz'", "error")
def c_ham_unknown_dx(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ham_dx")
    d = make_ham(t / "HAM", 10, dx={3: "xyz"})
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", d, "--tta", "none")
    return judge_error(r, "xyz")


for _age in ("forty", "-5", "300"):
    @case(f"HAM library: age {_age!r} counted, set unknown", "result", serial=True)
    def _c_age(ctx: Ctx, _age=_age) -> Outcome:
        t = ctx.tmp(f"ham_age_{_age}")
        d = make_ham(t / "HAM", 8, ages={2: _age})

        def go():
            from lesion.data import load_dataset

            ds = load_dataset(d)
            rec = {r.id: r for r in ds.records}["ISIC_0000002"]
            bad = [v for _, v in ds.report.bad_ages]
            shown = any(_age in w for w in ds.warnings)
            return rec.meta.get("age") is None and _age in bad and shown, \
                f"age read as {rec.meta.get('age')}, reported={_age in bad}, in warnings={shown}"

        return judge_lib(go, "result")


@case("HAM CLI: ages 'forty', -5, 300 shown in the summary", "warning")
def c_ham_ages_cli(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ham_ages_cli")
    d = make_ham(t / "HAM", 10, ages={1: "forty", 2: "-5", 3: "300"})
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", d, "--tta", "none")
    return judge_result(r, (r.last_json or {}).get("n") == 10, f"n={(r.last_json or {}).get('n')}",
                        warn="forty")


@case("HAM: duplicate image id rows", "warning", serial=True)
def c_ham_dup(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ham_dup")
    d = make_ham(t / "HAM", 6, dup=True)

    def go():
        from lesion.data import load_dataset

        ds = load_dataset(d)
        dups = dict(ds.report.duplicate_ids)
        return len(ds.records) == 6 and "ISIC_0000000" in dups and any("more than one row" in w for w in ds.warnings), \
            f"{len(ds.records)} records, duplicates {dups}, conflicting {ds.report.conflicting_ids}"

    return judge_lib(go, "result")


@case("HAM: metadata without the dx column", "error")
def c_ham_no_dx(ctx: Ctx) -> Outcome:
    t = ctx.tmp("ham_nodx")
    d = make_ham(t / "HAM", 4)
    csv = d / "HAM10000_metadata.csv"
    csv.write_text("\n".join(",".join(x for j, x in enumerate(ln.split(",")) if j != 2)
                             for ln in csv.read_text().splitlines()) + "\n")
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", d, "--tta", "none")
    return judge_error(r, "dx")


# ---------------------------------------------------------------- J. models on the other domain
@case("lung U-Net on dermoscopy: warning", "warning")
def c_lung_on_derm(ctx: Ctx) -> Outcome:
    r = eval_seg(ctx, ctx.fixtures["blobs"], LUNG_UNET)
    return judge_result(r, iou_of(r)[1] == 4, f"n={iou_of(r)[1]}", warn="trained on chest")


@case("skin classifier on chest X-rays: warning or refusal", "warning")
def c_skin_on_cxr(ctx: Ctx) -> Outcome:
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["cxr"], "--tta", "none")
    if r.rc == 2 and "dermoscopy" in r.err:
        return judge_error(r)
    return judge_result(r, (r.last_json or {}).get("n") == 8, f"n={(r.last_json or {}).get('n')}",
                        warn="trained on dermoscopy")


@case("skin U-Net on chest X-rays: warning", "warning")
def c_derm_unet_on_cxr(ctx: Ctx) -> Outcome:
    r = eval_seg(ctx, ctx.fixtures["cxr"], DERM_UNET)
    return judge_result(r, iou_of(r)[1] == 8, f"n={iou_of(r)[1]}", warn="trained on dermoscopy")


@case("tiny trained U-Net scores its own data (no warning)", "result")
def c_tiny_seg_eval(ctx: Ctx) -> Outcome:
    p = ctx.fixtures.get("tiny_seg")
    if not p:
        return Outcome("silently wrong", "no tiny checkpoint from the first case")
    r = eval_seg(ctx, ctx.fixtures["derm"], str(p))
    iou, n = iou_of(r)
    return judge_result(r, n == 16 and iou is not None and "warning" not in r.err, f"n={n}, IoU={iou}")


# ---------------------------------------------------------------- K. Upload page (AppTest, one subprocess)
PAGE_SCRIPT = r"""
import gc, io, json, os, shutil, sys, tempfile, hashlib, warnings
from pathlib import Path
import numpy as np
warnings.filterwarnings("ignore")
from PIL import Image
from streamlit.testing.v1 import AppTest
from lesion.review import TagStore
ROOT = Path(sys.argv[1]); W = Path(os.environ["LESION_WEIGHTS_DIR"]); CACHE = Path(os.environ["LESION_CACHE"])
res = {}

def png(a):
    b = io.BytesIO(); Image.fromarray(a).save(b, format="PNG"); return b.getvalue()

img = np.full((96, 128, 3), (200, 150, 120), np.uint8); img[30:60, 30:60] = (90, 50, 40)

def page(session):
    at = AppTest.from_file(str(ROOT / "views/upload.py"), default_timeout=240)
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    return at

def text(at):
    parts = [e.value for e in at.error] + [w.value for w in at.warning]
    return " | ".join(str(p) for p in parts)

def probs(at):
    try:
        return [float(x) for x in at.dataframe[0].value["ensemble"]]
    except Exception as e:
        return None

def exc(at):
    return [str(e.value)[:200] for e in at.exception]

def step(name, fn):
    try:
        res[name] = fn()
    except Exception as e:
        import traceback
        res[name] = {"crash": f"{type(e).__name__}: {e}"[:300]}

# 1. uploads: stored in the session folder under the cache, removed by the button and at session end
def uploads():
    at = page({"upload_test_file": ("lesion.png", png(img)), "upload_members": ["tiny_cls"]})
    stored = [str(p) for p in (CACHE / "uploads").glob("*/image/lesion.png")]
    tmp_left = [str(p) for p in Path(tempfile.gettempdir()).rglob("lesion.png")][:3]
    p1 = probs(at)
    at.button(key="upload_remove").click().run()
    after_button = [str(p) for p in (CACHE / "uploads").glob("*/image/*")]
    at2 = page({"upload_test_file": ("second.png", png(img))})
    n_before_end = len(list((CACHE / "uploads").glob("*/image/second.png")))
    del at2; gc.collect()
    n_after_end = len(list((CACHE / "uploads").glob("*/image/second.png")))
    return {"exc": exc(at), "stored": len(stored), "tmp_left": tmp_left, "after_button": after_button,
            "before_end": n_before_end, "after_end": n_after_end, "probs": p1}
step("uploads", uploads)

# 2. a running app and a replaced checkpoint (same size, mtime kept, card replaced too)
def replaced():
    at = page({"upload_test_file": ("lesion.png", png(img)), "upload_members": ["tiny_cls"]})
    before = probs(at)
    for suf in (".safetensors", ".json"):
        p = W / f"tiny_cls{suf}"; st = p.stat()
        shutil.copyfile(W.parent / "alt" / f"tiny_cls{suf}", p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    at.run()
    return {"exc": exc(at), "before": before, "after": probs(at), "messages": text(at)}
step("replaced", replaced)

# 3. a corrupt checkpoint (200 KB of 0xFF) chosen on the page
def corrupt():
    at = page({"upload_test_file": ("lesion.png", png(img)), "upload_members": ["tiny_bad"]})
    md = " ".join(str(m.value) for m in at.markdown)
    return {"exc": exc(at), "probs": probs(at), "messages": text(at), "nan_shown": "nan" in md.lower()}
step("corrupt", corrupt)

# 4. not an image
def notimage():
    at = page({"upload_test_file": ("x.png", b"hello, not a png")})
    return {"exc": exc(at), "messages": text(at)}
step("notimage", notimage)

# 5. a 9000x9000 image (81 MP)
def huge():
    big = np.zeros((9000, 9000, 3), np.uint8); big[:] = (200, 150, 120); big[3000:5000, 3000:5000] = (90, 50, 40)
    at = page({"upload_test_file": ("big.png", png(big)), "upload_members": ["tiny_cls"]})
    return {"exc": exc(at), "messages": text(at), "probs": probs(at),
            "infos": " | ".join(str(i.value) for i in at.info)}
step("huge", huge)
print("RESULT " + json.dumps(res))
"""


def _page_fixture(ctx: Ctx) -> Path:
    """A weights folder with a tiny classifier, an altered copy (same size) and a corrupt one."""
    if "page_weights" in ctx.fixtures:
        return ctx.fixtures["page_weights"]
    import torch

    from lesion.card import ModelCard, Preprocessing
    from lesion.classify.classifier import create_model
    from lesion.classify.models import ClsModelConfig
    from lesion.weights import save_checkpoint

    root = ctx.T / "page"
    w, alt = root / "weights", root / "alt"
    w.mkdir(parents=True)
    alt.mkdir()
    prep = Preprocessing(size=64, mean=(0.5,) * 3, std=(0.25,) * 3, center_crop=True, clahe=False)
    cfg = ClsModelConfig("resnet10t", num_classes=1, size=64)
    common = {"domain": "derm", "classes": ("melanoma",), "target": "melanoma", "arch": "resnet10t",
              "preprocessing": prep, "task": "classification", "model": {**cfg.__dict__}}
    for seed, folder in ((0, w), (1, alt)):
        torch.manual_seed(seed)
        net = create_model(cfg)
        save_checkpoint(net, folder / "tiny_cls", ModelCard(name="tiny_cls", **common))
    torch.manual_seed(2)
    save_checkpoint(create_model(cfg), w / "tiny_bad", ModelCard(name="tiny_bad", **common))
    ff_inside(w / "tiny_bad.safetensors", 200_000)
    ctx.fixtures["page_weights"] = w
    return w


def _page_results(ctx: Ctx) -> dict:
    if "page" not in ctx.fixtures:
        w = _page_fixture(ctx)
        env = {"LESION_WEIGHTS_DIR": str(w), "LESION_CACHE": str(ctx.T / "page" / "cache"),
               "TMPDIR": str(ctx.T / "page" / "tmp")}
        (ctx.T / "page" / "tmp").mkdir(exist_ok=True)
        r = ctx.run([PYTHON, "-c", PAGE_SCRIPT, str(REPO)], env=env, cwd=ctx.T / "page", timeout=900)
        line = next((ln for ln in r.out.splitlines() if ln.startswith("RESULT ")), None)
        ctx.fixtures["page"] = json.loads(line[7:]) if line else {"_error": r.err[-600:]}
    return ctx.fixtures["page"]


def _page_judge(res: dict | None) -> Outcome | None:
    if not res:
        return Outcome("traceback", "page script failed")
    if "crash" in res:
        return Outcome("traceback", res["crash"][:150])
    if res.get("exc"):
        return Outcome("traceback", "page exception: " + res["exc"][0][:140])
    return None


@case("Upload page: upload kept out of temp, removed by button and at session end", "result", serial=True)
def c_page_uploads(ctx: Ctx) -> Outcome:
    res = _page_results(ctx).get("uploads")
    bad = _page_judge(res)
    if bad:
        return bad
    ok = (res["stored"] == 1 and not res["tmp_left"] and not res["after_button"] and res["before_end"] == 1
          and res["after_end"] == 0)
    return Outcome("right result" if ok else "silently wrong",
                   f"stored {res['stored']}, in temp {len(res['tmp_left'])}, after Remove {len(res['after_button'])}, "
                   f"at session end {res['before_end']}->{res['after_end']}")


@case("Upload page: running app, checkpoint replaced (size+mtime kept)", "result", serial=True)
def c_page_replaced(ctx: Ctx) -> Outcome:
    res = _page_results(ctx).get("replaced")
    bad = _page_judge(res)
    if bad:
        return bad
    b, a = res["before"], res["after"]
    if a is None:
        return Outcome("clear error" if res["messages"] else "silently wrong",
                       f"no probabilities after replacement: {res['messages'][:120]}", refused_valid=True)
    ok = b is not None and abs(a[0] - b[0]) > 1e-6
    return Outcome("right result" if ok else "silently wrong", f"p before {b}, after {a}")


@case("Upload page: checkpoint with 200 KB of 0xFF", "error", serial=True)
def c_page_corrupt(ctx: Ctx) -> Outcome:
    res = _page_results(ctx).get("corrupt")
    bad = _page_judge(res)
    if bad:
        return bad
    if res["probs"] is not None or res["nan_shown"]:
        return Outcome("silently wrong", f"shown: {res['probs']}")
    return Outcome("clear error" if res["messages"] else "silently wrong", res["messages"][:150] or "nothing said")


@case("Upload page: a text file named .png", "error", serial=True)
def c_page_notimage(ctx: Ctx) -> Outcome:
    res = _page_results(ctx).get("notimage")
    bad = _page_judge(res)
    if bad:
        return bad
    return Outcome("clear error" if res["messages"] else "silently wrong", res["messages"][:150] or "nothing said")


@case("Upload page: a 9000x9000 image", "either", serial=True)
def c_page_huge(ctx: Ctx) -> Outcome:
    res = _page_results(ctx).get("huge")
    bad = _page_judge(res)
    if bad:
        return bad
    if res["probs"]:
        return Outcome("right result", f"p={res['probs']}; {res['infos'][:100]}")
    return Outcome("clear error" if res["messages"] else "silently wrong", res["messages"][:150] or "nothing said")


# ---------------------------------------------------------------- L. library odds and ends
@case("library: decode_upload of 0 bytes", "error", serial=True)
def c_lib_empty_upload(ctx: Ctx) -> Outcome:
    def go():
        from lesion.data.upload import decode_upload

        decode_upload(b"", "x.png")
        return False, "decoded"

    return judge_lib(go, "error")


@case("library: read_image of a folder", "error", serial=True)
def c_lib_read_folder(ctx: Ctx) -> Outcome:
    def go():
        from lesion.data.io import read_image

        read_image(ctx.T)
        return False, "read"

    return judge_lib(go, "error")


@case("library: save_checkpoint onto an existing stem (overwrite=False)", "error", serial=True)
def c_lib_save_existing(ctx: Ctx) -> Outcome:
    t = ctx.tmp("lib_save")
    (t / "m.safetensors").write_bytes(b"mine")
    (t / "m.json").write_text("{}")
    before = digest_tree([t])

    def go():
        import torch

        from lesion.card import ModelCard
        from lesion.weights import save_checkpoint

        save_checkpoint(torch.nn.Linear(2, 2), t / "m", ModelCard(name="m", task="classification"), overwrite=False)
        return False, "saved over it"

    o = judge_lib(go, "error")
    if lost(before):
        return Outcome("data lost", ", ".join(lost(before)))
    if o.category == "traceback" and "exist" in o.outcome.lower():
        o.outcome += " (not a LesionError)"
    return o


# ---------------------------------------------------------------- M. careless clients, the edges of the machine
MULTI = "derm_multitask_efficientnet_lite0"
SERVE_TOKEN = "sweep-tok-1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(ctx: Ctx) -> dict:
    """One ``lesion serve`` (the multi-task model, a token, 127.0.0.1) for the server cases; stopped at the end."""
    if "server" not in ctx.fixtures:
        import signal
        import urllib.request

        port = _free_port()
        env = {**ctx.env, "LESION_SERVE_TOKEN": SERVE_TOKEN, "LESION_SERVE_THREADS": "1"}
        log = open(ctx.T / "serve.log", "w")
        p = subprocess.Popen([LESION, "serve", "--models", MULTI, "--port", str(port), "--device", "cpu"], env=env,
                             cwd=str(ctx.cwd), stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        ok = False
        for _ in range(300):
            if p.poll() is not None:
                break
            try:
                req = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {SERVE_TOKEN}"})
                with urllib.request.urlopen(req, timeout=5):
                    ok = True
                    break
            except OSError:
                time.sleep(1)

        def stop() -> None:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(90)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()

        ctx.cleanups.append(stop)
        ctx.fixtures["server"] = {"url": url, "port": port, "pid": p.pid, "ok": ok}
    return ctx.fixtures["server"]


def _http(url: str, method: str, path: str, data: bytes | None, token: str | bytes | None = SERVE_TOKEN
          ) -> tuple[int, dict | None]:
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        conn.putrequest(method, path)
        if token is not None:
            conn.putheader("Authorization", token if isinstance(token, bytes) else f"Bearer {token}")
        conn.putheader("Content-Length", str(len(data or b"")))
        conn.endheaders(data)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


def _sweep_image(seed: int = 0) -> str:
    from lesion.serving.protocol import encode_image

    return encode_image(blob(500 + seed)[0])


def judge_http(status: int, answer: dict | None, want: int | tuple[int, ...], must: str | None = None) -> Outcome:
    """Expect the 4xx ``want`` with a one-line ``{"error"}`` (``must``: a regex it should match); a 5xx is the
    server's traceback, a 200 a bad input accepted."""
    want = (want,) if isinstance(want, int) else want
    msg = str((answer or {}).get("error", answer))[:140]
    if status >= 500:
        return Outcome("traceback", f"HTTP {status}: {msg}")
    if status == 200:
        return Outcome("silently wrong", f"HTTP 200: the bad request was answered ({str(answer)[:100]})")
    if status not in want or not answer or "error" not in answer or "\n" in answer["error"]:
        return Outcome("silently wrong", f"HTTP {status} (expected {'/'.join(map(str, want))}): {msg}")
    extra = f" [message lacks /{must}/]" if must and not re.search(must, answer["error"], re.I) else ""
    return Outcome("clear error", f"HTTP {status}: {msg}{extra}")


def _server_case(name: str, path: str, make: Callable[[], tuple[bytes, Any]], want: int, must: str | None = None):
    @case(name, "error", serial=True)
    def _c(ctx: Ctx) -> Outcome:
        s = _server(ctx)
        if not s["ok"]:
            return Outcome("traceback", f"lesion serve did not start: {(ctx.T / 'serve.log').read_text()[-150:]}")
        data, token = make()
        return judge_http(*_http(s["url"], "POST" if data is not None else "GET", path, data, token), want, must)
    return _c


def _predict_body(**extra) -> bytes:
    return json.dumps({"models": [MULTI], "images": [_sweep_image(0), _sweep_image(1)], "tta": "none",
                       **extra}).encode()


_server_case("serve: 'ids' of another length than the images", "/predict",
             lambda: (_predict_body(ids=["only-one"]), SERVE_TOKEN), 422, "ids")
_server_case("serve: 'ids' as a string, not a list", "/predict",
             lambda: (_predict_body(ids="ab"), SERVE_TOKEN), 422, "ids")
_server_case("serve: 'metadata' of another length than the images", "/predict",
             lambda: (_predict_body(metadata=[{"age": 50}]), SERVE_TOKEN), 422, "metadata")
_server_case("serve: age as a string ('50')", "/predict",
             lambda: (_predict_body(metadata=[{"age": "50"}, None]), SERVE_TOKEN), 422, "age")
_server_case("serve: 'images' as an object", "/predict",
             lambda: (json.dumps({"models": [MULTI], "images": {"a": 1}}).encode(), SERVE_TOKEN), 422, "images")
_server_case("serve: 'tta' as a number", "/predict",
             lambda: (_predict_body(tta=4), SERVE_TOKEN), 422, "tta")
_server_case("serve: metadata age NaN", "/predict",
             lambda: (_predict_body().replace(b'"tta"', b'"metadata": [{"age": NaN}, null], "tta"'), SERVE_TOKEN),
             422, "finite")
_server_case("serve: metadata age Infinity", "/predict",
             lambda: (_predict_body().replace(b'"tta"', b'"metadata": [null, {"age": Infinity}], "tta"'),
                      SERVE_TOKEN), 422, "finite")
_server_case("serve: /explain class_index out of range", "/explain",
             lambda: (json.dumps({"model": MULTI, "image": _sweep_image(0), "class_index": 7}).encode(), SERVE_TOKEN),
             422, "out of range")
_server_case("serve: non-ASCII Authorization header", "/health", lambda: (None, b"Bearer t\xc3\xb6ken"), 401, "token")
_server_case("serve: /docs without the token", "/docs", lambda: (None, None), 401, "token")
_server_case("serve: /openapi.json without the token", "/openapi.json", lambda: (None, None), 401, "token")


@case("serve: age 300 over HTTP = unknown, as from a folder", "result", serial=True)
def c_serve_age(ctx: Ctx) -> Outcome:
    s = _server(ctx)
    if not s["ok"]:
        return Outcome("traceback", "lesion serve did not start")
    from lesion.data._common import norm_age
    from lesion.serving.backends import predict
    from lesion.serving.protocol import decode_image
    from lesion.zoo import load_model

    def probs(meta):
        status, out = _http(s["url"], "POST", "/predict", json.dumps(
            {"models": [MULTI], "images": [_sweep_image(0)], "metadata": [meta], "tta": "none"}).encode())
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {out}")
        return np.asarray(out["probs"]), out.get("notes") or []

    try:
        p300, notes = probs({"age": 300})
        p_none, _ = probs({})
    except RuntimeError as e:
        return Outcome("traceback", str(e)[:150])
    folder_meta = {"age": norm_age(300)} if norm_age(300) is not None else {}  # what a folder's loader gives
    local = predict([load_model(MULTI)], [(decode_image(_sweep_image(0)), folder_meta)], tta="none", device="cpu").probs
    d_http, d_local = float(np.abs(p300 - p_none).max()), float(np.abs(p300 - local).max())
    ok = d_http <= 1e-6 and d_local <= 1e-4 and bool(notes)
    return Outcome("right result" if ok else "silently wrong",
                   f"|p(age 300) - p(no age)| = {d_http:.1e}, vs in-process {d_local:.1e}; note: {bool(notes)}")


@case("serve: Ray processes listen on loopback only", "result", serial=True)
def c_serve_sockets(ctx: Ctx) -> Outcome:
    s = _server(ctx)
    if not s["ok"]:
        return Outcome("traceback", "lesion serve did not start")
    import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
    import psutil

    from lesion.serving.local_ray import is_loopback, listening_addresses

    root = psutil.Process(s["pid"])
    pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
    socks = listening_addresses(pids)
    wide = sorted({f"{ip}:{port}" for ip, port, _ in socks if not is_loopback(ip)})
    seen = any(port == s["port"] for _, port, _ in socks)
    if wide:
        return Outcome("silently wrong", f"{len(wide)} of {len(socks)} listening sockets beyond loopback: {wide[:4]}")
    return Outcome("right result" if seen else "silently wrong",
                   f"{len(socks)} listening sockets of {len(pids)} processes, all on loopback; proxy seen: {seen}")


@case("serve --port already taken", "error")
def c_serve_port_taken(ctx: Ctx) -> Outcome:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        r = ctx.lesion("serve", "--models", FOCAL, "--port", str(holder.getsockname()[1]), timeout=120)
    return judge_error(r, "in use")


@case("evaluate cls with LESION_CACHE naming a file", "error")
def c_cache_is_file(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cachefile")
    (t / "cachefile").write_text("mine")
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   env={"LESION_CACHE": str(t / "cachefile")})
    if (t / "cachefile").read_text() != "mine":
        return Outcome("data lost", "the file was replaced")
    return judge_error(r, "LESION_CACHE")


@case("evaluate cls with a read-only cache folder (/sys/kernel)", "error")
def c_cache_read_only(ctx: Ctx) -> Outcome:
    r = ctx.lesion("evaluate", "cls", "--models", FOCAL, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   env={"LESION_CACHE": "/sys/kernel"})
    return judge_error(r, "LESION_CACHE")


@case("library: disk full (ENOSPC) while saving a checkpoint: nothing left", "error", serial=True)
def c_lib_enospc(ctx: Ctx) -> Outcome:
    import errno

    t = ctx.tmp("enospc")
    real = Path.write_bytes

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def go():
        import torch

        from lesion.card import ModelCard
        from lesion.weights import save_checkpoint

        Path.write_bytes = full
        try:
            save_checkpoint(torch.nn.Linear(4, 4), t / "m", ModelCard(name="m", task="classification"))
        finally:
            Path.write_bytes = real
        return False, "saved on a full disk"

    o = judge_lib(go, "error")
    left = [p.name for p in t.iterdir()]
    if o.category == "clear error" and left:
        return Outcome("silently wrong", f"error, but left {left}")
    return o


@case("train seg under a file-size limit (ulimit -f 256 KB)", "error")
def c_train_fsize(ctx: Ctx) -> Outcome:
    t = ctx.tmp("fsize_train")
    cmd = " ".join(map(shlex.quote, [LESION, "train", "seg", "--data", str(ctx.fixtures["derm"]), *TINY_SEG,
                                     "--out", str(t / "out" / "m"), "--runs-dir", str(t / "runs")]))
    r = ctx.run(["bash", "-c", f"ulimit -f 256; exec {cmd}"], cwd=t)
    o = judge_error(r, "file-size limit")
    left = [p.name for p in (t / "out").glob("m.*")] if (t / "out").exists() else []
    if o.category == "clear error" and left:
        return Outcome("silently wrong", f"error, but left {left}")
    return o


@case("export under a file-size limit (ulimit -f 2 MB): nothing left", "error")
def c_export_fsize(ctx: Ctx) -> Outcome:
    t = ctx.tmp("fsize_export")
    cmd = " ".join(map(shlex.quote, [LESION, "export", FOCAL, "--out", str(t / "out" / "m.onnx")]))
    r = ctx.run(["bash", "-c", f"ulimit -f 2048; exec {cmd}"], cwd=t)
    o = judge_error(r, "file-size limit")
    left = [p.name for p in (t / "out").iterdir()] if (t / "out").exists() else []
    if o.category == "clear error" and left:
        return Outcome("silently wrong", f"error, but left {left}")
    return o


@case("export --out a read-only folder: refused before the work", "error")
def c_export_read_only(ctx: Ctx) -> Outcome:
    r = ctx.lesion("export", FOCAL, "--out", "/sys/kernel/m.onnx")
    o = judge_error(r, "cannot write")
    if o.category == "clear error" and "loading" in r.err:
        o.outcome += " [after loading the model]"
    return o


@case("evaluate seg on a folder with a symlink loop", "error")
def c_symlink_loop(ctx: Ctx) -> Outcome:
    t = ctx.tmp("symloop")
    d = blob_set(t / "d", n=3)
    os.symlink("loop.png", d / "images" / "loop.png")
    return judge_error(eval_seg(ctx, d), "loop")


@case("evaluate cls: card lists 4 classes, network has 5 outputs", "error")
def c_card_classes(ctx: Ctx) -> Outcome:
    t = ctx.tmp("cardclasses")
    name = "cxr_demo_findings_efficientnet_lite0"
    copy_weights(t / "w", name)
    card = json.loads((t / "w" / f"{name}.json").read_text())
    card["classes"] = card["classes"][:4]
    (t / "w" / f"{name}.json").write_text(json.dumps(card))
    r = ctx.lesion("evaluate", "cls", "--models", t / "w" / name, "--data", ctx.fixtures["cxr"], "--tta", "none",
                   "--no-cache")
    return judge_error(r, "classes")


def _nudged_copy(name: str, folder: Path) -> Path:
    """A checkpoint whose bytes no longer match its card (one weight nudged): a user's own edit."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = load_file(str(SHIPPED / f"{name}.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1e-3
    save_file(state, str(folder / f"{name}.safetensors"))
    shutil.copy2(SHIPPED / f"{name}.json", folder / f"{name}.json")
    return folder / name


@case("serve an edited checkpoint: refused before Ray, --no-verify exists", "error")
def c_serve_edited(ctx: Ctx) -> Outcome:
    import socket

    t = ctx.tmp("serveedited")
    _nudged_copy(FOCAL, t / "w")
    with socket.socket() as holder:  # a serve that gets past the weights check stops at the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        r = ctx.lesion("serve", "--models", FOCAL, "--port", port, env={"LESION_WEIGHTS_DIR": str(t / "w")},
                       timeout=120)
        r2 = ctx.lesion("serve", "--models", FOCAL, "--port", port, "--no-verify",
                        env={"LESION_WEIGHTS_DIR": str(t / "w")}, timeout=120)
    o = judge_error(r, "sha256")
    if o.category == "clear error" and "in use" not in r2.err:
        return Outcome("silently wrong", f"advises --no-verify, but with it: exit {r2.rc} {r2.err.strip()[-100:]}")
    return o


@case("evaluate cls --engine ray --no-verify: an edited checkpoint runs", "result")
def c_ray_no_verify(ctx: Ctx) -> Outcome:
    t = ctx.tmp("raynoverify")
    stem = _nudged_copy(FOCAL, t / "w")
    r = ctx.lesion("evaluate", "cls", "--models", stem, "--data", ctx.fixtures["clsset"], "--tta", "none",
                   "--engine", "ray", "--no-verify", env={"LESION_RAY_THREADS": "1"}, timeout=600)
    j = r.last_json or {}
    if r.rc == 2 and "--no-verify" in r.err:
        return Outcome("silently wrong", "told to pass --no-verify, which was passed")
    return judge_result(r, j.get("n") == 12, f"n={j.get('n')} auc={j.get('auc')}")


@case("evaluate seg --no-verify: an edited U-Net runs", "result")
def c_seg_no_verify(ctx: Ctx) -> Outcome:
    t = ctx.tmp("segnoverify")
    stem = _nudged_copy(DERM_UNET, t / "w")
    r = eval_seg(ctx, ctx.fixtures["blobs"], str(stem), "--no-verify")
    iou, n = iou_of(r)
    return judge_result(r, n == 4 and iou is not None, f"n={n} iou={iou}")


@case("evaluate seg: every image unreadable", "error")
def c_seg_all_failed(ctx: Ctx) -> Outcome:
    t = ctx.tmp("segallfail")
    d = blob_set(t / "d", n=3)
    for p in (d / "images").iterdir():
        p.write_text("not an image")
    r = eval_seg(ctx, d, "otsu", "--out", t / "res.csv")
    o = judge_error(r, "failed")
    if o.category == "clear error" and (t / "res.csv").exists():
        return Outcome("silently wrong", "error, but a CSV of NaN rows was written")
    return o


# ============================================================================================ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="parallel CLI cases (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--only", default="", help="run only cases whose name contains this (several: A|B)")
    ap.add_argument("--tree", default="", help="sweep this copy of the sources instead of the script's repository")
    a = ap.parse_args(argv)
    global REPO, SHIPPED
    if a.tree:
        REPO = Path(a.tree).resolve()
        SHIPPED = REPO / "weights"
    repo_weights_before = digest_tree([Path(__file__).resolve().parents[1] / "weights"])

    for k, v in (("HF_HUB_OFFLINE", "1"), ("OMP_NUM_THREADS", "1"), ("NO_ALBUMENTATIONS_UPDATE", "1")):
        os.environ.setdefault(k, v)
    root = Path(tempfile.mkdtemp(prefix="lesion-sweep-"))
    os.environ["LESION_CACHE"] = str(root / "cache")   # this process's own library calls
    ctx = Ctx(root)
    shipped_before = digest_tree([SHIPPED])
    t0 = time.time()
    print(f"sweep folder: {root}", flush=True)
    build_fixtures(ctx)
    only = [o.strip().lower() for o in a.only.split("|")]
    chosen = [c for c in CASES if any(o in c.name.lower() for o in only)]

    def run_case(c: Case) -> None:
        t = time.time()
        try:
            c.result = c.fn(ctx)
        except Exception as e:  # a bug of the sweep itself, shown as such
            c.result = Outcome("traceback", f"SWEEP BUG {type(e).__name__}: {e}"[:150])
            traceback.print_exc()
        c.wall = time.time() - t
        print(f"  [{c.wall:5.1f}s] {c.result.category:14s} {c.name}", flush=True)

    # the first training run makes the checkpoint the others reuse; then serial (in-process) cases, then the rest
    first = [c for c in chosen if c.fn in (c_train_default,)]
    serial = [c for c in chosen if c.serial and c not in first]
    rest = [c for c in chosen if not c.serial and c not in first]
    for c in first + serial:
        run_case(c)
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        list(pool.map(run_case, rest))
    for stop in ctx.cleanups:
        stop()

    if lost(shipped_before):
        print(f"!! the repository's weights/ changed: {lost(shipped_before)}")

    w = max(len(c.name) for c in chosen)
    print()
    print(f"{'#':>3}  {'case':{w}}  {'expected':8}  {'category':14}  outcome")
    print("-" * (w + 120))
    for i, c in enumerate(chosen, 1):
        print(f"{i:3d}  {c.name:{w}}  {c.expected:8}  {c.result.category:14}  {c.result.outcome}")
    totals = {k: sum(c.result.category == k for c in chosen) for k in CATEGORIES}
    print()
    print(f"cases tried: {len(chosen)}  " + "  ".join(f"{k}: {v}" for k, v in totals.items()))
    refused = [c.name for c in chosen if c.result.refused_valid]
    if refused:
        print(f"(of the clear errors, {len(refused)} refused a fair input: {'; '.join(refused)})")
    print(f"sources swept: {REPO}")
    print(f"repository weights unchanged: {not lost(shipped_before) and not lost(repo_weights_before)}; wall time {time.time() - t0:.0f} s")
    if a.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
