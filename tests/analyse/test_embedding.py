"""Embedding map: features of a shipped classifier (cached by content and checkpoint), a predictions file refused
(and the one line saying why a member has no features), two planted clusters kept apart by PCA (and, with
LESION_RUN_SLOW=1, as numba compiles UMAP for a minute or two, by UMAP), nearest neighbours and outcomes worked
out by hand."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lesion.analyse.embedding import (OUTCOMES, embed_records, nearest_neighbours, no_features_reason, outcomes,
                                      pca_map, project, umap_map)
from lesion.errors import ConfigError


def test_features_of_a_shipped_classifier(tmp_path):
    import torch

    from lesion.data.spec import open_data
    from lesion.infer.members import build_members
    from lesion.infer.torch_member import TorchMember  # noqa: F401  (registers the torch backend)
    from lesion.paths import WEIGHTS_DIR
    from lesion.zoo import load_model

    name = "derm_cls_efficientnet_lite0_focal"
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip("shipped classifier absent")
    torch.set_num_threads(1)
    member = build_members([load_model(name)])[0]
    recs = open_data("demo:derm").records[:6]
    f = embed_records(member, recs, batch_size=3)
    assert f.shape[0] == 6 and f.ndim == 2 and np.isfinite(f).all()
    assert np.array_equal(embed_records(member, recs), f)  # from the cache
    assert no_features_reason(member) is None


def test_a_predictions_file_has_no_features(tmp_path):
    from lesion.infer.predictions import PredictionsMember

    p = tmp_path / "p.csv"
    p.write_text("id,prob\na,0.5\n")
    with pytest.raises(ConfigError, match="no features"):
        embed_records(PredictionsMember(p), [])
    line = no_features_reason(PredictionsMember(p))
    assert "predictions file" in line and "\n" not in line
    with pytest.raises(ConfigError, match="at least 4"):
        umap_map(np.zeros((3, 5)))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LESION_RUN_SLOW"), reason="UMAP's numba compile takes 1-2 min (LESION_RUN_SLOW=1)")
def test_umap_keeps_planted_clusters_apart():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.normal(0, 1, (30, 16)) + 5, rng.normal(0, 1, (30, 16)) - 5])
    xy = umap_map(f)
    a, b = xy[:30], xy[30:]
    within = max(a.std(axis=0).max(), b.std(axis=0).max())
    assert np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) > 3 * within
    assert np.array_equal(umap_map(f), xy)  # cached


def _two_clusters(n: int = 30, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n, d)) + 5, rng.normal(0, 1, (n, d)) - 5])


def test_pca_keeps_planted_clusters_apart():
    f = _two_clusters()
    proj = project(f, "pca")
    a, b = proj.xy[:30], proj.xy[30:]
    within = max(a.std(axis=0).max(), b.std(axis=0).max())
    assert np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) > 3 * within
    # the first component is the one that splits them: every point of one cluster on one side
    assert (np.sign(a[:, 0]) == np.sign(a[0, 0])).all() and (np.sign(b[:, 0]) == -np.sign(a[0, 0])).all()
    assert proj.method == "pca" and proj.words.startswith("PCA") and "% of the variance" in proj.words
    assert np.array_equal(project(f, "pca").xy, proj.xy)  # repeatable
    assert proj.xy.shape == (60, 2) and proj.xy.dtype == np.float32


def test_pca_reads_directions_not_lengths():
    """L2 normalisation first (like UMAP's cosine metric): scaling an image's features moves nothing."""
    f = _two_clusters(n=10)
    g = f * np.linspace(0.5, 4, len(f))[:, None]
    assert np.allclose(pca_map(f).xy, pca_map(g).xy, atol=1e-5)


def test_projection_front_door_names_the_options_and_the_minimum():
    with pytest.raises(ConfigError, match="pca, umap"):
        project(np.zeros((10, 3)), "tsne")
    with pytest.raises(ConfigError, match="at least 2"):
        project(np.ones((1, 3)), "pca")
    one_feature = project(np.arange(1, 6, dtype=float)[:, None] * [[1.0]], "pca")  # F = 1: second axis is 0
    assert np.allclose(one_feature.xy[:, 1], 0)


def test_nearest_neighbours_by_cosine_worked_by_hand():
    f = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [-1, 0], [2, 0]], dtype=float)
    idx, sim = nearest_neighbours(f, 0, k=3)
    # image 5 points the same way as image 0 (cosine 1, twice as long); image 0 itself comes first all the same
    assert idx.tolist() == [0, 5, 1, 3]
    assert sim[0] == 1.0 and sim[1] == pytest.approx(1.0) and sim[2] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert nearest_neighbours(f, 4, k=100)[0].tolist()[:1] == [4] and len(nearest_neighbours(f, 4, k=100)[0]) == 6
    with pytest.raises(ConfigError, match="outside"):
        nearest_neighbours(f, 6)


def test_outcomes_at_a_threshold():
    y = [1, 1, 0, 0, np.nan, 1, 0]
    p = [0.9, 0.2, 0.7, 0.1, 0.5, np.nan, 0.5]
    got = outcomes(y, p, 0.5).tolist()
    assert got == ["true positive", "false negative", "false positive", "true negative", "unlabelled", "no score",
                   "false positive"]  # p == threshold is positive
    assert set(got) <= set(OUTCOMES)


def test_every_member_without_features_gets_one_line():
    class Fake:
        features = False

        def __init__(self, kind):
            self.kind, self.name = kind, f"m-{kind}"

    class Wrapped:  # the prediction cache's wrapper: the reason is the wrapped member's
        features = False
        name = "cached"
        kind = "cached"
        inner = Fake("onnx")

    lines = {k: no_features_reason(Fake(k)) for k in ("onnx", "remote", "torch", "other")}
    assert "ONNX Runtime" in lines["onnx"] and "server" in lines["remote"] and "opaque" in lines["torch"]
    assert all(line.count("\n") == 0 and "has no features" in line for line in lines.values())
    assert "ONNX Runtime" in no_features_reason(Wrapped())
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        embed_records(Fake("onnx"), [])
