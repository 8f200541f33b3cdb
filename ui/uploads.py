"""Per-session storage of uploaded files (images on the Upload page, checkpoints on the Segmentation page).

Each browser session gets its own folder under lesion-lab's cache (``<cache>/uploads/<session id>``), never a
shared or relative folder. The folder is created again whenever it is missing (a cleaner may empty the cache
or the temp folder while the app runs), a new upload replaces the previous one, and the folder is deleted when
the session ends: Streamlit drops a closed session's state, and a finaliser on an object kept in that state
removes the folder (best effort: folders of sessions that died with the server are swept after a day).
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import weakref
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lesion.paths import cache_dir

#: Session folders untouched for longer than this are removed when a new session starts (seconds).
STALE_AFTER_S = 24 * 3600
_GUARD_KEY = "_upload_dir_guard"


class _FolderGuard:
    """Lives in a session's state; when Streamlit drops the session, the finaliser deletes its folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(folder), True)


def uploads_root() -> Path:
    return cache_dir() / "uploads"


def _session_id() -> str:
    try:
        ctx = get_script_run_ctx()
        if ctx is not None and ctx.session_id:
            return str(ctx.session_id)
    except Exception:  # not under a Streamlit runtime (bare mode)
        pass
    return st.session_state.setdefault("_upload_session_id", uuid.uuid4().hex)


def sweep_stale(root: Path | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete session folders not modified for ``older_than_s`` seconds; returns those removed."""
    root = root or uploads_root()
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for d in root.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        except OSError:
            pass
    return removed


def session_dir() -> Path:
    """This session's upload folder, created (again) if missing; registers its deletion at session end."""
    folder = uploads_root() / _session_id()
    guard = st.session_state.get(_GUARD_KEY)
    if guard is None or Path(guard.folder) != folder:
        sweep_stale()
        st.session_state[_GUARD_KEY] = _FolderGuard(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # libraries write temporary files too: make sure the system temp folder exists as well
    Path(tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
    return folder


def save_upload(name: str, data: bytes, kind: str = "image") -> Path:
    """Write an upload into this session's folder, replacing the previous upload of the same ``kind``."""
    folder = session_dir() / kind
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (Path(name).name or "upload")
    path.write_bytes(data)
    return path


def save_files(files, kind: str) -> Path:
    """Write several uploads (``st.file_uploader`` files) into one fresh folder of this session; returns it."""
    folder = session_dir() / kind
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / Path(f.name).name).write_bytes(f.getvalue())
    return folder


def clear_session_uploads() -> None:
    """Delete this session's uploads now (the page's "Remove" button)."""
    shutil.rmtree(uploads_root() / _session_id(), ignore_errors=True)
