"""Label issues: which labels are likely wrong, which images are near copies, which lesions leak across splits.

* :func:`rank_label_issues`: confident learning (Northcutt et al. 2021) through cleanlab 2.9 —
  ``cleanlab.rank.get_label_quality_scores`` (self-confidence) orders every image, and
  ``cleanlab.filter.find_label_issues`` (prune by noise rate) says which ones it would flag. The probabilities
  must be **out-of-fold or held-out**: on images a model trained on, it has learnt the wrong labels too.
* :func:`perceptual_hashes` / :func:`near_duplicates`: the 64-bit perceptual hash (``imagehash.phash``) of every
  image, across any number of folders; pairs within a Hamming distance are near duplicates (re-saved, resized or
  slightly re-cropped copies). Hashes are cached by file content.
* :func:`lesion_leaks`: lesions (``lesion_id``, else the record's group) with images on both sides of a split.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lesion.data.records import file_content_digest
from lesion.errors import DataError
from lesion.paths import cache_dir, write_atomic

Progress = Callable[[int, int], None]
HASH_VERSION = 1


def _pred_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        p = p.reshape(-1)
        p = np.stack([1 - p, p], axis=1)
    p = np.clip(p, 1e-6, 1)
    return p / p.sum(axis=1, keepdims=True)


def rank_label_issues(ids: Sequence[str], labels, probs, method: str = "self_confidence"):
    """Images ranked by how likely their label is wrong.

    Args:
        ids: ``[N]`` image ids.
        labels: ``[N]`` class index (binary 0/1); NaN = unlabelled (left out).
        probs: out-of-fold probabilities, ``[N]`` of the positive class or ``[N, K]``.
        method: cleanlab's label-quality score (``self_confidence``, ``normalized_margin``, ``confidence_weighted_entropy``).

    Returns:
        DataFrame ``id, label, prob, score, rank, issue``: ``score = 1 − label quality`` (higher = more likely wrong),
        ``rank`` 1 = most likely wrong, ``issue`` = flagged by ``find_label_issues``; best-ranked first.

    Raises:
        DataError: lengths differ, or fewer than two classes among the labelled images.
    """
    import pandas as pd
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.asarray(labels, dtype=np.float64).ravel()
    p = _pred_probs(probs)
    if not (len(ids) == y.size == p.shape[0]):
        raise DataError(f"{len(ids)} ids, {y.size} labels and {p.shape[0]} probability rows: lengths must agree.")
    ok = np.isfinite(y)
    yl = y[ok].astype(int)
    if np.unique(yl).size < 2:
        raise DataError("Label issues need labelled images of both classes.")
    pl = p[ok]
    quality = get_label_quality_scores(yl, pl, method=method)
    flagged = find_label_issues(yl, pl, filter_by="prune_by_noise_rate")
    df = pd.DataFrame({"id": np.asarray(ids, dtype=object)[ok], "label": yl,
                       "prob": pl[:, 1] if pl.shape[1] == 2 else pl[np.arange(len(yl)), yl],
                       "score": 1.0 - quality, "issue": flagged})
    df = df.sort_values(["score", "id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    df.insert(4, "rank", np.arange(1, len(df) + 1))
    return df


def _hash_cache() -> Any:
    return cache_dir() / "analyse" / f"phash-v{HASH_VERSION}.json"


def perceptual_hashes(paths: Sequence[Any], progress: Progress | None = None, cache: bool = True) -> list[int | None]:
    """64-bit ``imagehash.phash`` of each image file as an int (None when unreadable), cached by content."""
    import imagehash
    from PIL import Image

    store: dict[str, str] = {}
    path = _hash_cache()
    if cache and path.is_file():
        try:
            store = json.loads(path.read_text())
        except (ValueError, OSError):
            store = {}
    out: list[int | None] = []
    new = False
    for i, p in enumerate(paths):
        digest = file_content_digest(p)
        hexv = store.get(digest)
        if hexv is None:
            try:
                with Image.open(p) as im:
                    hexv = str(imagehash.phash(im.convert("RGB")))
            except Exception:  # PIL raises many kinds on a damaged file
                hexv = ""
            store[digest], new = hexv, True
        out.append(int(hexv, 16) if hexv else None)
        if progress is not None:
            progress(i + 1, len(paths))
    if cache and new:
        write_atomic(path, json.dumps(store))
    return out


def near_duplicates(ids: Sequence[str], hashes: Sequence[int | None], folders: Sequence[str] | None = None,
                    max_distance: int = 4):
    """Pairs of images whose perceptual hashes differ in at most ``max_distance`` of 64 bits.

    Args:
        ids, hashes: one per image (from :func:`perceptual_hashes`; None = skipped).
        folders: which folder / data set / split each image is in (kept in the output), or None.

    Returns:
        DataFrame ``id_a, id_b, folder_a, folder_b, distance, across`` (``across``: the two are in different
        folders), closest first.
    """
    import pandas as pd

    folders = list(folders) if folders is not None else [""] * len(ids)
    keep = [i for i, h in enumerate(hashes) if h is not None]
    h = np.array([hashes[i] for i in keep], dtype=np.uint64)
    rows = []
    for a in range(len(h) - 1):
        d = np.bitwise_count(h[a] ^ h[a + 1:])
        for b in np.flatnonzero(d <= max_distance):
            i, j = keep[a], keep[a + 1 + int(b)]
            rows.append({"id_a": ids[i], "id_b": ids[j], "folder_a": folders[i], "folder_b": folders[j],
                         "distance": int(d[b]), "across": folders[i] != folders[j]})
    df = pd.DataFrame(rows, columns=["id_a", "id_b", "folder_a", "folder_b", "distance", "across"])
    return df.sort_values(["distance", "id_a"], kind="stable").reset_index(drop=True)


def lesion_key(record: Any) -> str:
    """The lesion a record shows: its ``lesion_id`` metadata, else its group (patient), else its own id."""
    meta: Mapping[str, Any] = record.meta or {}
    return str(meta.get("lesion_id") or record.group or record.id)


def lesion_leaks(records: Sequence[Any], train_ids, test_ids):
    """Lesions with images in both the training and the held-out ids.

    Returns:
        DataFrame ``lesion, n_train, n_test, train_ids, test_ids`` (ids joined by spaces), most images first.
    """
    import pandas as pd

    train, test = set(map(str, train_ids)), set(map(str, test_ids))
    by: dict[str, dict[str, list[str]]] = {}
    for r in records:
        side = "train" if r.id in train else "test" if r.id in test else None
        if side:
            by.setdefault(lesion_key(r), {"train": [], "test": []})[side].append(r.id)
    rows = [{"lesion": k, "n_train": len(v["train"]), "n_test": len(v["test"]), "train_ids": " ".join(v["train"]),
             "test_ids": " ".join(v["test"])} for k, v in by.items() if v["train"] and v["test"]]
    df = pd.DataFrame(rows, columns=["lesion", "n_train", "n_test", "train_ids", "test_ids"])
    return df.sort_values(["n_test", "lesion"], ascending=[False, True]).reset_index(drop=True)


def label_issue_columns(ids: Sequence[str], labels, probs):
    """The Failure-review columns of :func:`rank_label_issues`: ``id, label_issue_rank, label_issue_score,
    label_issue`` for the labelled images; empty (no rows) when the labels hold one class, so a left merge gives
    NaN / missing columns rather than an error."""
    import pandas as pd

    cols = ["id", "label_issue_rank", "label_issue_score", "label_issue"]
    try:
        df = rank_label_issues(ids, labels, probs)
    except DataError:
        return pd.DataFrame(columns=cols)
    return df.rename(columns={"rank": "label_issue_rank", "score": "label_issue_score", "issue": "label_issue"})[cols]
