"""Ray Data evaluation equals the in-process engine (same ids, order, probabilities) and resumes from its shards."""
from __future__ import annotations

import numpy as np
import pytest

from lesion.data.spec import open_data
from lesion.infer.engine import predict
from lesion.zoo import load_model

MODELS = ("derm_cls_efficientnet_lite0_focal", "derm_multitask_efficientnet_lite0")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_data_equals_engine_and_resumes(ray_local, tmp_path, monkeypatch):
    import lesion.serving.batch as batch

    monkeypatch.setattr(batch, "SHARD_IMAGES", 5)  # 13 images -> 3 shards
    records = open_data("demo:derm").records[:13]
    members = [load_model(n) for n in MODELS]
    local = predict(members, records, tta="hflip", device="cpu")
    seen = []
    got = batch.ray_predict(MODELS, records, tta="hflip", actors=2, work_dir=tmp_path,
                            progress=lambda d, t: seen.append((d, t)))
    assert got.ids == local.ids
    assert np.abs(got.probs - local.probs).max() <= 1e-5
    for n in MODELS:
        assert np.abs(got.member_probs[n] - local.member_probs[n]).max() <= 1e-5
    assert seen[-1] == (13, 13) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    shards = sorted(tmp_path.glob("shard-*.parquet"))
    assert len(shards) == 3
    # an interrupted run: one shard missing -> only that shard is recomputed, the result is the same
    shards[1].unlink()
    before = {p.name: p.stat().st_mtime_ns for p in shards if p.exists()}
    again = batch.ray_predict(MODELS, records, tta="hflip", actors=1, work_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in sorted(tmp_path.glob("shard-*.parquet")) if p.name in before} == before
    assert np.abs(again.probs - got.probs).max() == 0
