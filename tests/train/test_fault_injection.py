"""Fault injection: a training run killed (SIGKILL) at random moments never leaves a half checkpoint.

A tiny segmentation run (generated blobs, resnet18 at depth 3, 64 px) writes its checkpoint over an earlier
one (``--out … --overwrite``) and its own run folder (log.csv, the running best). It is killed at seeded
random moments; after every kill each card on disk must sit beside the weights it describes (sha256 equal,
and :func:`lesion.zoo.load_model` loads the pair), a weights file without its card must be a complete file
(the moment between the two renames), and log.csv must be whole rows.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _blob_folder(root: Path, n: int = 16, size: int = 64, seed: int = 0) -> Path:
    """Plain layout: dark elliptical 'lesions' on noisy skin (the answer, the mask, is known)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    rows = ["image,lesion_id,diagnosis"]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.12, 0.3, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = np.where(mask[..., None], [110, 70, 50], [220, 170, 150]) + rng.normal(0, 12, (size, size, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"b{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"b{i:02d}_mask.png")
        rows.append(f"b{i:02d}.png,L{i // 2:02d},{'mel' if i % 4 == 0 else 'nv'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"name": "Blobs", "domain": "derm", "synthetic": True}))
    return root


def _command(data: Path, out: Path, runs: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "lesion.cli", "train", "seg", "--data", str(data), "--arch", "unet",
            "--encoder", "resnet18", "--encoder-depth", "3", "--init", "random", "--size", "64",
            "--epochs", str(epochs), "--batch-size", "4", "--patience", "0", "--augment", "0", "--lr", "3e-3",
            "--val-fraction", "0.25", "--device", "cpu", "--threads", "1", "--out", str(out), "--overwrite",
            "--runs-dir", str(runs)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
            "PYTHONPATH": str(ROOT)}


def _check_pairs(folder: Path) -> dict[str, str]:
    """Every card in ``folder`` has its weights with the card's sha256 and loads; a lone weights file is whole.
    Returns ``{stem: sha256}`` of the complete pairs."""
    from safetensors import safe_open

    from lesion.zoo import load_model

    pairs = {}
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    for card_file in (p for p in visible if p.suffix == ".json"):
        weights = card_file.with_suffix(".safetensors")
        assert weights.is_file(), f"card {card_file} without its weights"
        card = json.loads(card_file.read_text())
        sha = hashlib.sha256(weights.read_bytes()).hexdigest()
        assert card["provenance"]["sha256"] == sha, f"{card_file.name} describes other weights than {weights.name}"
        load_model(str(weights), device="cpu")
        pairs[card_file.stem] = sha
    for weights in (p for p in visible if p.suffix == ".safetensors" and p.stem not in pairs):
        with safe_open(str(weights), "pt") as f:  # complete: the header and every tensor read
            for k in f.keys():
                f.get_tensor(k)
    assert {p.suffix for p in visible} <= {".json", ".safetensors", ".csv"}, visible
    return pairs


def _check_log(log: Path) -> None:
    rows = list(csv.reader(log.open()))
    assert rows and rows[0][0] == "epoch" and all(len(r) == len(rows[0]) for r in rows[1:])
    assert [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))


def _start(cmd: list[str], cwd: Path) -> tuple[subprocess.Popen, float]:
    """Start a run; return it and the seconds until its first epoch line (training and writing begin)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "epoch 1/" in line:
            break
    return proc, time.monotonic() - t0


def test_killed_training_never_leaves_a_half_checkpoint_or_a_card_without_its_weights(tmp_path):
    data = _blob_folder(tmp_path / "data", n=12)
    out, runs = tmp_path / "dest" / "model", tmp_path / "runs"
    cmd = _command(data, out, runs, epochs=3)
    # a first, complete run: the checkpoint the killed runs try to replace, and how long its writing part takes
    proc, first_epoch = _start(cmd, tmp_path)
    t0 = time.monotonic()
    proc.stderr.read()
    assert proc.wait(timeout=90) == 0
    writing = time.monotonic() - t0  # from the first epoch line to the end: epochs, best saves, final save
    current = _check_pairs(out.parent)["model"]
    rng = random.Random(12)
    seen = []
    for _ in range(3):  # killed at seeded random moments of the part that writes files
        proc, _ = _start(cmd, tmp_path)
        time.sleep(rng.uniform(0.0, 1.1) * writing)
        proc.kill()  # SIGKILL: no finally, no atexit
        proc.wait(timeout=30)
        proc.stderr.close()
        pairs = _check_pairs(out.parent)
        if "model" in pairs:  # the previous pair, or this run's
            seen.append("old" if pairs["model"] == current else "new")
            current = pairs["model"]
        else:
            seen.append("no card")
        for run in runs.glob("seg/*"):
            _check_pairs(run)
            if (run / "log.csv").exists():
                _check_log(run / "log.csv")
    assert len(seen) == 3  # each kill left the old pair, the new pair, or (between two renames) no card
