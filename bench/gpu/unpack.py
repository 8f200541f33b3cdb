"""Unpack what a GPU run returned: every ``models-N.tar`` of OUT into one folder of ``NAME.safetensors`` + ``NAME.json``.

    .venv/bin/python bench/gpu/unpack.py OUT FOLDER [--force]

Then each model loads by path, with its card: ``lesion.zoo.load_model("FOLDER/NAME")`` (or point
``$LESION_WEIGHTS_DIR`` at FOLDER and use bare names). Only plain ``.safetensors`` / ``.json`` members with plain
names are taken; an existing file is kept unless ``--force``. ``results.json`` and ``run.log`` are copied along.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tarfile
from pathlib import Path

NAME_OK = re.compile(r"^[A-Za-z0-9._-]+\.(safetensors|json)$")


def unpack(out: str | Path, dest: str | Path, force: bool = False) -> list[str]:
    """Extract the model pairs of every ``models-*.tar`` in ``out`` into ``dest``; returns the model names.

    Raises:
        SystemExit: a member that is not a plain file with a plain name, a file that exists (without ``force``),
            a weights file without its card or the other way round.
    """
    out, dest = Path(out), Path(dest)
    tars = sorted(out.glob("models-*.tar"))
    if not tars:
        raise SystemExit(f"unpack: no models-*.tar in {out}")
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for tar_path in tars:
        with tarfile.open(tar_path) as t:
            for m in t.getmembers():
                if not m.isfile() or "/" in m.name or not NAME_OK.match(m.name):
                    raise SystemExit(f"unpack: {tar_path.name} holds {m.name!r}, not a plain model file")
                target = dest / m.name
                if target.exists() and not force:
                    raise SystemExit(f"unpack: {target} exists (pass --force to replace it)")
                src = t.extractfile(m)
                tmp = target.with_name(f".{m.name}.part")
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
                tmp.replace(target)
                if m.name.endswith(".safetensors"):
                    names.append(m.name[: -len(".safetensors")])
    for name in names:
        if not (dest / f"{name}.json").is_file():
            raise SystemExit(f"unpack: {name}.safetensors came without its card {name}.json")
    for extra in ("results.json", "run.log"):
        if (out / extra).is_file():
            shutil.copyfile(out / extra, dest / extra)
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder the run's files came back to")
    p.add_argument("dest", help="where the models go")
    p.add_argument("--force", action="store_true", help="replace existing files")
    a = p.parse_args(argv)
    for name in unpack(a.out, a.dest, a.force):
        print(Path(a.dest) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
