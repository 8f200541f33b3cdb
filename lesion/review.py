"""Failure review: a table of every case with its error flags, filters, a persistent tag store and export.

The table joins the ensemble's probability, the ground truth, the per-case loss, the attention-agreement
score (:mod:`lesion.explain.agreement`) and the record metadata. Tags live in a JSON file in lesion-lab's
cache folder for the data set (never inside the user's data folder), written under a file lock by
read-merge-write and atomically (:class:`TagStore`).
"""
from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from filelock import FileLock, Timeout

from lesion.errors import ConfigError, DataError, unknown_option
from lesion.data.io import to_uint8_rgb
from lesion.paths import dataset_cache_dir, write_atomic

#: Flag columns of the review table, also the ``kinds`` accepted by :func:`filter_cases`.
FLAGS: tuple[str, ...] = ("false_positive", "false_negative", "low_agreement", "empty_map", "inconsistent_attention")
#: Tag choices offered by the page (any string is stored).
TAGS: tuple[str, ...] = ("label error", "model error", "image artefact", "ambiguous", "interesting")
TAGS_FILE = "review_tags.json"


def case_log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Per-case binary cross-entropy ``-[y log p + (1-y) log(1-p)]`` (p clipped to [eps, 1-eps]); NaN where y is NaN."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def build_review_table(
    ids: Sequence[str],
    truth: Sequence[float],
    prob: Sequence[float],
    threshold: float = 0.5,
    agreement=None,
    meta=None,
    low_quantile: float = 0.2,
    low_threshold: float | None = None,
    inconsistent_components: int = 2,
):
    """One row per case with its prediction, loss, agreement and flags.

    Args:
        ids: case ids ``[N]``.
        truth: 0/1 labels ``[N]`` (NaN = unlabelled: no loss, no FP/FN flag).
        prob: ensemble probability of the positive class ``[N]``.
        threshold: predicted label = ``prob >= threshold``.
        agreement: optional DataFrame with ``id``, ``agreement`` and ``n_components`` (other columns kept).
        meta: optional DataFrame with ``id`` and metadata columns (age, sex, site, ...).
        low_quantile: ``low_agreement`` = agreement at or below this quantile of the agreement of the maps that
            have a region (``n_components > 0``): an empty map (no region, agreement 0) is flagged ``empty_map``
            instead, so maps tied at 0 never fill the "lowest quantile" (on PH2 they were 77 of 200 cases)...
        low_threshold: ...or below this absolute value when given (takes precedence).
        inconsistent_components: ``inconsistent_attention`` = the binarised heatmap falls into at least this
            many separate regions (seed 003 Fig. 14).

    Returns:
        pandas DataFrame: ``id, truth, prob, pred, loss, wrong`` + agreement columns + metadata +
        boolean :data:`FLAGS`.
    """
    import pandas as pd

    if not 0 <= threshold <= 1:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}.")
    y = np.asarray(truth, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    if not (len(ids) == y.size == p.size):
        raise DataError(f"{len(ids)} ids, {y.size} labels and {p.size} probabilities: lengths must agree.")
    df = pd.DataFrame({"id": list(ids), "truth": y, "prob": p})
    df["pred"] = (p >= threshold).astype(int)
    df["loss"] = case_log_loss(y, p)
    labelled = np.isfinite(y)
    df["wrong"] = labelled & (df["pred"].to_numpy() != np.nan_to_num(y, nan=-1))
    df["false_positive"] = labelled & (df["pred"].to_numpy() == 1) & (y == 0)
    df["false_negative"] = labelled & (df["pred"].to_numpy() == 0) & (y == 1)
    if agreement is not None and len(agreement):
        extra = agreement.drop(columns=[c for c in ("truth", "prob", "pred", "loss") if c in agreement.columns])
        df = df.merge(extra, on="id", how="left")
    if "agreement" not in df:
        df["agreement"] = np.nan
    if "n_components" not in df:
        df["n_components"] = np.nan
    a = df["agreement"].to_numpy(dtype=np.float64)
    comps = pd.to_numeric(df["n_components"], errors="coerce").to_numpy(dtype=np.float64)
    empty = np.isfinite(a) & (comps == 0)
    ranked = np.isfinite(a) & ~empty
    if low_threshold is not None:
        cut = float(low_threshold)
    else:
        finite = a[ranked]
        cut = float(np.quantile(finite, low_quantile)) if finite.size else np.nan
    df["low_agreement"] = ranked & (a <= cut) if np.isfinite(cut) else False
    df["empty_map"] = empty
    df["inconsistent_attention"] = df["n_components"].fillna(0).to_numpy() >= inconsistent_components
    if meta is not None and len(meta):
        df = df.merge(meta, on="id", how="left", suffixes=("", "_meta"))
    front = ["id", "truth", "prob", "pred", "loss", "agreement", "n_components", *FLAGS, "wrong"]
    return df[front + [c for c in df.columns if c not in front]]


def filter_cases(
    df,
    kinds: Iterable[str] = (),
    any_kind: bool = True,
    age: tuple[float, float] | None = None,
    sex: Sequence[str] | None = None,
    site: Sequence[str] | None = None,
):
    """Rows of the review table that match.

    Args:
        kinds: flag names from :data:`FLAGS`; empty = no flag filter.
        any_kind: True keeps rows with any of ``kinds`` set, False rows with all of them.
        age: inclusive ``(lo, hi)`` in years; rows with no age are dropped when given.
        sex, site: keep rows whose value is in the list (None or empty = no filter).
    """
    kinds = list(kinds)
    for k in kinds:
        if k not in FLAGS:
            raise unknown_option("failure kind", k, FLAGS)
    keep = np.ones(len(df), dtype=bool)
    if kinds:
        flags = df[kinds].to_numpy(dtype=bool)
        keep &= flags.any(axis=1) if any_kind else flags.all(axis=1)
    if age is not None and "age" in df:
        ages = pd_numeric(df["age"])
        keep &= (ages >= age[0]) & (ages <= age[1])
    if sex and "sex" in df:
        keep &= df["sex"].astype(str).isin([str(s) for s in sex]).to_numpy()
    if site and "site" in df:
        keep &= df["site"].astype(str).isin([str(s) for s in site]).to_numpy()
    return df[keep].reset_index(drop=True)


def pd_numeric(series) -> np.ndarray:
    """A column as float (non-numbers -> NaN)."""
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


class TagStore:
    """Review tags keyed by record id: ``{id: {"tag", "note", "time"}}`` in one JSON file.

    Safe under concurrent writers (two sessions of the app, the app and a script): every change takes a file
    lock (``<file>.lock``, :mod:`filelock`; released by the OS if the writer dies), re-reads the file, applies
    the one change to what it found and writes the result atomically (temporary file in the same folder +
    ``fsync`` + ``os.replace``). No writer's tag is lost, and a kill at any moment leaves the old or the new
    file, never half. Reads see other writers' changes (the file is re-read when it changed on disk); a new
    instance on the same path sees every earlier change (tags survive reloads and restarts).
    """

    #: Seconds a writer waits for another's lock before giving up with an error.
    LOCK_TIMEOUT = 30.0

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tags: dict[str, dict[str, Any]] = {}
        self._version: tuple | None = None
        self.reload()

    @classmethod
    def for_dataset(cls, dataset) -> "TagStore":
        """The store of a data set, in ``lesion.paths.dataset_cache_dir(fingerprint) / review_tags.json``."""

        return cls(dataset_cache_dir(dataset.fingerprint()) / TAGS_FILE)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _lock(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path), timeout=self.LOCK_TIMEOUT)
        try:
            lock.acquire()
        except Timeout as e:
            raise DataError(f"The review tags {self.path} are locked by another writer for over "
                            f"{self.LOCK_TIMEOUT:.0f} s ({self.lock_path}); try again.") from e
        return lock

    def _file_version(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def _read(self) -> dict[str, dict[str, Any]] | None:
        """The file's tags; ``{}`` when there is no file, None when it is not valid JSON of tags."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            return None
        return {str(k): dict(v) for k, v in data.items()}

    def _set_aside(self) -> None:
        """Keep a corrupt file as ``*.corrupt`` (``.corrupt.N`` when one exists already); caller holds the lock."""
        target = self.path.with_suffix(".corrupt")
        n = 1
        while target.exists():
            target = self.path.with_suffix(f".corrupt.{n}")
            n += 1
        os.replace(self.path, target)

    def reload(self) -> None:
        """Re-read the file (a corrupt file is kept aside as ``*.corrupt`` and the store starts empty)."""
        version = self._file_version()
        data = self._read()
        if data is None:
            with self._lock():
                data = self._read()  # another writer may have replaced it meanwhile
                if data is None:
                    self._set_aside()
                    data = {}
            version = self._file_version()
        self._tags, self._version = data, version

    def _refresh(self) -> None:
        if self._file_version() != self._version:
            self.reload()

    def _write(self, tags: Mapping[str, Any]) -> None:
        """Atomic replace of the file (:func:`lesion.paths.write_atomic`); caller holds the lock."""
        write_atomic(self.path, json.dumps(tags, indent=1, sort_keys=True))

    def _update(self, change) -> None:
        """Lock, re-read, apply ``change(tags) -> bool (changed)``, write if changed, unlock."""
        with self._lock():
            tags = self._read()
            if tags is None:
                self._set_aside()
                tags = {}
            if change(tags):
                self._write(tags)
            self._tags, self._version = tags, self._file_version()

    def set(self, record_id: str, tag: str, note: str = "") -> None:
        """Tag a case (replaces an earlier tag of the same case)."""
        entry = {"tag": str(tag), "note": str(note), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}

        def change(tags: dict) -> bool:
            tags[str(record_id)] = entry
            return True

        self._update(change)

    def remove(self, record_id: str) -> None:
        """Untag a case (nothing happens when it has no tag)."""
        self._update(lambda tags: tags.pop(str(record_id), None) is not None)

    def get(self, record_id: str) -> dict[str, Any] | None:
        self._refresh()
        return self._tags.get(str(record_id))

    def all(self) -> dict[str, dict[str, Any]]:
        self._refresh()
        return {k: dict(v) for k, v in self._tags.items()}

    def __len__(self) -> int:
        self._refresh()
        return len(self._tags)

    def __contains__(self, record_id: object) -> bool:
        self._refresh()
        return str(record_id) in self._tags


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an RGB (or grey) uint8 image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8_rgb(np.asarray(image))).save(buf, format="PNG")
    return buf.getvalue()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "x"


def export_tagged(df, tags: Mapping[str, Mapping[str, Any]],
                  panels: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> tuple[bytes, bytes]:
    """The tagged cases as a CSV and a ZIP of PNG panels (+ the same CSV inside).

    Args:
        df: review table (:func:`build_review_table`).
        tags: ``TagStore.all()``.
        panels: id -> {panel name -> RGB image}; ids without panels are in the CSV only.

    Returns:
        ``(csv_bytes, zip_bytes)``; the ZIP holds ``tagged.csv`` and ``<id>/<panel>.png``.
    """
    tagged = df[df["id"].astype(str).isin(list(tags))].copy()
    tagged["tag"] = [tags[str(i)].get("tag", "") for i in tagged["id"]]
    tagged["note"] = [tags[str(i)].get("note", "") for i in tagged["id"]]
    tagged["tagged_at"] = [tags[str(i)].get("time", "") for i in tagged["id"]]
    csv = tagged.to_csv(index=False).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("tagged.csv", csv)
        for rid in tagged["id"].astype(str):
            for name, img in (panels or {}).get(rid, {}).items():
                z.writestr(f"{_safe(rid)}/{_safe(name)}.png", png_bytes(img))
    return csv, buf.getvalue()


def wrong_predictions(pred_class, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(is_wrong, labelled)`` from predicted class indices and labels (NaN = unlabelled).

    Binary heads: predicted class 1 = positive; multi-class: the class index. Unlabelled cases are never wrong.
    """
    pred = np.asarray(pred_class, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    labelled = np.isfinite(y) & np.isfinite(pred)
    return labelled & (pred != np.nan_to_num(y, nan=-1.0)), labelled
