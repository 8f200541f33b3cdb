"""Benchmark: every segmentation method on every data set with masks, in one table.

Methods: the tuned Otsu ``preset(domain)``, the shipped U-Net and LinkNet of the domain, and LiteMedSAM
(``medsam_lite``) with each box prompt: the box of Otsu's mask, the box of the shipped U-Net's mask (lungs: one
box per lung, joined), the whole image. Data sets: PH2 (200 dermoscopy images, never trained on by our
networks), HAM10000 held-out (the ``val_ids`` of the derm U-Net's card, :func:`lesion.train.heldout.held_out`),
the lung X-rays held-out (the lung U-Net card's ``val_ids``).

Columns: IoU, Dice and the ISIC 2018 thresholded Jaccard (per image 0 when IoU < 0.65), each the mean over
images with a bootstrap 95 % CI; ms per image on the CPU with one torch thread (Otsu and the networks: wall time
of the whole pass / images; MedSAM: median of single-image calls, prompt included); the paired win rate over
Otsu (share of the same images where the method's IoU is higher than Otsu's; ties count half) and the paired
mean IoU difference. MedSAM is slow on a CPU, so it runs on at most ``--medsam-max`` images per data set (a
seeded sample, named in the table); its three prompts share one image encoding per image.

Fusion rows (:mod:`lesion.segment.fusion`, one per rule: mean, vote, STAPLE) fuse members out of five roles: Otsu,
the U-Net, the LinkNet, MedSAM with the Otsu box and MedSAM with the U-Net box. For each rule the members are the
subset (two or more roles) with the highest mean IoU on the **HAM10000 held-out** images that MedSAM ran on; that
choice is then applied unchanged to PH2 and to the lungs (the same roles of the lung models). PH2 chooses nothing:
its fusion rows are reported only. Without HAM10000 in ``--sets`` the recorded choice
(:data:`lesion.segment.fusion.RECOMMENDED`) is used. Fusion rows score the MedSAM sample (every member is there).

Run: ``OMP_NUM_THREADS=1 python bench/bench_segment.py [--out results.txt] [--data ../shared/data]
[--medsam-max 100] [--sets ph2,ham,lungs]``. Metrics are per image at native resolution.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from _common import data_root, emit  # noqa: E402  (repository on sys.path, offline settings)

NETS = {"derm": ("derm_unet_efficientnet_lite0", "derm_linknet_efficientnet_lite0"),
        "cxr": ("lung_unet_efficientnet_lite0", "lung_linknet_efficientnet_lite0")}
MEDSAM_PROMPTS = ("otsu", "unet box", "full")
METRICS = ("iou", "dice", "thresholded_jaccard")
SETS = ("ph2", "ham", "lungs")
PH2_IOU_BAR, LUNG_IOU_BAR, LUNG_DICE_BAR = 0.86, 0.94, 0.97
PH2_TJ_BAR = 0.82
#: Fusion member roles (the U-Net / LinkNet of the data set's domain; MedSAM prompted by the Otsu / U-Net box).
ROLES = ("otsu", "unet", "linknet", "medsam[otsu]", "medsam[unet box]")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _datasets(root: Path, which: tuple[str, ...]) -> list[tuple[str, str, object, str]]:
    """``(label, domain, dataset, how)`` for each data set that is present."""
    from lesion.data import load_dataset
    from lesion.data.records import Dataset
    from lesion.train.heldout import held_out
    from lesion.weights import resolve_weights

    out = []

    def held(folder: Path, model: str, label: str, domain: str) -> None:
        full = load_dataset(folder)
        _, card = resolve_weights(model)
        h = held_out(card, full)
        ds = Dataset(name=f"{full.name} held-out", layout=full.layout, domain=full.domain, root=full.root,
                     records=[r for r in h.records if r.mask_path is not None], classes=full.classes)
        out.append((label, domain, ds, f"{h.how} of {model}" + ("" if h.matches_card else " (counts differ from card!)")))

    if "ph2" in which and (root / "PH2").is_dir():
        ds = load_dataset(root / "PH2")
        out.append(("PH2", "derm", ds, "all images; no network of ours trained on PH2"))
    if "ham" in which and (root / "HAM10000").is_dir():
        held(root / "HAM10000", NETS["derm"][0], "HAM10000 held-out", "derm")
    if "lungs" in which and (root / "ChestXrayMasksAndLabels").is_dir():
        held(root / "ChestXrayMasksAndLabels", NETS["cxr"][0], "lungs held-out", "cxr")
    return out


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from lesion.metrics import seg_metrics
    from lesion.segment.evaluate import to_mask

    m = seg_metrics(to_mask(pred, truth.shape), truth)
    return {k: m[k] for k in METRICS}


def _row(method: str, per_image: dict[str, dict], otsu: dict[str, dict], ms: float, note: str = "") -> dict:
    from lesion.metrics import summarize

    ids = sorted(per_image)
    row = {"method": method, "n": len(ids), "ms": ms, "note": note}
    for k in METRICS:
        row[k] = summarize([per_image[i][k] for i in ids])
    both = [i for i in ids if i in otsu and np.isfinite(per_image[i]["iou"]) and np.isfinite(otsu[i]["iou"])]
    if both and per_image is not otsu:
        d = np.array([per_image[i]["iou"] - otsu[i]["iou"] for i in both])
        row["win"] = float(np.mean((d > 0) + 0.5 * (d == 0)))
        row["delta"] = float(d.mean())
    return row


def _medsam_ms(segs: dict, image: np.ndarray, n: int = 3) -> dict[str, float]:
    """Median ms of ``n`` single-image calls per MedSAM prompt (prompt derivation included), after one warm-up."""
    out = {}
    for name, seg in segs.items():
        seg(image)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            seg(image)
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts) * 1000
    return out


def bench_set(label: str, domain: str, ds, how: str, medsam_max: int, seed: int, batch: int) -> tuple[list[dict], str]:
    """Every method on one data set: rows of the table and one line saying which images."""
    from lesion.data.io import read_image, read_mask
    from lesion.segment.medsam import MedSamSegmenter, boxes_of, full_box, medsam_prompt_sets
    from lesion.segment.otsu import OtsuSegmenter, preset
    from lesion.weights import list_weights
    from lesion.zoo import load_segmenter

    shipped = {c.name for c in list_weights("segmentation")}
    nets = {n: load_segmenter(n, device="cpu") for n in NETS[domain] if n in shipped}
    methods = {"otsu": OtsuSegmenter(preset(domain)), **nets}
    unet_name = NETS[domain][0] if NETS[domain][0] in nets else None
    records = [r for r in ds.records if r.mask_path is not None]
    rng = np.random.default_rng(seed)
    sample = set(r.id for r in (records if len(records) <= medsam_max else
                                [records[i] for i in sorted(rng.choice(len(records), medsam_max, replace=False))]))
    per = {m: {} for m in methods}
    secs = {m: 0.0 for m in methods}
    keep_images, keep_truth, keep_masks, keep_ids, errors = [], [], {"otsu": [], "unet": []}, [], 0
    role_of = {"otsu": "otsu", **{n: ("unet", "linknet")[NETS[domain].index(n)] for n in nets}}
    keep_out: dict[str, list] = {role_of[m]: [] for m in methods}  # fusion members' outputs on the sample
    _log(f"{label}: {len(records)} images, methods {list(methods)}")
    for k, rec in enumerate(records):
        try:
            image = read_image(rec.image_path)
            truth = read_mask(rec.mask_path, shape=image.shape[:2])
        except Exception as e:  # noqa: BLE001  (a corrupt file is counted, not fatal)
            errors += 1
            _log(f"  skip {rec.id}: {e}")
            continue
        outs = {}
        for m, fn in methods.items():
            t0 = time.perf_counter()
            outs[m] = fn(image)
            secs[m] += time.perf_counter() - t0
            per[m][rec.id] = _scores(outs[m], truth)
        if rec.id in sample:
            keep_images.append(image)
            keep_truth.append(truth)
            keep_ids.append(rec.id)
            keep_masks["otsu"].append(np.asarray(outs["otsu"]).astype(bool))
            if unet_name:
                u = outs[unet_name]
                keep_masks["unet"].append(u > nets[unet_name].threshold if u.dtype != bool else u)
            for m, o in outs.items():  # probabilities as float16: PH2's 200 images x 5 members stay < 0.5 GB
                o = np.asarray(o)
                keep_out[role_of[m]].append(o if o.dtype == bool else o.astype(np.float16))
        if (k + 1) % 100 == 0:
            _log(f"  {label}: {k + 1}/{len(records)}")
    n_ok = len(per["otsu"])
    names = {"otsu": f"otsu preset('{domain}')"}
    rows = [_row(names.get(m, m), per[m], per["otsu"], 1000 * secs[m] / max(n_ok, 1)) for m in methods]

    # MedSAM on the sample: the image encoded once, decoded for each prompt.
    comps = 2 if domain == "cxr" else 1
    box_sets = {"otsu": [boxes_of(m, comps) or [full_box(m.shape)] for m in keep_masks["otsu"]],
                "full": [[full_box(im.shape)] for im in keep_images]}
    if unet_name:
        box_sets["unet box"] = [boxes_of(m, comps) or [full_box(m.shape)] for m in keep_masks["unet"]]
    _log(f"  {label}: MedSAM on {len(keep_images)} images, prompts {list(box_sets)}")
    t0 = time.perf_counter()
    probs = medsam_prompt_sets(keep_images, box_sets, batch_size=batch,
                               progress=lambda d, t: _log(f"  MedSAM {label}: {d}/{t}") if d % (4 * batch) == 0 or d == t else None)
    _log(f"  {label}: MedSAM done in {time.perf_counter() - t0:.0f} s")
    timers = {"otsu": MedSamSegmenter("otsu", domain=domain), "full": MedSamSegmenter("full", domain=domain)}
    if unet_name:
        timers["unet box"] = MedSamSegmenter("network", domain=domain, network=nets[unet_name], network_name="unet")
    ms = _medsam_ms(timers, keep_images[0]) if keep_images else {}
    sub = f"{len(keep_images)} of {n_ok}" + (f" (seeded sample, seed {seed})" if len(keep_images) < n_ok else "")
    for prompt in MEDSAM_PROMPTS:
        if prompt not in probs:
            continue
        scores = {i: _scores(p, t) for i, p, t in zip(keep_ids, probs[prompt], keep_truth)}
        rows.append(_row(f"medsam_lite[{prompt}]", scores, per["otsu"], ms.get(prompt, float("nan")), note=sub))
        if prompt in ("otsu", "unet box"):
            keep_out[f"medsam[{prompt}]"] = [p.astype(np.float16) for p in probs[prompt]]
    line = f"{label}: {n_ok} images ({how})" + (f", {errors} unreadable skipped" if errors else "")
    material = {"ids": keep_ids, "truth": keep_truth, "outputs": keep_out, "otsu": per["otsu"], "note": sub,
                "thresholds": {role_of[n]: float(getattr(s, "threshold", 0.5)) for n, s in nets.items()}}
    return rows, line, material


def fusion_scores(material: dict, roles: tuple[str, ...], rule: str) -> dict[str, dict]:
    """Per-image scores of the fusion of ``roles`` by ``rule`` on a data set's MedSAM sample."""
    from lesion.segment.fusion import fuse_probabilities

    outs, thr = material["outputs"], material["thresholds"]
    per = {}
    for i, (rid, truth) in enumerate(zip(material["ids"], material["truth"])):
        score = fuse_probabilities([outs[r][i] for r in roles], rule, [thr.get(r, 0.5) for r in roles], truth.shape)
        per[rid] = _scores(score, truth)
    return per


def choose_fusions(material: dict) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Per rule, the member roles (two or more) with the highest mean IoU on ``material`` (HAM10000 held-out only).

    Returns (rule -> roles, lines of a table: the five best subsets of each rule)."""
    from lesion.segment.fusion import FUSION_RULES

    roles = [r for r in ROLES if r in material["outputs"] and len(material["outputs"][r]) == len(material["ids"])]
    subsets = [c for k in range(2, len(roles) + 1) for c in itertools.combinations(roles, k)]
    chosen, lines = {}, [f"Fusion members chosen on HAM10000 held-out ({len(material['ids'])} images, {material['note']}); "
                         f"{len(subsets)} subsets of {', '.join(roles)} per rule, mean IoU:"]
    for rule in FUSION_RULES:
        scored = sorted(((float(np.mean([v["iou"] for v in fusion_scores(material, c, rule).values()])), c)
                         for c in subsets), key=lambda t: (-t[0], len(t[1])))
        chosen[rule] = scored[0][1]
        lines += [f"  {rule:<6} " + "; ".join(f"{'+'.join(c)} {m:.3f}" for m, c in scored[:5])]
    return chosen, lines


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci_lo']:.3f}, {s['ci_hi']:.3f}]" if s["n"] else "—"


def table(results: list[tuple[str, list[dict]]]) -> str:
    w = max([32] + [len(r["method"]) for _, rows in results for r in rows])
    head = (f"{'data set':<18} {'method':<{w}} {'n':>4}  {'IoU [95% CI]':<22} {'Dice [95% CI]':<22} "
            f"{'thr. Jaccard [95% CI]':<22} {'ms/img':>7} {'win vs Otsu':>11} {'ΔIoU':>7}")
    lines = [head, "-" * len(head)]
    for label, rows in results:
        for r in rows:
            win = f"{100 * r['win']:.0f} %" if "win" in r else "—"
            delta = f"{r['delta']:+.3f}" if "delta" in r else "—"
            ms = f"{r['ms']:>7.0f}" if np.isfinite(r["ms"]) else f"{'—':>7}"
            lines.append(f"{label:<18} {r['method']:<{w}} {r['n']:>4}  {_fmt(r['iou']):<22} {_fmt(r['dice']):<22} "
                         f"{_fmt(r['thresholded_jaccard']):<22} {ms} {win:>11} {delta:>7}")
    return "\n".join(lines)


def run(root: Path, medsam_max: int = 100, seed: int = 0, sets: tuple[str, ...] = SETS, batch: int = 4,
        threads: int = 1) -> str:
    import torch

    from lesion.segment.medsam import MEDSAM_CARD

    torch.set_num_threads(threads)
    out = [f"bench_segment  ({time.strftime('%Y-%m-%d %H:%M')}, CPU, torch threads = {torch.get_num_threads()}, "
           f"MedSAM on at most {medsam_max} images per data set)", ""]
    from lesion.segment.fusion import RECOMMENDED

    results, lines, materials = [], [], {}
    for label, domain, ds, how in _datasets(root, sets):
        rows, line, material = bench_set(label, domain, ds, how, medsam_max, seed, batch)
        results.append((label, rows))
        lines.append(line)
        materials[label] = material
    if not results:
        return "\n".join(out + [f"(no data set found under {root})"])
    # Fusion: members chosen on HAM10000 held-out only, then applied unchanged to every set (PH2 only reported).
    if "HAM10000 held-out" in materials:
        chosen, choice_lines = choose_fusions(materials["HAM10000 held-out"])
    else:
        chosen = {rule: tuple(roles) for rule, roles in RECOMMENDED["derm"]["members_by_rule"].items()}
        choice_lines = ["Fusion members: the recorded HAM10000 held-out choice (lesion.segment.fusion.RECOMMENDED)."]
    for label, rows in results:
        m = materials[label]
        for rule, roles in chosen.items():
            if all(r in m["outputs"] and len(m["outputs"][r]) == len(m["ids"]) for r in roles) and m["ids"]:
                rows.append(_row(f"fuse:{rule}({'+'.join(roles)})", fusion_scores(m, roles, rule), m["otsu"],
                                 float("nan"), note=m["note"]))
    out += [table(results), "", "Images:"] + [f"  {x}" for x in lines] + [""] + choice_lines
    out += ["", "Notes:",
            "  MedSAM rows score a sample when the set is larger than --medsam-max: "
            + "; ".join(f"{label}: {next((r['note'] for r in rows if r['note']), '-')}" for label, rows in results),
            "  win vs Otsu: share of the same images where the method's IoU beats Otsu's (ties half); ΔIoU: paired "
            "mean difference. unet box = the box of the shipped U-Net's mask (lungs: one box per lung).",
            "  ms/img: Otsu and networks = pass wall time / images (image read excluded); MedSAM = median of 3 "
            "single-image calls with its prompt (the unet box includes the U-Net).",
            "  MedSAM data caveat: " + " ".join(MEDSAM_CARD.data[0].licences[1:]) + " PH2: "
            + " ".join(MEDSAM_CARD.data[1].licences) + " Its training data include chest X-rays as well, so its "
            "lung figures may not be held out either."]
    # Bars of the issue (the shipped networks, fully automatic, nothing of PH2 used).
    bars = []
    for label, rows in results:
        by = {r["method"]: r for r in rows}
        if label == "PH2" and NETS["derm"][0] in by:
            u = by[NETS["derm"][0]]
            bars.append(f"[{'PASS' if u['iou']['mean'] >= PH2_IOU_BAR else 'FAIL'}] PH2 U-Net IoU "
                        f"{u['iou']['mean']:.3f} >= {PH2_IOU_BAR}")
        if label == "lungs held-out" and NETS["cxr"][0] in by:
            u = by[NETS["cxr"][0]]
            ok = u["iou"]["mean"] >= LUNG_IOU_BAR and u["dice"]["mean"] >= LUNG_DICE_BAR
            bars.append(f"[{'PASS' if ok else 'FAIL'}] lung U-Net held-out IoU {u['iou']['mean']:.3f} >= "
                        f"{LUNG_IOU_BAR} and Dice {u['dice']['mean']:.3f} >= {LUNG_DICE_BAR}")
        if label == "PH2":
            for r in rows:
                if r["method"].startswith("fuse:"):
                    iou, tj = r["iou"]["mean"], r["thresholded_jaccard"]["mean"]
                    ok = iou >= PH2_IOU_BAR and tj >= PH2_TJ_BAR
                    bars.append(f"[{'PASS' if ok else 'FAIL'}] PH2 {r['method']} IoU {iou:.3f} >= {PH2_IOU_BAR} "
                                f"({iou - PH2_IOU_BAR:+.3f}) and thresholded Jaccard {tj:.3f} >= {PH2_TJ_BAR} "
                                f"({tj - PH2_TJ_BAR:+.3f}); members chosen on HAM10000 held-out")
    if bars:
        out += ["", "Bars:"] + bars
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding PH2/, HAM10000/ and ChestXrayMasksAndLabels/")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    ap.add_argument("--medsam-max", type=int, default=100, help="MedSAM images per data set (seeded sample; default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the MedSAM sample")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated subset of {', '.join(SETS)}")
    ap.add_argument("--batch", type=int, default=4, help="MedSAM images per encoder forward")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the app uses)")
    args = ap.parse_args(argv)
    sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    bad = [s for s in sets if s not in SETS]
    if bad or args.medsam_max < 1:
        ap.error(f"--sets takes {', '.join(SETS)}; --medsam-max >= 1")
    report = run(data_root(args.data), args.medsam_max, args.seed, sets, args.batch, args.threads)
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
