"""Benchmark: quality of the shipped dermoscopy classifiers and their ensemble (issue bar: d4-TTA ensemble
AUC >= 0.92 on held-out HAM10000 lesions and >= the best member; multi-task >= plain classifier, same encoder).

For every shipped ``derm`` classifier / multi-task model (melanoma vs rest): the held-out HAM10000 fold of
its card (rebuilt with :func:`lesion.train.cls.split_records`; every model must share it), PH2 (melanoma vs
nevi, external), without TTA and with d4; then the ensemble of all members and seed 003's suggested subset
(by AUC and low correlation, :func:`lesion.infer.ensemble.suggest_members`) with mean-probability merging.
Caveat printed with the table: the suggestion is chosen on the same held-out fold, so its AUC is optimistic.

Run: ``python bench/bench_classify.py [--data-root ../shared/data] [--tta none,d4] [--threads 1]``.
"""
from __future__ import annotations

import argparse
import sys
import time

from _common import data_root  # noqa: E402  (repository on sys.path, offline settings)
AUC_BAR = 0.92


def held_out(ham, card) -> list:
    from lesion.train.heldout import held_out as rebuild

    split = rebuild(card, ham)
    if not split.matches_card:
        raise SystemExit(f"{card.name}: rebuilt split ({split.how}) differs from its card.")
    return split.records


def _fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="folder holding HAM10000/ and PH2/ (default ../shared/data)")
    p.add_argument("--tta", default="none,d4")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from lesion.classify.models import make_targets
    from lesion.data import load_dataset
    from lesion.infer.engine import predict
    from lesion.infer.ensemble import merge_members, suggest_members
    from lesion.metrics import roc_auc_ci
    from lesion.weights import list_weights
    from lesion.zoo import CLASSIFIER_TASKS, load_model

    root = data_root(a.data_root)
    if not (root / "HAM10000").is_dir():
        print(f"(skipped: no HAM10000 under {root})")
        return 0
    cards = [c for c in list_weights(domain="derm") if c.task in CLASSIFIER_TASKS and c.target == "melanoma"]
    models = [load_model(c.name) for c in cards]
    ham = load_dataset(root / "HAM10000")
    val = held_out(ham, models[0][1])
    ids = [r.id for r in val]
    for m, c in models[1:]:
        if [r.id for r in held_out(ham, c)] != ids:
            raise SystemExit(f"{c.name} was validated on another fold: the ensemble cannot be scored fairly.")
    sets = {"HAM10000 held-out lesions": (val, make_targets(val, "melanoma"))}
    if (root / "PH2").is_dir():
        ph2 = [r for r in load_dataset(root / "PH2").records if r.diagnosis]
        sets["PH2 (external)"] = (ph2, make_targets(ph2, "melanoma"))
    sizes = [f"{c['name']} ({c['preprocessing']['size']} px)" for c in cards]
    print(f"members: {', '.join(sizes)}; held-out fold: {len(val)} images, "
          f"{len({r.group for r in val})} lesions, {int(sets['HAM10000 held-out lesions'][1].sum())} melanoma\n")
    print("| data | TTA | model | ROC-AUC [95% CI] |\n|---|---|---|---|")
    verdicts = []
    for tta in a.tta.split(","):
        for data_name, (recs, y) in sets.items():
            t0 = time.perf_counter()
            res = predict(models, recs, tta=tta, merge="mean_prob", batch_size=32, device="auto")
            scores = {n: p[:, 0] for n, p in res.member_probs.items()}
            aucs = {n: roc_auc_ci(y, s, n_boot=1000) for n, s in scores.items()}
            for n, t in aucs.items():
                print(f"| {data_name} | {tta} | {n} | {_fmt(t)} |")
            ens = roc_auc_ci(y, res.probs[:, 0], n_boot=1000)
            print(f"| {data_name} | {tta} | **ensemble of all {len(models)} (mean prob)** | **{_fmt(ens)}** |")
            if data_name.startswith("HAM"):
                k = max(2, len(models) - 1)
                pick = suggest_members(scores, y, k=k)
                sub = merge_members([res.member_probs[n] for n in pick], "mean_prob")[:, 0]
                print(f"| {data_name} | {tta} | suggested {k}: {', '.join(pick)} (chosen on this fold) | "
                      f"{_fmt(roc_auc_ci(y, sub, n_boot=1000))} |")
                best = max(aucs.values(), key=lambda t: t[0])[0]
                verdicts.append((tta, ens[0], best))
                # same encoder *and* input size: a 224-px multi-task model against a 128-px plain one would
                # measure the resolution, not the segmentation attention and metadata
                size = {c.name: (c.arch, c.preprocessing.size) for c in cards}
                mt = {n: t[0] for n, t in aucs.items() if "multitask" in n}
                plain = {n: t[0] for n, t in aucs.items() if "multitask" not in n
                         and any(size[n] == size[m] for m in mt)}
                if mt and plain:
                    verdicts.append((tta, "multitask", max(mt.values()), max(plain.values())))
            print(f"|  | {tta} | ({time.perf_counter() - t0:.0f} s, {res.ms_per_image:.0f} ms/image on {res.device}) | |")
    print()
    for v in verdicts:
        if v[1] == "multitask":
            print(f"[{'PASS' if v[2] >= v[3] else 'FAIL'}] {v[0]}: multi-task {v[2]:.3f} >= best plain classifier "
                  f"with the same encoder and input size {v[3]:.3f}")
        else:
            print(f"[{'PASS' if v[1] >= AUC_BAR else 'FAIL'}] {v[0]}: ensemble AUC {v[1]:.3f} >= {AUC_BAR}")
            print(f"[{'PASS' if v[1] >= v[2] else 'FAIL'}] {v[0]}: ensemble AUC {v[1]:.3f} >= best member {v[2]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
