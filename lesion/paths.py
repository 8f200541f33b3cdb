"""Where lesion-lab keeps generated and cached files (never inside a user's data folder)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from lesion.errors import ConfigError

#: Folder of the shipped checkpoints and model cards (``$LESION_WEIGHTS_DIR`` points the app and the CLI at
#: another folder of checkpoints, e.g. a lab's own models or a test's).
WEIGHTS_DIR = Path(os.environ.get("LESION_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


def cache_dir() -> Path:
    """Root of caches (demo data, predictions, review tags): ``$LESION_CACHE`` or ``~/.cache/lesion-lab``."""
    root = Path(os.environ.get("LESION_CACHE") or Path.home() / ".cache" / "lesion-lab")
    root.mkdir(parents=True, exist_ok=True)
    return root


def dataset_cache_dir(fingerprint: str) -> Path:
    """Cache folder for one data set (predictions, tags), keyed by :meth:`Dataset.fingerprint`."""
    d = cache_dir() / "datasets" / fingerprint
    d.mkdir(parents=True, exist_ok=True)
    return d


def shared_data_dir() -> Path:
    """Where the real data sets (HAM10000, PH2, chest X-rays) lie for tests and benchmarks:
    ``$LESION_SHARED_DATA`` or ``<checkout>/../shared/data`` (it may not exist: a fresh clone has no real data)."""
    env = os.environ.get("LESION_SHARED_DATA")
    return Path(env) if env else (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (checkpoint identity, duplicate images)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_target(target: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``target`` to write to; renamed onto ``target`` when the block succeeds, removed
    when it fails. A kill at any moment leaves the old file or the new one, never half of one (same folder, so
    the rename is atomic and never crosses devices)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_out_file(out: Path, overwrite: bool, option: str = "--out", exists_error: type = ConfigError) -> None:
    """``out`` can be written as a file, checked before any work: not a folder, not under a file, new unless
    ``overwrite``, and its folder writable.

    Raises:
        ConfigError (``exists_error`` for an existing file): naming the path.
    """
    if out.is_dir():
        raise ConfigError(f"{option}: {out} is a folder, not a file name.")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option}: {parent} is a file, so {out} cannot be written inside it.")
    if out.exists() and not overwrite:
        raise exists_error(f"{out} already exists; pass --overwrite to replace it, or choose another {option}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".lesion-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{option}: cannot write into {out.parent} ({e.strerror or e.__class__.__name__}).") from None

