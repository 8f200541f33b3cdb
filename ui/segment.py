"""Streamlit glue of the Segmentation page: cached model loads, per-image predictions, data-set runs."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import streamlit as st

from lesion.errors import CheckpointError
from lesion.segment.compare import threshold_counts
from lesion.segment.models import SegModelSegmenter
from lesion.segment.otsu import OtsuSegmenter
from lesion.weights import weights_file_identity
from lesion.zoo import load_model
from ui.uploads import save_files


def load_segmenter_cached(name_or_path: str) -> SegModelSegmenter:
    """A trained segmenter, shared by all sessions (it holds no per-user state).

    Cached per name and file identity (:func:`lesion.weights.weights_file_identity`, read on every rerun), so a
    checkpoint replaced while the app runs is loaded (and verified against its card) again.
    """
    return _load_segmenter(str(name_or_path), weights_file_identity(name_or_path))


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _load_segmenter(name_or_path: str, identity: tuple) -> SegModelSegmenter:
    import torch

    # The app server, its sessions and inference share few cores: one thread per forward keeps the UI live.
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return SegModelSegmenter(*load_model(name_or_path, task="segmentation"))


def network_probability(name_or_path: str, image_key: str, _image: np.ndarray) -> np.ndarray:
    """Probability map ``[H, W]`` in 0..1 of one network on one image (cached by model, its file identity and
    ``image_key``)."""
    return _network_probability(name_or_path, weights_file_identity(name_or_path), image_key, _image)


@st.cache_data(show_spinner=False, max_entries=256)
def _network_probability(name_or_path: str, identity: tuple, image_key: str, _image: np.ndarray) -> np.ndarray:
    return load_segmenter_cached(name_or_path)(_image).astype(np.float32)


def network_mask(name_or_path: str, image_key: str, image: np.ndarray) -> np.ndarray:
    """Bool mask ``[H, W]`` of one network on one image, at the threshold of its card."""
    return network_probability(name_or_path, image_key, image) > load_segmenter_cached(name_or_path).threshold


def image_picker(ds):
    """Select one record; a click in the page's scatter plot sets ``seg_image_id`` and lands here."""
    ids = [r.id for r in ds.records]
    wanted = st.session_state.get("seg_image_id")
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox("Image", ids, index=index, key=f"seg_pick.{ds.fingerprint()}.{wanted}")
    st.session_state["seg_image_id"] = chosen
    return ds.by_id(chosen)


def dataset_counts(ds, name: str, ref, cfg, progress: Callable[[int, int], None] | None = None):
    """Confusion counts of one method over the data set, kept for the session (re-scoring is then instant).

    Args:
        ds: the data set.
        name: method name (``otsu`` or a checkpoint name).
        ref: checkpoint name or path for networks; None for Otsu.
        cfg: the Otsu configuration (part of the key, so a changed setting runs again).
    """
    key = ("seg_counts", ds.fingerprint(), name, str(ref), repr(cfg) if ref is None else "")
    store = st.session_state.setdefault("_seg_counts", {})
    if key not in store:
        segmenter = OtsuSegmenter(cfg) if ref is None else load_segmenter_cached(str(ref))
        store[key] = threshold_counts(ds, segmenter, name, progress=progress)
    return store[key]


def checkpoint_picker() -> dict[str, str]:
    """Sidebar: add your own smp checkpoint by path or upload (weights + JSON card). Returns name -> path.

    Uploads are written to this session's folder under lesion-lab's cache (:mod:`ui.uploads`), never next to the
    app or the data; it is created again when missing and deleted when the session ends.
    """
    added: dict[str, str] = st.session_state.setdefault("seg_user_ckpts", {})
    with st.sidebar.expander("Add your own checkpoint"):
        path = st.text_input("Checkpoint path (.safetensors with its .json card)", key="seg_ckpt_path").strip()
        files = st.file_uploader("…or upload the weights and the card", type=["safetensors", "json", "pth"],
                                 accept_multiple_files=True, key="seg_ckpt_upload")
        if st.button("Add checkpoint", key="seg_ckpt_add"):
            try:
                if files:
                    folder = save_files(files, "checkpoint")  # this session's folder, recreated if removed
                    weights = [f for f in files if not f.name.endswith(".json")]
                    if not weights:
                        raise CheckpointError("Upload the weights file (.safetensors or .pth) with its .json card.")
                    path = str(folder / Path(weights[0].name).name)
                if not path:
                    raise CheckpointError("Give a checkpoint path or upload one.")
                seg = load_segmenter_cached(path)
                added[f"yours: {seg.name}"] = path
                st.success(f"Added {seg.name}.")
            except CheckpointError as e:
                st.error(str(e))
            except Exception as e:  # a user's file can fail in ways no library documents
                st.error(f"This checkpoint cannot be used: {e}")
    return dict(added)
