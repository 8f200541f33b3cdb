"""A tiny synthetic stand-in for the real data, in the real on-disk layouts (for the pack's test; no real data).

    .venv/bin/python bench/gpu/synth.py ROOT [--lesions 24] [--xrays 12]

writes ``ROOT/HAM10000/`` (``HAM10000_metadata.csv`` with lesion_id, image_id, dx, dx_type, age, sex,
localization; ``HAM10000_images_part_1/ISIC_x.jpg`` 200 x 150; ``HAM10000_segmentations_lesion_tschandl/
ISIC_x_segmentation.png`` 0/255) and ``ROOT/ChestXrayMasksAndLabels/`` (``labels.csv`` with image, mask, source,
tuberculosis; ``Lung Segmentation/CXR_png/`` grey PNG, ``masks/``: Montgomery masks named as their image, Shenzhen
ones with ``_mask``), the layouts ``lesion.data`` reads for the real sets. Drawn from a seed: ellipses on noise,
melanomas darker. Nothing here is a real image.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

DX = ("mel", "nv", "bkl", "bcc", "mel", "nv")
SITES = ("back", "trunk", "face", "lower extremity", "upper extremity", "abdomen")


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return u * u + v * v <= 1.0


def make_ham(root: Path, lesions: int = 24, seed: int = 0) -> Path:
    """A HAM10000-layout folder of about ``1.5 x lesions`` images (one or two per lesion)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ham = root / "HAM10000"
    img_dir, mask_dir = ham / "HAM10000_images_part_1", ham / "HAM10000_segmentations_lesion_tschandl"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows, k = [], 24306
    for i in range(lesions):
        dx = DX[i % len(DX)]
        age, sex, site = float(rng.integers(20, 85) // 5 * 5), ("male", "female")[i % 2], SITES[i % len(SITES)]
        for _ in range(1 + (i % 2)):
            h, w = 150, 200
            mask = _ellipse(h, w, h / 2 + rng.uniform(-15, 15), w / 2 + rng.uniform(-20, 20), rng.uniform(25, 45),
                            rng.uniform(30, 60), rng.uniform(0, np.pi))
            skin = np.array([205, 160, 140], np.float32) + rng.normal(0, 6, 3)
            img = np.clip(skin + rng.normal(0, 8, (h, w, 3)), 0, 255)
            tone = np.array([70, 40, 30] if dx == "mel" else [140, 95, 80], np.float32)
            img[mask] = np.clip(tone + rng.normal(0, 12, (int(mask.sum()), 3)), 0, 255)
            image_id = f"ISIC_{k:07d}"
            Image.fromarray(img.astype(np.uint8)).save(img_dir / f"{image_id}.jpg", quality=90)
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{image_id}_segmentation.png")
            rows.append({"lesion_id": f"HAM_{i:07d}", "image_id": image_id, "dx": dx, "dx_type": "histo",
                         "age": age, "sex": sex, "localization": site})
            k += 1
    with open(ham / "HAM10000_metadata.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return ham


def make_cxr(root: Path, xrays: int = 12, seed: int = 0, side: int = 256) -> Path:
    """A "Chest X-ray Masks and Labels" folder of ``xrays`` grey X-rays (half Montgomery, half Shenzhen names)."""
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    base = root / "ChestXrayMasksAndLabels"
    img_dir, mask_dir = base / "Lung Segmentation" / "CXR_png", base / "Lung Segmentation" / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(xrays):
        tb = i % 2
        mont = i < xrays // 2
        stem = f"{'MCUCXR' if mont else 'CHNCXR'}_{i + 1:04d}_{tb}"
        s = side
        lungs = _ellipse(s, s, s * 0.5, s * 0.3, s * 0.32, s * 0.14, 0.0) \
            | _ellipse(s, s, s * 0.5, s * 0.7, s * 0.32, s * 0.14, 0.0)
        img = np.clip(170 + rng.normal(0, 10, (s, s)), 0, 255)
        img[lungs] = np.clip(60 + 30 * tb + rng.normal(0, 10, int(lungs.sum())), 0, 255)
        Image.fromarray(img.astype(np.uint8), mode="L").save(img_dir / f"{stem}.png")
        mask_name = f"{stem}.png" if mont else f"{stem}_mask.png"
        Image.fromarray(lungs.astype(np.uint8) * 255, mode="L").save(mask_dir / mask_name)
        rows.append({"image": f"{stem}.png", "mask": mask_name, "source": "Montgomery" if mont else "Shenzhen",
                     "tuberculosis": tb})
    with open(base / "labels.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("--lesions", type=int, default=24)
    p.add_argument("--xrays", type=int, default=12)
    a = p.parse_args(argv)
    root = Path(a.root)
    make_ham(root, a.lesions)
    make_cxr(root, a.xrays)
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
