"""Benchmark: the shipped chest X-ray classifiers on held-out data, and their CPU speed.

1. Tuberculosis vs normal (``cxr_tb_*``): ROC-AUC with bootstrap 95 % CI on the held-out patients of the
   "Chest X-ray Masks and Labels" set (the ``val_ids`` in the model card's split; the same patients the lung
   models hold out), without TTA and with the horizontal flip, per source (Montgomery, Shenzhen) too.
2. Demo findings (``cxr_demo_findings_*``): per-finding AUC on the built-in demo X-rays (seed 0), which the
   model never saw (it was trained on a separately generated set, seed 1).
3. Speed: one radiograph through each model on the CPU (1 torch thread), median of 20 after warm-up.

Run: ``python bench/bench_cxr.py [--data ../shared/data]``. Prints markdown tables.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _common import data_root  # noqa: E402  (repository on sys.path, offline settings)



def _fmt(auc, lo, hi) -> str:
    """An AUC with its CI; "n/a" when the one-class rule of lesion.metrics made it NaN."""
    return f"{auc:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(auc) else "n/a"


def tb_table(data_root: Path) -> list[str]:
    from lesion.classify.cxr import labels_for_model
    from lesion.zoo import load_model
    from lesion.data import load_dataset
    from lesion.infer.engine import predict
    from lesion.metrics import roc_auc_ci
    from lesion.weights import list_weights

    folder = data_root / "ChestXrayMasksAndLabels"
    cards = [c for c in list_weights(domain="cxr", task="classification") if c.target == "tb"]
    if not folder.is_dir() or not cards:
        return [f"(skipped: {'no ' + str(folder.name) if not folder.is_dir() else 'no shipped TB model'})"]
    ds = load_dataset(folder)
    lines = ["| model | TTA | held-out patients | TB+ | ROC-AUC [95% CI] | Montgomery | Shenzhen |",
             "|---|---|---|---|---|---|---|"]
    for c in cards:
        model, card = load_model(c.name)
        val_ids = card.split.val_ids()
        recs = [r for r in ds.records if r.id in val_ids]
        y, _ = labels_for_model(card, recs)
        y = y[:, 0]
        for tta in ("none", "hflip"):
            res = predict([(model, card)], recs, tta=tta, device="cpu")
            s = res.probs[:, 0]
            row = [c.name, tta, str(len(recs)), str(int(y.sum())), _fmt(*roc_auc_ci(y, s, n_boot=2000))]
            for src in ("MCUCXR", "CHNCXR"):
                m = np.array([r.id.upper().startswith(src) for r in recs])
                ok = m & np.isfinite(y)
                row.append(_fmt(*roc_auc_ci(y[ok], s[ok], n_boot=2000)) + f" (n={ok.sum()})")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def demo_table() -> list[str]:
    from lesion.classify.cxr import labels_for_model
    from lesion.zoo import load_model
    from lesion.data.demo import load_demo
    from lesion.infer.engine import predict
    from lesion.metrics import per_label_auc
    from lesion.weights import list_weights

    cards = [c for c in list_weights(domain="cxr", task="classification") if c.target != "tb"]
    if not cards:
        return ["(skipped: no shipped demo-findings model)"]
    ds = load_demo("cxr")
    lines = ["| model | finding | images | positives | ROC-AUC [95% CI] |", "|---|---|---|---|---|"]
    for c in cards:
        model, card = load_model(c.name)
        y, _ = labels_for_model(card, ds.records)
        res = predict([(model, card)], ds.records, tta="none", device="cpu")
        for j, cls in enumerate(res.classes):
            ok = np.isfinite(y[:, j])
            r = per_label_auc(y[ok, j][:, None], res.probs[ok, j][:, None], [cls], ci=True, n_boot=2000)[cls]
            lines.append(f"| {c['name']} | {cls} | {int(ok.sum())} | {r['positives']} | {_fmt(r['auc'], *r['auc_ci'])} |")
    return lines


def speed_table() -> list[str]:
    import torch

    from lesion.classify.models import normalize, prepare_image
    from lesion.zoo import load_model
    from lesion.weights import list_weights

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    lines = ["| model | input | median ms / image (1 thread, preprocessing included) |", "|---|---|---|"]
    for c in list_weights(domain="cxr", task="classification"):
        model, card = load_model(c.name)
        prep = card.preprocessing
        times = []
        with torch.inference_mode():
            for i in range(23):
                t0 = time.perf_counter()
                model(torch.from_numpy(normalize(prepare_image(image, prep)[None], prep)))
                if i >= 3:
                    times.append(time.perf_counter() - t0)
        lines.append(f"| {c['name']} | {prep.size} px, {prep.channels} channel | {1000 * statistics.median(times):.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="folder holding ChestXrayMasksAndLabels (default ../shared/data)")
    a = p.parse_args(argv)
    root = data_root(a.data)
    print("## Tuberculosis vs normal, held-out patients\n")
    print("\n".join(tb_table(root)))
    print("\n## Demo findings on the built-in demo X-rays (never trained on)\n")
    print("\n".join(demo_table()))
    print("\n## Speed (CPU)\n")
    print("\n".join(speed_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
