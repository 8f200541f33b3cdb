"""Embedding map: features of a shipped classifier (cached by content and checkpoint), a predictions file refused,
and (LESION_RUN_SLOW=1: numba compiles UMAP for a minute or two) two planted clusters kept apart by UMAP."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lesion.analyse.embedding import embed_records, umap_map
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


def test_a_predictions_file_has_no_features(tmp_path):
    from lesion.infer.predictions import PredictionsMember

    p = tmp_path / "p.csv"
    p.write_text("id,prob\na,0.5\n")
    with pytest.raises(ConfigError, match="no features"):
        embed_records(PredictionsMember(p), [])
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
