"""Benchmark: the derm Otsu preset over the 200 demo dermoscopy images (256 x 256). Target: <= 10 s in total.

Run: ``python bench/bench_otsu.py [--n 200] [--domain derm]``. Prints a table (n, total s, ms/image, mean IoU).
Reading files is not timed (the pages read once and cache); only segmentation is.
If the demo generator is not available, 256-px random-blob images are generated inline (and the table says so).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 10.0


def _demo_pairs(domain: str, n: int) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    from lesion.data.demo import demo_root
    from lesion.data.io import read_image, read_mask

    root = demo_root(domain)
    images = sorted((root / "images").iterdir())[:n]
    masks = {p.stem.removesuffix("_mask").removesuffix("_segmentation"): p for p in (root / "masks").iterdir()}
    pairs = []
    for p in images:
        img = read_image(p)
        pairs.append((img, read_mask(masks[p.stem], img.shape[:2])))
    return f"demo {domain} ({root})", pairs


def _blob_pairs(n: int, size: int = 256) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    import cv2

    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(n):
        mask = np.zeros((size, size), np.uint8)
        c = rng.integers(80, 176, 2)
        axes = rng.integers(25, 70, 2)
        cv2.ellipse(mask, (int(c[0]), int(c[1])), (int(axes[0]), int(axes[1])), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img = np.empty((size, size, 3), np.float32)
        img[:] = (205, 160, 140)
        img[mask > 0] = (120, 75, 55)
        img += rng.normal(0, 8, img.shape)
        pairs.append((np.clip(img, 0, 255).astype(np.uint8), mask > 0))
    return "inline random blobs (demo generator unavailable)", pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--domain", default="derm", choices=("derm", "cxr"))
    args = ap.parse_args(argv)

    import cv2

    from lesion.metrics import seg_metrics
    from lesion.segment.otsu import otsu_segment, preset

    try:
        source, pairs = _demo_pairs(args.domain, args.n)
    except ImportError:
        source, pairs = _blob_pairs(args.n)
    cfg = preset(args.domain)
    otsu_segment(pairs[0][0], cfg)  # warm-up: lazy imports (skimage, scipy) are not part of the figure
    t0 = time.perf_counter()
    masks = [otsu_segment(img, cfg).mask for img, _ in pairs]
    total = time.perf_counter() - t0
    iou = float(np.mean([seg_metrics(m, t)["iou"] for m, (_, t) in zip(masks, pairs)]))

    n = len(pairs)
    print(f"Otsu preset '{args.domain}' on {source}; OpenCV threads: {cv2.getNumThreads()}")
    print(f"| {'n':>4} | {'total s':>8} | {'ms/image':>8} | {'mean IoU':>8} |")
    print(f"| {'-' * 4} | {'-' * 8} | {'-' * 8} | {'-' * 8} |")
    print(f"| {n:>4} | {total:>8.2f} | {1000 * total / n:>8.1f} | {iou:>8.3f} |")
    ok = total <= TARGET_S * n / 200
    print(f"target: <= {TARGET_S:.0f} s for 200 images -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
