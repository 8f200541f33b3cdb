"""The built-in synthetic demo data sets: dermoscopy lesions and chest X-rays with exact masks.

The app opens on these when no real data is configured. They are generated from a seed in a few seconds,
written once in the "plain" layout (``images/``, ``masks/``, ``labels.csv``, ``dataset.json``) under
``cache_dir()/demo-v1/<domain>`` and read back by :func:`lesion.data.load_dataset` like any user folder.

What the demo is built to show:

* **Dermoscopy** (200 images, 256×256 RGB): lesion appearance follows the ABCD rule by diagnosis (benign
  ``nv``/``bkl``: small, symmetric, smooth, 1–2 browns; malignant ``mel``/``bcc``: large, asymmetric,
  notched, blue-grey/black/red). Artefacts that make global thresholding fail (hairs, dermatoscope vignette,
  ruler ticks, purple pen, uneven light, low-contrast lesions) occur at random and are recorded per image
  as ``art_*`` columns. Metadata mimics SIIM-ISIC: ~60 patients with several lesions, 1–2 views per lesion,
  malignant cases older and more often male. The mask is the drawn lesion region, exact by construction.
* **Chest X-ray** (60 images, 256×256, single-channel 8-bit PNG): two lungs, heart, mediastinum, ribs,
  clavicles, diaphragm; NIH-style findings (Cardiomegaly, Effusion, Nodule, Pneumothorax, Infiltration),
  ~40 % "No Finding". The mask is the *aerated lung*: pleural fluid and pneumothorax air are outside it,
  nodules and infiltrates inside (see :func:`lesion.data._draw.render_cxr`).

Splits (train/val/test ≈ 60/20/20) are by patient, so no patient is in two splits.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Iterator, Literal

import numpy as np

from lesion.cliutil import OneLineParser
from lesion.data import _draw
from lesion.data.layouts import load_dataset
from lesion.errors import ConfigError, unknown_option
from lesion.paths import cache_dir as default_cache, check_folder_target

Domain = Literal["derm", "cxr"]

#: Bump when the pictures or tables change: the cache folder is named after it, so old caches are ignored.
VERSION = "demo-v1"
#: Default image counts per domain.
DEFAULT_N: dict[str, int] = {"derm": 200, "cxr": 60}
DATASET_NAMES: dict[str, str] = {"derm": "Demo dermoscopy (synthetic)", "cxr": "Demo chest X-ray (synthetic)"}
#: Artefact columns of the derm labels.csv, in order.
DERM_ARTEFACTS = ("hair", "vignette", "ruler", "pen", "uneven_light", "low_contrast")
#: Per-view probability of each artefact (low_contrast is a property of the lesion, shared by its views).
ARTEFACT_P = {"hair": 0.35, "vignette": 0.25, "ruler": 0.12, "pen": 0.12, "uneven_light": 0.3, "low_contrast": 0.15}
#: SIIM-ISIC anatomical sites and their frequencies (None = missing).
SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital", None)
SITE_P = (0.42, 0.2, 0.15, 0.11, 0.03, 0.02, 0.07)
CXR_FINDINGS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax", "Infiltration")
#: Probability of each finding in an abnormal image (at least one is drawn).
CXR_FINDING_P = (0.3, 0.35, 0.25, 0.2, 0.4)
_MARKER = ".complete.json"
# Sub-stream ids so that tables and pixels of both domains never share random numbers.
_DERM, _CXR = 1, 2
_META, _LESION, _VIEW = 0, 1, 2

Progress = Callable[[int, int], None]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _split_patients(rng: np.random.Generator, patients: list[str]) -> dict[str, str]:
    """Assign whole patients to train/val/test, ≈60/20/20 by patient count."""
    order = rng.permutation(len(patients))
    n_val = max(1, round(0.2 * len(patients))) if len(patients) >= 3 else 0
    n_test = n_val
    out = {}
    for rank, i in enumerate(order):
        out[patients[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _age(rng: np.random.Generator, mean: float, sd: float) -> float:
    # Rounded to 5 years like SIIM-ISIC "age_approx" / HAM10000 "age".
    return float(np.clip(round(rng.normal(mean, sd) / 5) * 5, 5, 90))


# ----------------------------------------------------------------------------------------- dermoscopy


def _derm_table(n: int, seed: int) -> list[dict[str, Any]]:
    """Metadata of ``n`` derm images, with private keys ``_lesion`` (index) and ``_view`` (0 or 1)."""
    rng = _rng(seed, _DERM, _META)
    n_pat = max(1, round(n * 0.3))
    patients = []
    # Stratified draws (ages on normal quantiles, sexes exactly half/half, both shuffled) so that a 60-patient
    # set shows the intended age and sex effects instead of the luck of one seed.

    ages = [NormalDist(50, 17).inv_cdf((i + 0.5) / n_pat) for i in rng.permutation(n_pat)]
    sexes = rng.permutation(n_pat) < n_pat // 2
    for p in range(n_pat):
        true_age = float(np.clip(round(ages[p] / 5) * 5, 5, 90))
        male = bool(sexes[p])
        patients.append({
            "patient_id": f"P{p:03d}", "true_age": true_age, "male": male,
            "age": None if rng.random() < 0.03 else true_age,
            "sex": None if rng.random() < 0.02 else ("male" if male else "female"),
        })
    rows: list[dict[str, Any]] = []
    lesion = 0
    while len(rows) < n:
        pat = patients[lesion] if lesion < n_pat else patients[int(rng.integers(n_pat))]
        # Risk rises with age and male sex (as in ISIC): malignant mean age ≈ 58-62 vs ≈ 45, ≈ 60 % male.
        p_mal = _sigmoid(-1.6 + 0.09 * (pat["true_age"] - 50) + 0.8 * (1 if pat["male"] else -1))
        if rng.random() < p_mal:
            dx = "mel" if rng.random() < 0.6 else "bcc"
        else:
            dx = "nv" if rng.random() < 0.7 else "bkl"
        site_p = np.array(SITE_P)
        if dx == "bcc":  # sun-exposed skin
            site_p = site_p + np.array([0, 0, 0, 0.45, 0, 0, 0])
        site = SITES[int(rng.choice(len(SITES), p=site_p / site_p.sum()))]
        low_contrast = bool(rng.random() < (ARTEFACT_P["low_contrast"] * (0.5 if dx in ("mel", "bcc") else 1.2)))
        n_views = 2 if rng.random() < 0.3 else 1
        for view in range(n_views):
            if len(rows) >= n:
                break
            flags = {a: bool(rng.random() < ARTEFACT_P[a]) for a in DERM_ARTEFACTS if a != "low_contrast"}
            flags["low_contrast"] = low_contrast
            rows.append({
                "image": f"derm_{len(rows):04d}.png", "diagnosis": dx, "target": int(dx in ("mel", "bcc")),
                "group": pat["patient_id"], "patient_id": pat["patient_id"], "lesion_id": f"L{lesion:04d}",
                "age": pat["age"], "sex": pat["sex"], "site": site, "split": "",
                **{f"art_{a}": flags[a] for a in DERM_ARTEFACTS},
                "_lesion": lesion, "_view": view,
            })
        lesion += 1
    split = _split_patients(rng, [p["patient_id"] for p in patients])
    for r in rows:
        r["split"] = split[r["patient_id"]]
    return rows


def generate_derm(n: int = 200, seed: int = 0, size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Generate synthetic dermoscopy images without touching the disk.

    Args:
        n: number of images.
        seed: random seed; the same seed gives the same pixels and table.
        size: side of the square images in pixels.

    Yields:
        (image uint8 [size, size, 3] RGB, mask bool [size, size], row) where row holds the labels.csv
        columns: image, diagnosis, target, group, patient_id, lesion_id, age, sex, site, split, art_*.
    """

    current: tuple[int, Any] = (-1, None)
    for row in _derm_table(n, seed):
        li, view = row.pop("_lesion"), row.pop("_view")
        lrng = _rng(seed, _DERM, _LESION, li)
        if current[0] != li:
            current = (li, _draw.make_derm_lesion(lrng, row["diagnosis"], size, row["art_low_contrast"]))
        lesion = current[1]
        # Placement of the first view comes from the lesion's stream so that the second view is a small
        # rotation/shift of the same picture (a re-take of the same lesion).
        prng = _rng(seed, _DERM, _LESION + 10, li)
        cx, cy = size / 2 + np.clip(prng.normal(0, 0.06 * size, 2), -0.12 * size, 0.12 * size)
        angle = prng.uniform(0, 2 * np.pi)
        vrng = _rng(seed, _DERM, _VIEW, li, view)
        if view:
            cx, cy = cx + vrng.uniform(-10, 10), cy + vrng.uniform(-10, 10)
            angle += np.deg2rad(vrng.uniform(-15, 15))
        flags = {a: row[f"art_{a}"] for a in DERM_ARTEFACTS}
        img, mask = _draw.render_derm_view(lesion, vrng, size, (cx, cy), angle, flags)
        yield img, mask, row


# ---------------------------------------------------------------------------------------- chest X-ray


def _cxr_table(n: int, seed: int) -> list[dict[str, Any]]:
    rng = _rng(seed, _CXR, _META)
    rows: list[dict[str, Any]] = []
    p = 0
    while len(rows) < n:
        pid = f"C{p:03d}"
        age = _age(rng, 52, 18)
        sex = "male" if rng.random() < 0.55 else "female"
        for _ in range(2 if rng.random() < 0.3 else 1):  # some patients have a follow-up film
            if len(rows) >= n:
                break
            found: list[str] = []
            if rng.random() < _sigmoid(0.4 + 0.03 * (age - 52)):  # ≈ 60 % abnormal, more when older
                while not found:
                    found = [f for f, q in zip(CXR_FINDINGS, CXR_FINDING_P) if rng.random() < q]
            rows.append({
                "image": f"cxr_{len(rows):04d}.png", "findings": "|".join(found), "target": int(bool(found)),
                "group": pid, "patient_id": pid, "age": age, "sex": sex, "view": "PA", "split": "",
            })
        p += 1
    split = _split_patients(rng, sorted({r["patient_id"] for r in rows}))
    for r in rows:
        r["split"] = split[r["patient_id"]]
    return rows


def generate_cxr(n: int = 60, seed: int = 0, size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Generate synthetic PA chest radiographs without touching the disk.

    Yields:
        (image uint8 [size, size] grey, mask bool [size, size] of both aerated lungs, row) where row holds
        the labels.csv columns: image, findings ('|'-joined, '' = No Finding), target, group, patient_id,
        age, sex, view, split.
    """

    for i, row in enumerate(_cxr_table(n, seed)):
        found = set(row["findings"].split("|")) - {""}
        f = _draw.CxrFindings(**{k.lower(): (k in found) for k in CXR_FINDINGS})
        img, mask = _draw.render_cxr(_rng(seed, _CXR, _VIEW, i), size, f)
        yield img, mask, row


GENERATORS: dict[str, Callable[..., Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]]] = {
    "derm": generate_derm,
    "cxr": generate_cxr,
}


# ---------------------------------------------------------------------------------------------- cache


def _check_domain(domain: str) -> None:
    if domain not in GENERATORS:
        raise unknown_option("demo domain", domain, list(GENERATORS))


def _folder_name(domain: str, seed: int, n: int) -> str:
    return domain if (seed == 0 and n == DEFAULT_N[domain]) else f"{domain}-seed{seed}-n{n}"


def is_complete(root: Path, domain: str, seed: int, n: int) -> bool:
    """True when ``root`` holds a finished demo set for these parameters (marker, table and all files)."""
    try:
        info = json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if info != {"version": VERSION, "domain": domain, "seed": seed, "n": n}:
        return False
    if not (root / "labels.csv").is_file() or not (root / "dataset.json").is_file():
        return False
    return all(len(list((root / d).glob("*.png"))) == n for d in ("images", "masks"))


def _write(folder: Path, domain: str, seed: int, n: int, size: int, progress: Progress | None) -> None:
    import cv2

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = []
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast; the demo is ~15 MB either way
    for i, (img, mask, row) in enumerate(GENERATORS[domain](n=n, seed=seed, size=size)):
        out = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / "images" / row["image"]), out, png):
            raise OSError(f"cannot write {folder / 'images' / row['image']}")
        cv2.imwrite(str(folder / "masks" / row["image"]), mask.astype(np.uint8) * 255, png)
        rows.append(row)
        if progress:
            progress(i + 1, n)
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else int(v) if isinstance(v, (bool, float)) else v) for k, v in r.items()})
    meta = {"name": DATASET_NAMES[domain], "domain": domain, "synthetic": True, "seed": seed, "version": VERSION}
    if domain == "cxr":
        meta["mask"] = "aerated lung parenchyma (pleural fluid and pneumothorax air excluded)"
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    # Written last: its presence means every file above is complete.
    (folder / _MARKER).write_text(json.dumps({"version": VERSION, "domain": domain, "seed": seed, "n": n}))


def ensure_demo(root: Path, domain: str, seed: int = 0, n: int | None = None, size: int = 256,
                force: bool = False, progress: Progress | None = None) -> Path:
    """Generate the demo set into ``root`` unless a complete one is already there.

    The set is written to a temporary sibling folder and renamed into place, so an interrupted run never
    leaves a half-written folder that looks finished; an incomplete folder is replaced.

    Returns:
        ``root``.
    """
    _check_domain(domain)
    n = DEFAULT_N[domain] if n is None else int(n)
    root = Path(root)
    if not force and is_complete(root, domain, seed, n):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-tmp-", dir=root.parent))
    try:
        _write(tmp / "data", domain, seed, n, size, progress)
        if root.exists():
            # Move the stale folder aside first: a rename onto a non-empty folder fails on every OS.
            shutil.move(str(root), str(tmp / "old"))
        try:
            os.replace(tmp / "data", root)
        except OSError:
            if not is_complete(root, domain, seed, n):  # another process won the race with a good set: keep it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def demo_root(domain: Domain, cache_dir: Path | None = None, seed: int = 0, n: int | None = None,
              progress: Progress | None = None) -> Path:
    """Folder of the demo data set, generated on first use.

    Args:
        domain: ``"derm"`` or ``"cxr"``.
        cache_dir: cache root; defaults to :func:`lesion.paths.cache_dir`.
        seed: random seed (0 = the shipped demo).
        n: number of images (default 200 derm, 60 cxr).
        progress: optional ``progress(done, total)`` callback while generating.

    Returns:
        ``<cache_dir>/demo-v1/<domain>`` (other seeds or sizes get ``<domain>-seed<S>-n<N>``).
    """
    _check_domain(domain)
    if cache_dir is None:
        cache_dir = default_cache()
    n = DEFAULT_N[domain] if n is None else int(n)
    root = Path(cache_dir) / VERSION / _folder_name(domain, seed, n)
    return ensure_demo(root, domain, seed=seed, n=n, progress=progress)


def load_demo(domain: Domain, cache_dir: Path | None = None, seed: int = 0, n: int | None = None):
    """The demo data set as a :class:`lesion.data.records.Dataset` (generated on first use)."""

    return load_dataset(demo_root(domain, cache_dir=cache_dir, seed=seed, n=n))


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``lesion demo data [--domain derm|cxr|all] [--out DIR] [--seed N] [--n N] [--force]``."""
    parser = OneLineParser(prog="lesion demo data", description="Generate the synthetic demo data sets.")
    parser.add_argument("--domain", default="all", choices=["derm", "cxr", "all"])
    parser.add_argument("--out", type=Path, default=None,
                        help="folder that receives <domain>/ sub-folders (default: the cache, <cache>/demo-v1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=None, help="images per domain (default 200 derm, 60 cxr)")
    parser.add_argument("--force", action="store_true", help="regenerate even when a complete set exists")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}.")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}.")
    if args.out is not None:
        check_folder_target(args.out, "--out")
        for domain in (["derm", "cxr"] if args.domain == "all" else [args.domain]):
            root = args.out / domain
            # --force (or an incomplete set) replaces the folder: only ever one this command wrote
            if root.exists() and not (root / _MARKER).is_file():
                raise ConfigError(f"--out: {root} exists and is not a demo set made by `lesion demo data`; "
                                  "it is never replaced. Choose another --out.")
    from tqdm import tqdm

    for domain in (["derm", "cxr"] if args.domain == "all" else [args.domain]):
        n = DEFAULT_N[domain] if args.n is None else args.n
        if args.out is None:
            base = default_cache() / VERSION
        else:
            base = args.out
        root = base / (domain if args.out is not None else _folder_name(domain, args.seed, n))
        t0 = time.perf_counter()
        with tqdm(total=n, desc=f"demo {domain}", unit="img", leave=False) as bar:
            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)

            existed = not args.force and is_complete(root, domain, args.seed, n)
            ensure_demo(root, domain, seed=args.seed, n=n, force=args.force, progress=progress)
        what = "already there" if existed else f"generated in {time.perf_counter() - t0:.1f} s"
        print(f"{DATASET_NAMES[domain]}: {n} images at {root} ({what})")
    return 0
