"""The shipped models' headline figures, to six decimals: run before and after a change that must not move them.

    python bench/bench_figures.py [--data ../shared/data]

Rows (each on the data it names; splits rebuilt from the cards by ``lesion.train.heldout.held_out``, no TTA):

* ``cxr_tb_efficientnet_lite0`` ROC-AUC with its bootstrap CI on its held-out patients;
* ``lung_unet_efficientnet_lite0`` mean IoU / Dice on its held-out X-rays;
* ``derm_unet_efficientnet_lite0`` mean IoU on PH2 (external);
* the ensemble of the four derm classifiers (mean probability) and each member's AUC on the HAM10000
  held-out fold.

Only public entry points are used (``lesion.zoo.load_model`` / ``load_segmenter``, the one ``predict``,
``lesion.segment.evaluate.evaluate_segmentation``, ``lesion.metrics.roc_auc_ci``), so the script runs on an
older checkout too.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DERM = ("derm_cls_efficientnet_lite0_focal", "derm_cls_efficientnet_lite0_ohem", "derm_cls_efficientnet_lite1_bce",
        "derm_multitask_efficientnet_lite0")


def _auc(y, s) -> str:
    from lesion.metrics import roc_auc_ci

    auc, lo, hi = roc_auc_ci(np.asarray(y), np.asarray(s), n_boot=1000)
    return f"{auc:.6f} [{lo:.6f}, {hi:.6f}]"


def run(root: Path) -> list[str]:
    import torch

    from lesion.data.spec import open_data
    from lesion.infer.engine import predict
    from lesion.infer.evaluate import label_vector
    from lesion.segment.evaluate import evaluate_segmentation
    from lesion.train.heldout import held_out
    from lesion.zoo import load_model, load_segmenter

    torch.set_num_threads(1)
    rows = []
    cxr = open_data(str(root / "ChestXrayMasksAndLabels"))
    model, card = load_model("cxr_tb_efficientnet_lite0")
    recs = held_out(card, cxr).records
    res = predict([(model, card)], recs, tta="none", device="cpu")
    y = label_vector(recs, "tb")
    ok = np.isfinite(y)
    rows.append(f"| cxr_tb ROC-AUC, held-out ({int(ok.sum())}) | {_auc(y[ok], res.probs[ok, -1])} |")

    seg = load_segmenter("lung_unet_efficientnet_lite0")
    ho = held_out(seg.card, cxr).records
    sub = dataclasses.replace(cxr, records=ho)
    df = evaluate_segmentation(sub, seg, method_name="unet", threshold=seg.card.preprocessing.threshold or 0.5)
    rows.append(f"| lung U-Net IoU / Dice, held-out ({len(df)}) | {df['iou'].mean():.6f} / {df['dice'].mean():.6f} |")

    ph2 = open_data(str(root / "PH2"))
    dseg = load_segmenter("derm_unet_efficientnet_lite0")
    df = evaluate_segmentation(ph2, dseg, method_name="unet", threshold=dseg.card.preprocessing.threshold or 0.5)
    rows.append(f"| derm U-Net IoU, PH2 ({len(df)}) | {df['iou'].mean():.6f} |")

    ham = open_data(str(root / "HAM10000"))
    members = [load_model(n) for n in DERM]
    recs = held_out(members[0][1], ham).records
    res = predict(members, recs, tta="none", merge="mean_prob", device="cpu")
    y = label_vector(recs, "melanoma")
    rows.append(f"| ensemble of 4, HAM10000 held-out ({len(recs)}) | {_auc(y, res.probs[:, -1])} |")
    rows.append("| members " + " / ".join(DERM) + " | "
                + " / ".join(f"{_auc(y, p[:, -1]).split(' ')[0]}" for p in res.member_probs.values()) + " |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("LESION_SHARED_DATA", "../shared/data"))
    a = p.parse_args(argv)
    root = Path(a.data)
    if not (root / "HAM10000").is_dir():
        print(f"bench_figures: the real data sets are not under {root}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    print(f"bench_figures ({time.strftime('%Y-%m-%d %H:%M')}, CPU, 1 torch thread)\n")
    print("| figure | value |\n|---|---|")
    for r in run(root):
        print(r)
    print(f"\n({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
