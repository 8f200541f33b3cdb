"""Benchmark: the shipped melanoma classifier exported to ONNX (fp32 and int8): size, CPU latency, AUC.

Exports ``derm_cls_efficientnet_lite0_focal`` with :mod:`lesion.export` into a temporary folder at its
native 128 px and at 224 px, fp32 and int8 (static QDQ, calibrated on 64 images of the model's own HAM10000
*training* fold, so no held-out image is seen), then prints markdown tables:

1. Files: size in MB.
2. Latency: one image (batch 1, already prepared) through onnxruntime and PyTorch on the CPU, 1 and 2
   intra-op threads, median of ``--n-speed`` calls after 5 warm-up calls, at 224 and 128 px; plus the cost of
   the preprocessing itself. Bar: fp32 ONNX at 224 px <= 50 ms per image (1 thread).
3. AUC (melanoma vs rest) at the card's 128 px, with stratified bootstrap 95 % CIs, for PyTorch fp32, ONNX fp32
   and ONNX int8: on the HAM10000 lesions held out from the model's training (the fold recorded in the card's
   ``split``, rebuilt with :func:`lesion.train.cls.split_records`) and on PH2 (melanoma vs nevi, external).

A data set missing under ``--data-root`` is skipped. The machine may be shared: the load average is printed.

Run: ``python bench/bench_export.py [--data-root ../shared/data] [--n-speed 20] [--out FILE]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import data_root, emit  # noqa: E402  (repository on sys.path, offline settings)

MODEL = "derm_cls_efficientnet_lite0_focal"
LATENCY_BAR_MS = 50.0
CALIB_IMAGES = 64



def held_out_split(ham_dir: Path, card):
    """The model's split of HAM10000, rebuilt from the card (:func:`lesion.train.heldout.held_out`)."""
    from lesion.data import load_dataset
    from lesion.train.heldout import held_out

    return held_out(card, load_dataset(ham_dir))


def _median_ms(fn, n: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000


def _prepare(records, prep):
    from lesion.classify.models import normalize, prepare_image
    from lesion.data.io import read_image

    return normalize(np.stack([prepare_image(read_image(r.image_path), prep) for r in records]), prep)


def _torch_probs(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            out.append(torch.sigmoid(model(torch.from_numpy(x[s : s + batch]))).numpy())
    return np.concatenate(out)[:, 0]


def _onnx_probs(clf, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([clf.run(x[s : s + batch])["probabilities"] for s in range(0, len(x), batch)])[:, 0]


def run(data_root: Path, n_speed: int = 20) -> str:
    import onnxruntime
    import torch

    from lesion.classify.models import make_targets
    from lesion.zoo import load_model
    from lesion.export import OnnxClassifier, export_onnx, quantize_onnx
    from lesion.metrics import roc_auc_ci

    load0 = os.getloadavg()
    out = [f"bench_export  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores, load average "
           f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} at start, onnxruntime {onnxruntime.__version__}, "
           f"torch {torch.__version__})", ""]
    bars = []
    model, card = load_model(MODEL)
    native = card.preprocessing.size
    ham_dir, ph2_dir = data_root / "HAM10000", data_root / "PH2"

    split = None
    if ham_dir.is_dir():
        split = held_out_split(ham_dir, card)
        if not split.matches_card:
            out.append(f"(warning: rebuilt split ({split.how}) differs from the card's {card.split})")
        calib = split.train
        calib_name = f"HAM10000 training fold ({len(split.train)} images; {CALIB_IMAGES} sampled)"
    else:
        calib, calib_name = "demo:derm", "demo:derm (HAM10000 not found)"
        out.append(f"(HAM10000 not found at {ham_dir.name}: held-out AUC skipped, int8 calibrated on demo:derm)")

    with tempfile.TemporaryDirectory(prefix="bench-export-") as d:
        files = {}
        for size in sorted({native, 224}):
            fp = Path(d) / f"{MODEL}_{size}.onnx"
            export_onnx(MODEL, fp, size=size)
            q = quantize_onnx(fp, Path(d) / f"{MODEL}_{size}.int8.onnx", calib, n_images=CALIB_IMAGES)
            files[(size, "fp32")], files[(size, "int8")] = fp, Path(q.path)
        src_mb = card.provenance.file_size_bytes / 1e6

        # ---- 1. sizes
        out += ["1. Files", "", "| file | size (MB) |", "|---|---:|",
                f"| source safetensors (fp16) | {src_mb:.2f} |"]
        for (size, kind), p in files.items():
            if size == native:
                out.append(f"| ONNX {kind} | {p.stat().st_size / 1e6:.2f} |")
        out.append("")

        # ---- 2. latency
        out += [f"2. CPU latency per image (batch 1, prepared input; median of {n_speed} after 5 warm-up), ms", "",
                "| size | threads | PyTorch fp32 | ONNX fp32 | ONNX int8 |", "|---:|---:|---:|---:|---:|"]
        lat = {}
        for size in (224, native):
            x1 = np.random.default_rng(0).normal(0, 1, (1, 3, size, size)).astype(np.float32)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                xt = torch.from_numpy(x1)
                with torch.inference_mode():
                    t_torch = _median_ms(lambda: model(xt), n_speed)
                row = {"torch": t_torch}
                for kind in ("fp32", "int8"):
                    clf = OnnxClassifier(files[(size, kind)], threads=threads)
                    row[kind] = _median_ms(lambda: clf.run(x1), n_speed)
                lat[(size, threads)] = row
                out.append(f"| {size} | {threads} | {row['torch']:.1f} | {row['fp32']:.1f} | {row['int8']:.1f} |")
        torch.set_num_threads(1)
        if ph2_dir.is_dir():
            from lesion.classify.models import normalize, prepare_image
            from lesion.data import load_dataset
            from lesion.data.io import read_image

            ph2 = load_dataset(ph2_dir)
            img = read_image(ph2.records[0].image_path)
            p224 = replace(card.preprocessing, size=224)
            t_prep = _median_ms(lambda: normalize(prepare_image(img, p224)[None], p224), n_speed)
            out.append(f"\nPreprocessing one {img.shape[1]}x{img.shape[0]} PH2 image to 224 px (crop, resize, "
                       f"normalise): {t_prep:.1f} ms, not included above.")
        out.append("")
        t224 = lat[(224, 1)]["fp32"]
        bars.append(f"[{'PASS' if t224 <= LATENCY_BAR_MS else 'FAIL'}] ONNX fp32 at 224 px, 1 thread: "
                    f"{t224:.1f} ms per image <= {LATENCY_BAR_MS:.0f} ms")

        # ---- 3. AUC at the native size
        out += [f"3. AUC (melanoma vs rest) at the card's {native} px, 95 % bootstrap CI; int8 calibrated on "
                f"{calib_name}", "",
                "| data | n (mel) | PyTorch fp32 | ONNX fp32 | ONNX int8 | Δ AUC int8 − fp32 | max abs Δp fp32 vs PyTorch | "
                "mean abs Δp int8 vs fp32 |",
                "|---|---|---|---|---|---:|---:|---:|"]
        prep = card.preprocessing
        sets = []
        if split is not None:
            sets.append((f"HAM10000 held-out fold {card.split.fold}", split.records, "melanoma"))
        if ph2_dir.is_dir():
            from lesion.data import load_dataset

            sets.append(("PH2 (external, mel vs nevi)", load_dataset(ph2_dir).records, "melanoma"))
        else:
            out.append(f"(PH2 not found at {ph2_dir.name}: skipped)")
        fp_clf = OnnxClassifier(files[(native, "fp32")])
        q_clf = OnnxClassifier(files[(native, "int8")])
        for name, recs, target in sets:
            y = make_targets(recs, target)
            x = _prepare(recs, prep)
            p_t, p_f, p_q = _torch_probs(model, x), _onnx_probs(fp_clf, x), _onnx_probs(q_clf, x)
            aucs = [roc_auc_ci(y, p, n_boot=1000) for p in (p_t, p_f, p_q)]
            cells = [f"{a:.4f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in aucs]
            out.append(f"| {name} | {len(y)} ({int(y.sum())}) | {' | '.join(cells)} | {aucs[2][0] - aucs[1][0]:+.4f} | "
                       f"{np.abs(p_f - p_t).max():.1e} | {np.abs(p_q - p_f).mean():.4f} |")
    load1 = os.getloadavg()
    out += ["", f"Load average at the end: {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}", "", "Bars:"] + bars
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="folder holding HAM10000/ and PH2/ (default ../shared/data)")
    ap.add_argument("--n-speed", type=int, default=20, help="timed calls per latency cell (>= 20 recommended)")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)
    report = run(data_root(args.data_root), args.n_speed)
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
