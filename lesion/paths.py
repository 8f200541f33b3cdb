"""Where lesion-lab keeps generated and cached files (never inside a user's data folder)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from lesion.errors import ConfigError, StorageError

#: Folder of the shipped checkpoints and model cards (``$LESION_WEIGHTS_DIR`` points the app and the CLI at
#: another folder of checkpoints, e.g. a lab's own models or a test's).
WEIGHTS_DIR = Path(os.environ.get("LESION_WEIGHTS_DIR") or Path(__file__).resolve().parent.parent / "weights")


def cache_dir() -> Path:
    """Root of caches (demo data, predictions, review tags): ``$LESION_CACHE`` or ``~/.cache/lesion-lab``.

    Created when missing, and checked once per process to be a writable folder.

    Raises:
        ConfigError: it is a file, or it cannot be created or written (one line naming ``LESION_CACHE``).
    """
    env = os.environ.get("LESION_CACHE")
    root = Path(env or Path.home() / ".cache" / "lesion-lab")
    where = f"LESION_CACHE={env}" if env else f"the cache folder {root}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if root not in _CHECKED_CACHES:  # the write test once per process and folder
            with tempfile.NamedTemporaryFile(dir=root, prefix=".lesion-write-test-"):
                pass
            _CHECKED_CACHES.add(root)
    except OSError as e:
        first = _nearest_existing(root)
        if first.exists() and not first.is_dir():
            raise ConfigError(f"{where}: {first} is a file, not a folder; point LESION_CACHE at a folder.") from None
        raise ConfigError(f"{where} cannot be written ({_reason(e)}); point LESION_CACHE at a writable "
                          "folder.") from None
    return root


_CHECKED_CACHES: set[Path] = set()


def user_models_dir() -> Path:
    """Where ``lesion import`` puts a user's models by default: ``$LESION_MODELS_DIR`` or ``~/lesion-models``
    (never lesion-lab's shipped ``weights/``); not created here."""
    return Path(os.environ.get("LESION_MODELS_DIR") or Path.home() / "lesion-models").expanduser()


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
    """The one atomic write of lesion-lab: a temporary sibling of ``target`` to write to (by any writer: bytes,
    ``df.to_csv``, ONNX, ...); when the block succeeds it is flushed to disk (``fsync``), made ``0o644`` and
    renamed onto ``target``; when the block fails it is removed and ``target`` is untouched. A kill at any moment
    leaves the old file or the new one, never half of one (same folder, so the rename is atomic and never
    crosses devices). The temporary name keeps ``target``'s suffix, for writers that choose a format by it."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as e:
        raise write_failure(e, target) or e from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except (OSError, RuntimeError) as e:  # a full disk or a size limit: one line, nothing left at ``target``
            failure = write_failure(e, target)
            if failure is None:
                raise
            raise failure from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: errno -> what a failed write tells the user (and what to do).
_WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full (ENOSPC); free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up (EDQUOT); free some space or write elsewhere",
    errno.EFBIG: "the file would exceed the file-size limit (EFBIG, e.g. ulimit -f); raise the limit or write "
                 "elsewhere",
    errno.EROFS: "the file system is read-only (EROFS); write elsewhere",
    errno.EACCES: "permission denied (EACCES); write into a folder you may write to",
    errno.EPERM: "operation not permitted (EPERM); write into a folder you may write to",
}
_WRITE_TEXTS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
                "Disk quota exceeded": errno.EDQUOT, "Read-only file system": errno.EROFS}


def _reason(e: OSError) -> str:
    return e.strerror or e.__class__.__name__


def write_failure(e: BaseException, target: str | Path) -> StorageError | None:
    """The one-line :class:`StorageError` of a write that failed for a reason of the machine (disk full, file-size
    limit, read-only or forbidden folder), or None for any other failure. Writers that wrap the ``OSError``
    (pyarrow, protobuf) are recognised by its text."""
    code = getattr(e, "errno", None)
    if code not in _WRITE_ERRNOS:
        code = next((c for text, c in _WRITE_TEXTS.items() if text in str(e)), None)
    if code is None:
        return None
    return StorageError(f"Cannot write {target}: {_WRITE_ERRNOS[code]}. Nothing was written there.")


def check_writable_folder(folder: str | Path, option: str = "--out", need_bytes: int = 0) -> None:
    """Before long work: ``folder`` (or, when it does not exist yet, the nearest folder above it) takes a new file
    and has ``need_bytes`` free. Nothing is left behind.

    Raises:
        ConfigError: not a folder, not writable, or too little free space (one line naming ``option``).
    """
    first = _nearest_existing(Path(folder))
    if not first.is_dir():
        raise ConfigError(f"{option}: {first} is a file, not a folder.")
    try:
        with tempfile.NamedTemporaryFile(dir=first, prefix=".lesion-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{option}: cannot write into {first} ({_reason(e)}).") from None
    if need_bytes > 0:
        free = shutil.disk_usage(first).free
        if free < need_bytes:
            raise ConfigError(f"{option}: {first} has {free / 1e6:.1f} MB free, this needs about "
                              f"{need_bytes / 1e6:.0f} MB; free some space or write elsewhere.")


def write_atomic(target: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (``str`` as UTF-8) to ``target`` through :func:`atomic_target`; returns ``target``."""
    with atomic_target(target) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(target)


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_file_target(path: str | Path, option: str = "--out") -> None:
    """The one output-path rule for a file: ``path`` can become a file: it is not a folder, and no file stands
    where one of its folders goes. Nothing is created.

    Raises:
        ConfigError: ``"<option>: <path> is a folder, not a file name."`` or
            ``"<option>: <file> is a file, so <path> cannot be written inside it."``.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option}: {p} is a folder, not a file name.")
    parent = _nearest_existing(p.parent)
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option}: {parent} is a file, so {p} cannot be written inside it.")


def check_folder_target(path: str | Path, option: str = "--out") -> None:
    """The same rule for a folder: ``path`` can be (or become) a folder: it is not a file, nor inside one.
    Nothing is created.

    Raises:
        ConfigError: ``"<option>: <file> is a file, not a folder."``.
    """
    first = _nearest_existing(Path(path))
    if first.exists() and not first.is_dir():
        raise ConfigError(f"{option}: {first} is a file, not a folder.")


def check_out_file(out: str | Path, overwrite: bool, option: str = "--out", exists_error: type = ConfigError) -> None:
    """``out`` can be written as a file, checked before any work: :func:`check_file_target`, then new unless
    ``overwrite``, and its folder writable (the folder is created).

    Raises:
        ConfigError (``exists_error`` for an existing file): naming the path.
    """
    out = Path(out)
    check_file_target(out, option)
    if out.exists() and not overwrite:
        raise exists_error(f"{out} already exists; pass --overwrite to replace it, or choose another {option}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".lesion-write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{option}: cannot write into {out.parent} ({e.strerror or e.__class__.__name__}).") from None

