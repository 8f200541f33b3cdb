"""Benchmark: multi-view fusion of the shipped dermoscopy classifiers, per-view vs fused ROC-AUC.

Prints one markdown table and the bar with PASS/FAIL per row: **fused AUC >= per-view AUC on multi-view cases**.

1. HAM10000, the lesions held out from the shipped classifiers' training: the validation fold of each card's
   ``split`` (method stratified_group_kfold, seed, fold, n_splits; reproduced with
   :func:`lesion.train.cls.split_records` on the card's ``train_config``), restricted to the lesions with >= 2
   images (``--all-val`` keeps the one-image lesions too: they then help fit the stacker, never the AUCs).
2. The demo dermoscopy set (synthetic; 1-2 views per lesion), all images; AUCs on the lesions with 2 views.

Rows: every shipped classifier alone and their mean-probability ensemble, for each TTA in ``--tta``.
Per view: every image of the multi-view lesions scored alone with its own label (AUC over images; a lesion with
5 images counts 5 times). One random view: each lesion scored by one of its views, mean over 50 draws (the
like-for-like baseline: same lesions, same labels as the fused AUCs; shown, the bar stays per view). Fused: one
score per lesion (AUC over lesions; a lesion's label = max of its views'): mean, max, log_mean (geometric mean
of probabilities) and the logistic stacker fitted out of fold over lesions (5 folds: no lesion is scored by a
stacker that saw it). CIs: stratified percentile bootstrap, 1000 resamples; the per-view CI treats the views
of one lesion as independent, so it is narrower than it should be.

Run: ``python bench/bench_fusion.py [--data-root ../shared/data/HAM10000] [--tta none,d4] [--out FILE]``.
CPU, 1 torch thread by default (~20-30 ms per image and view at 128 px).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import REPO, emit  # noqa: E402  (repository on sys.path, offline settings)

METHODS = ("mean", "max", "log_mean", "stacker")


def _held_out(ds, card):
    """The card's validation records (:func:`lesion.train.heldout.held_out`) and the split's description."""
    from lesion.train.heldout import held_out

    split = held_out(card, ds)
    return split.records, split.how


def _rows(label: str, records, models, tta: str, n_boot: int) -> tuple[list[dict], float]:
    """One row per member and (with >1 member) their ensemble: per-view vs fused AUCs."""
    from lesion.infer.engine import predict
    from lesion.infer.evaluate import label_vector, resolve_target, score
    from lesion.infer.fusion import ONE_VIEW, case_keys, evaluate_fusion

    _, target = resolve_target([c for _, c in models], None)
    target = "melanoma" if target == "dx7" else target
    t0 = time.perf_counter()
    res = predict(models, records, tta=tta, merge="mean_prob", device="cpu")
    secs = time.perf_counter() - t0
    y = label_vector(records, target)
    keys = case_keys(records, "lesion_id")
    probs = dict(res.member_probs)
    if len(probs) > 1:
        probs["ensemble (mean_prob)"] = res.probs
    rows = []
    for name, p in probs.items():
        rep = evaluate_fusion(score(p, res.classes, target), y, keys, ids=res.ids, n_boot=n_boot)
        auc = rep.auc.set_index("method")
        rows.append({"data": label, "model": name, "tta": tta, "cases": rep.counts["multi_view_cases"],
                     "images": rep.counts["multi_view_images"], "pos": int(auc.loc["mean", "positives"]),
                     "auc": {m: tuple(auc.loc[m, ["auc", "ci_lo", "ci_hi"]]) for m in auc.index},
                     "passes": rep.passes(), "passes_one": rep.passes(ONE_VIEW),
                     "disagree": rep.counts["disagreeing_cases"]})
    return rows, secs


def _fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def _table(rows: list[dict]) -> str:
    head = ("| data | model | TTA | lesions (images), pos | per view | one random view | " + " | ".join(METHODS)
            + " | fused ≥ per view | fused ≥ one view |")
    lines = [head, "|" + "---|" * (6 + len(METHODS) + 2)]

    def bar(passes: dict[str, bool]) -> str:
        return "PASS" if all(passes.values()) else "FAIL (" + ", ".join(m for m, ok in passes.items() if not ok) + ")"

    for r in rows:
        cells = [_fmt(r["auc"][m]) if m in r["auc"] else "–" for m in METHODS]
        lines.append(f"| {r['data']} | {r['model']} | {r['tta']} | {r['cases']} ({r['images']}), {r['pos']} | "
                     f"{_fmt(r['auc']['per view'])} | {_fmt(r['auc']['one random view'])} | " + " | ".join(cells)
                     + f" | {bar(r['passes'])} | {bar(r['passes_one'])} |")
    return "\n".join(lines)


def run(data_root: Path, ttas: list[str], n_boot: int, threads: int, all_val: bool, demo: bool) -> str:
    import torch

    from lesion.zoo import CLASSIFIER_TASKS, load_model
    from lesion.data import load_dataset
    from lesion.infer.fusion import Cases, case_keys
    from lesion.weights import list_weights

    torch.set_num_threads(threads)  # one thread: the app's setting, and 2 threads stall on 2 busy cores
    out = [f"bench_fusion  ({time.strftime('%Y-%m-%d %H:%M')}, CPU, torch threads = {torch.get_num_threads()})", ""]
    cards = [c for c in list_weights(domain="derm") if c.task in CLASSIFIER_TASKS and not c.multilabel]
    if not cards:
        return "\n".join(out + ["(no shipped dermoscopy classifiers in weights/: nothing to benchmark)"])
    models = [load_model(c.name) for c in cards]
    rows: list[dict] = []

    if data_root.is_dir():
        ds = load_dataset(data_root)
        splits = {}
        for _, card in models:
            key = repr((card.split.method, card.split.seed, card.split.fold, card.split.n_splits, card.target))
            splits.setdefault(key, []).append(card)
        for key, group in splits.items():
            val, how = _held_out(ds, group[0])
            cases = Cases.from_keys(case_keys(val, "lesion_id"))
            keep = cases.multi[cases.index] if not all_val else np.ones(len(val), bool)
            recs = [r for r, k in zip(val, keep) if k]
            out.append(f"HAM10000 held-out {how} ({len(val)} images, {len({r.group for r in val})} lesions) for "
                       f"{', '.join(c.name for c in group)}: "
                       f"{int(cases.multi.sum())} lesions with >= 2 images ({int(cases.n_views[cases.multi].sum())} "
                       f"images); predicting {len(recs)} images.")
            members = [m for m in models if m[1] in group]
            for tta in ttas:
                r, secs = _rows("HAM10000 held-out", recs, members, tta, n_boot)
                rows += r
                out.append(f"  TTA {tta}: {secs:.0f} s for {len(recs)} images x {len(members)} models")
    else:
        out.append("(HAM10000 not found at the --data-root given: its rows are skipped)")

    if demo:
        from lesion.data.demo import load_demo

        dd = load_demo("derm")
        for tta in ttas:
            r, secs = _rows("demo derm (synthetic)", dd.records, models, tta, n_boot)
            rows += r
            out.append(f"demo derm, TTA {tta}: {secs:.0f} s for {len(dd)} images x {len(models)} models")
    out += ["", _table(rows), ""]
    ham = [r for r in rows if r["data"].startswith("HAM")]
    if ham:
        ok = all(all(r["passes"].values()) for r in ham)
        mean_ok = all(r["passes"].get("mean", False) for r in ham)
        out.append(f"[{'PASS' if ok else 'FAIL'}] HAM10000 held-out multi-view lesions: every fused AUC >= per-view "
                   f"AUC for every model and TTA ({sum(all(r['passes'].values()) for r in ham)}/{len(ham)} rows)")
        out.append(f"[{'PASS' if mean_ok else 'FAIL'}] HAM10000 held-out: mean fusion >= per view in every row")
        one_ok = all(r["passes_one"].get("mean", False) for r in ham)
        out.append(f"[{'PASS' if one_ok else 'FAIL'}] HAM10000 held-out: mean fusion >= one random view per lesion "
                   "(like-for-like, same lesions and labels) in every row")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(REPO / ".." / "shared" / "data" / "HAM10000"),
                    help="HAM10000 folder (default ../shared/data/HAM10000 next to the repository); skipped if absent")
    ap.add_argument("--tta", default="none,d4", help="comma-separated TTA names (default none,d4)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the AUC CIs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the app uses)")
    ap.add_argument("--all-val", action="store_true", help="also predict the held-out lesions with one image")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo set")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)
    report = run(Path(args.data_root), [t.strip() for t in args.tta.split(",") if t.strip()], args.n_boot,
                 args.threads, args.all_val, not args.no_demo)
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
