"""Tune the derm Otsu preset on HAM10000 **training images only**; PH2 chooses nothing.

Which images: HAM10000 minus the shipped derm U-Net's held-out ids (``lesion.train.heldout.held_out`` with the card
of ``derm_unet_efficientnet_lite0``: ``.train``), a seeded sample of ``--n`` of them (default 400) at their native
200 x 150 size. Stage 1 is a full factorial over the numeric fields of :class:`lesion.segment.otsu.OtsuConfig` and the
channel (:data:`GRID`, 108 configurations); stage 2 changes the stage-1 winner one switch at a time (:data:`SWITCHES`:
vignette mode, hair removal, component selection, border clearing, hole filling, minimum area) and keeps a change
only if it raises the mean IoU. Choice: the highest mean per-image IoU over the sample (ties: the first in grid
order). ``work_size`` is not tuned (HAM's 200 x 150 images are below it). The tables and the choice are printed
before anything else is measured.

``--report`` then scores the old preset (:data:`OLD_DERM`) and the chosen one on the U-Net's HAM10000 held-out
images and on PH2, side by side. That is reporting only: it runs after the choice and feeds nothing back.

Run: ``OMP_NUM_THREADS=1 python bench/tune_otsu.py [--n 400] [--seed 0] [--report] [--out tune.txt]``
(about 4 min for the grid on one busy core).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from _common import data_root  # noqa: E402  (repository on sys.path, offline settings)

from lesion.segment.otsu import OtsuConfig  # noqa: E402

UNET = "derm_unet_efficientnet_lite0"
#: The derm preset before this tuning (tuned on HAM10000 *and* PH2): kept to report it beside the new one.
OLD_DERM = OtsuConfig(work_size=256, vignette="border_dark", vignette_level=40, hair_removal=False, channel="blue",
                      invert=True, blur_sigma=2.0, open_radius=3, close_radius=5, fill_holes=True, clear_border=False,
                      selection="central", min_area_frac=0.005)
#: The grid (field -> values), a full factorial: 3 x 3 x 3 x 2 x 2 = 108 configurations.
GRID: dict[str, tuple] = {
    "channel": ("blue", "grey", "min_rgb"),
    "blur_sigma": (1.0, 2.0, 3.0),
    "open_radius": (1, 3, 5),
    "close_radius": (5, 9),
    "vignette_level": (40, 70),
}
#: Stage 2: one field at a time from the stage-1 choice (field -> alternatives).
SWITCHES: dict[str, tuple] = {
    "vignette": ("off", "circle"),
    "hair_removal": (True,),
    "selection": ("largest", "all"),
    "clear_border": (True,),
    "fill_holes": (False,),
    "min_area_frac": (0.001, 0.02),
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _read(records) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from lesion.data.io import read_image, read_mask

    out = []
    for r in records:
        image = read_image(r.image_path)
        out.append((r.id, image, read_mask(r.mask_path, shape=image.shape[:2])))
    return out


def mean_iou(cfg: OtsuConfig, pairs) -> np.ndarray:
    """Per-image IoU of ``cfg`` over ``(id, image, truth)`` pairs at native size."""
    from lesion.metrics import seg_metrics
    from lesion.segment.otsu import otsu_segment

    return np.array([seg_metrics(otsu_segment(im, cfg).mask, t)["iou"] for _, im, t in pairs])


def configs() -> list[OtsuConfig]:
    keys = list(GRID)
    return [OLD_DERM.replace(**dict(zip(keys, vals))) for vals in itertools.product(*(GRID[k] for k in keys))]


def tune(root: Path, n: int, seed: int) -> tuple[OtsuConfig, str, dict]:
    """Grid search on ``n`` HAM10000 training images; returns (choice, table text, facts for the note)."""
    from lesion.data import load_dataset
    from lesion.metrics import summarize
    from lesion.train.heldout import held_out
    from lesion.weights import resolve_weights

    ham = load_dataset(root / "HAM10000")
    _, card = resolve_weights(UNET)
    split = held_out(card, ham)
    train = [r for r in split.train if r.mask_path is not None]
    held = {r.id for r in split.records}
    assert not held & {r.id for r in train}
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(train), min(n, len(train)), replace=False))
    pairs = _read([train[i] for i in pick])
    _log(f"tuning on {len(pairs)} of {len(train)} HAM10000 training images ({len(held)} held out by {UNET})")
    rows = []
    t0 = time.perf_counter()
    grid = configs()
    for k, cfg in enumerate(grid):
        ious = mean_iou(cfg, pairs)
        rows.append((float(ious.mean()), k, cfg))
        if (k + 1) % 12 == 0:
            _log(f"  {k + 1}/{len(grid)} configs, {time.perf_counter() - t0:.0f} s")
    best = max(rows, key=lambda r: (r[0], -r[1]))  # highest mean IoU, first in grid order on ties
    order = sorted(rows, key=lambda r: (-r[0], r[1]))
    old = next(r for r in rows if r[2] == OLD_DERM)
    ci = summarize(mean_iou(best[2], pairs))
    lines = [f"Otsu derm grid on HAM10000 training images: {len(pairs)} of {len(train)} (seeded sample, seed {seed}), "
             f"native 200x150; {len(grid)} configs in {time.perf_counter() - t0:.0f} s",
             f"grid: " + "; ".join(f"{k} {list(v)}" for k, v in GRID.items()),
             "",
             f"{'rank':>4}  {'mean IoU':>8}  " + "  ".join(f"{k:>14}" for k in GRID)]
    for rank, (score, _, cfg) in enumerate(order, start=1):
        if rank <= 15 or cfg == OLD_DERM:
            lines.append(f"{rank:>4}  {score:>8.4f}  " + "  ".join(f"{str(getattr(cfg, k)):>14}" for k in GRID)
                         + ("   <- old preset" if cfg == OLD_DERM else ""))
    lines += ["", f"stage 1 choice: " + ", ".join(f"{k}={getattr(best[2], k)!r}" for k in GRID)
              + f"  (mean IoU {best[0]:.4f} [{ci['ci_lo']:.4f}, {ci['ci_hi']:.4f}] vs old preset {old[0]:.4f} "
              f"on the same {len(pairs)} training images)", "",
              "stage 2: one switch at a time from the stage-1 choice"]
    choice, score = best[2], best[0]
    for field, values in SWITCHES.items():
        for v in values:
            cand = choice.replace(**{field: v})
            m = float(mean_iou(cand, pairs).mean())
            keep = m > score
            lines.append(f"  {field}={v!r:<8} mean IoU {m:.4f} ({m - score:+.4f}){'   <- kept' if keep else ''}")
            if keep:
                choice, score = cand, m
    ci = summarize(mean_iou(choice, pairs))
    changed = {f.name: getattr(choice, f.name) for f in fields(OtsuConfig) if getattr(choice, f.name) != getattr(OLD_DERM, f.name)}
    lines += ["", f"choice: {choice}", f"  changed from the old preset: {changed}",
              f"  mean IoU {score:.4f} [{ci['ci_lo']:.4f}, {ci['ci_hi']:.4f}] on the {len(pairs)} training images "
              f"(old preset {old[0]:.4f}); {time.perf_counter() - t0:.0f} s in all"]
    facts = {"n": len(pairs), "n_train": len(train), "n_held": len(held), "seed": seed, "iou": score,
             "old_iou": old[0]}
    return choice, "\n".join(lines), facts


def report(root: Path, cfgs: dict[str, OtsuConfig]) -> str:
    """Mean IoU / thresholded Jaccard [95% CI] of each config on HAM10000 held-out and PH2 (reporting only)."""
    from lesion.data import load_dataset
    from lesion.metrics import seg_metrics, summarize
    from lesion.segment.otsu import otsu_segment
    from lesion.train.heldout import held_out
    from lesion.weights import resolve_weights

    ham = load_dataset(root / "HAM10000")
    _, card = resolve_weights(UNET)
    sets = {"HAM10000 held-out": [r for r in held_out(card, ham).records if r.mask_path is not None]}
    if (root / "PH2").is_dir():
        sets["PH2 (external)"] = [r for r in load_dataset(root / "PH2").records if r.mask_path is not None]
    lines = [f"{'data set':<20} {'preset':<10} {'n':>4}  {'IoU [95% CI]':<22} {'Dice':>6}  {'thr. Jaccard [95% CI]':<22}"]
    for label, recs in sets.items():
        pairs = _read(recs)
        for name, cfg in cfgs.items():
            ms = [seg_metrics(otsu_segment(im, cfg).mask, t) for _, im, t in pairs]
            iou = summarize([m["iou"] for m in ms])
            tj = summarize([m["thresholded_jaccard"] for m in ms])
            dice = float(np.mean([m["dice"] for m in ms]))
            lines.append(f"{label:<20} {name:<10} {iou['n']:>4}  {iou['mean']:.3f} [{iou['ci_lo']:.3f}, {iou['ci_hi']:.3f}]"
                         f"   {dice:.3f}  {tj['mean']:.3f} [{tj['ci_lo']:.3f}, {tj['ci_hi']:.3f}]")
        _log(f"  reported {label}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder holding HAM10000/ (and PH2/ for --report)")
    ap.add_argument("--n", type=int, default=400, help="training images in the seeded sample (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", action="store_true",
                    help="after the choice, score the old and the chosen preset on HAM held-out and PH2 (reporting only)")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)
    root = data_root(args.data)
    if not (root / "HAM10000").is_dir():
        print(f"no HAM10000/ under {root}", file=sys.stderr)
        return 2
    choice, text, _ = tune(root, args.n, args.seed)
    print(text, flush=True)  # the choice is fixed here, before any held-out or PH2 image is read
    if args.report:
        from lesion.segment.otsu import preset

        shipped = preset("derm")
        extra = {"shipped": shipped} if shipped not in (OLD_DERM, choice) else {}
        rep = "Reporting only (after the choice):\n" + report(root, {"old": OLD_DERM, "chosen": choice} | extra)
        print("\n" + rep)
        text += "\n\n" + rep
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
