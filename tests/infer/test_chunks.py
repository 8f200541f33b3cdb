"""Issue "computes only what it shows": a data set predicted in cached parts gives the same result as one call,
whatever the merge rule (rank merges rank over all images, not per part)."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.errors import DataError
from lesion.infer.chunks import DataPart, concat_results, parts, predict_parts
from lesion.infer.ensemble import MERGE_MODES, merge_predictions


def _logits(n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=(2, n, 1)).astype(np.float32), "b": rng.normal(size=(2, n, 1)).astype(np.float32)}


@pytest.mark.parametrize("merge", MERGE_MODES)
def test_parts_joined_equal_one_call(merge):
    z = _logits()
    ids = [f"i{k}" for k in range(10)]
    whole = merge_predictions(z, ids, ("melanoma",), False, "flips", merge, merge, "cpu", 1.0)
    cut = [(0, 4), (4, 8), (8, 10)]
    pieces = [merge_predictions({n: v[:, a:b] for n, v in z.items()}, ids[a:b], ("melanoma",), False, "flips", merge,
                                merge, "cpu", 1.0) for a, b in cut]
    joined = concat_results(pieces, merge)
    assert joined.ids == ids
    np.testing.assert_allclose(joined.probs, whole.probs, rtol=1e-6)
    for n in z:
        np.testing.assert_allclose(joined.member_probs[n], whole.member_probs[n], rtol=1e-6)


def test_parts_are_stable_and_keep_the_data_sets_cache_folder():
    recs = list(range(300))
    p = parts(recs, "fp123", size=128)
    assert [len(x) for x in p] == [128, 128, 44]
    assert all(isinstance(x, DataPart) and x.fingerprint() == "fp123" for x in p)
    assert parts(recs, "fp123", size=128) == p  # the same subset gives the same parts (the same cache entries)
    with pytest.raises(DataError):
        parts(recs, "x", size=0)


def test_predict_parts_counts_progress_over_all_parts():
    z = _logits(6)
    ids = [f"i{k}" for k in range(6)]
    seen = []

    def one(part, sub):
        idx = [ids.index(r) for r in part.records]
        sub(len(idx), len(idx))
        return merge_predictions({n: v[:, idx] for n, v in z.items()}, list(part.records), ("m",), False, "flips",
                                 "mean_prob", "mean_prob", "cpu", 2.0)

    res = predict_parts(one, parts(ids, "fp", size=4), "mean_prob", progress=lambda d, t: seen.append((d, t)))
    assert res.ids == ids and seen[-1] == (6, 6) and all(t == 6 for _, t in seen)
