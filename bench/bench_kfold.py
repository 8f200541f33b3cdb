"""The K-fold ensemble (seed 003 recipe) on data no member trained on: out-of-fold AUC and PH2, side by side.

    python bench/bench_kfold.py --models A,B,C,D,E [--tta d4] [--data ../shared/data] [--write-cards]

* per member: the AUC on its own held-out fold (the split rebuilt from its card; no image of it trained that
  member), with the TTA asked for;
* pooled out-of-fold: every HAM10000 image scored by the one member that held it out (K folds cover all images),
  AUC with its 95% bootstrap CI — the ensemble's honest HAM10000 figure, since every image was trained on by the
  other K-1 members;
* PH2 (external, never trained on, never used to choose): each member and the K-member ensemble (mean
  probability).

``--write-cards`` records the pooled out-of-fold AUC (with its CI; split ``out-of-fold``) as every member card's
headline metric, and its PH2 AUC with this TTA; the weights are not touched.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True)
    p.add_argument("--tta", default="d4")
    p.add_argument("--data", default=os.environ.get("LESION_SHARED_DATA", "../shared/data"))
    p.add_argument("--write-cards", action="store_true")
    a = p.parse_args(argv)
    import torch

    from lesion.card import EXTERNAL, OUT_OF_FOLD, Metric
    from lesion.data.spec import open_data
    from lesion.infer.engine import predict
    from lesion.infer.evaluate import label_vector
    from lesion.metrics import roc_auc_ci
    from lesion.train.heldout import held_out
    from lesion.weights import read_card, write_card
    from lesion.zoo import load_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    members = [load_model(n) for n in names]
    ham = open_data(str(Path(a.data) / "HAM10000"))
    ph2 = open_data(str(Path(a.data) / "PH2"))
    print(f"bench_kfold ({time.strftime('%Y-%m-%d %H:%M')}, CPU, 1 thread, TTA {a.tta})\n")
    print("| member | fold | held-out n | held-out AUC | PH2 AUC (external) |\n|---|---|---|---|---|")
    oof_ids, oof_p, oof_y = [], [], []
    y_ph2 = label_vector(ph2.records, "melanoma")
    ph2_res = predict(members, ph2, tta=a.tta, device="cpu", cache=True)
    ph2_member = {}
    for (model, card), (name, p_ph2) in zip(members, ph2_res.member_probs.items()):
        ho = held_out(card, ham)
        res = predict([(model, card)], ho.records, tta=a.tta, device="cpu", cache=None)
        y = label_vector(ho.records, "melanoma")
        auc, lo, hi = roc_auc_ci(y, res.probs[:, 0])
        ph2_member[name] = roc_auc_ci(y_ph2, p_ph2[:, 0])
        print(f"| {name} | {card.split.fold} of {card.split.n_splits} | {len(y)} | {auc:.4f} [{lo:.4f}, {hi:.4f}] | "
              f"{ph2_member[name][0]:.4f} [{ph2_member[name][1]:.4f}, {ph2_member[name][2]:.4f}] |", flush=True)
        oof_ids += [r.id for r in ho.records]
        oof_p.append(res.probs[:, 0])
        oof_y.append(y)
    ids = np.asarray(oof_ids)
    dup = len(ids) - len(set(ids))
    yy, pp = np.concatenate(oof_y), np.concatenate(oof_p)
    oof = roc_auc_ci(yy, pp)
    ens = roc_auc_ci(y_ph2, ph2_res.probs[:, 0])
    best = max(v[0] for v in ph2_member.values())
    print(f"\npooled out-of-fold AUC over {len(ids)} HAM10000 images ({len(set(ids))} distinct; "
          f"{int(yy.sum())} melanoma; {dup} scored twice): {oof[0]:.4f} [{oof[1]:.4f}, {oof[2]:.4f}]")
    print(f"ensemble of {len(members)} (mean probability, {a.tta}) on PH2 (200, external): "
          f"{ens[0]:.4f} [{ens[1]:.4f}, {ens[2]:.4f}]; best member on PH2 {best:.4f}")
    if a.write_cards:
        for (model, card), name in zip(members, ph2_res.member_probs):
            c = read_card(Path(card.path).with_suffix(".json"), card.path)
            pooled = Metric("auc", float(oof[0]), "HAM10000", OUT_OF_FOLD, n=len(ids), positives=int(yy.sum()),
                            ci=(float(oof[1]), float(oof[2])))
            ext = Metric("auc", float(ph2_member[name][0]), "PH2", EXTERNAL, n=len(y_ph2),
                         positives=int(np.nansum(y_ph2)), ci=(float(ph2_member[name][1]), float(ph2_member[name][2])))
            keep = [m for m in c.metrics if m.split != OUT_OF_FOLD and m.data != "PH2"]
            write_card(Path(card.path).with_suffix(""), c.replace(metrics=(pooled, *keep, ext)))
        print(f"wrote oof_auc into {len(members)} cards")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
