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


def test_shard_store_is_keyed_by_image_content_not_size_or_mtime(tmp_path):
    """Changed pixels under the same name, size and mtime give another job (the old shards are never served)."""
    import os

    import cv2

    from lesion.data.records import Record
    from lesion.serving.batch import _job_key
    from lesion.zoo import read_model_card

    paths = []
    for i, level in enumerate((30, 200)):
        p = tmp_path / f"img{i}.bmp"  # uncompressed: the size depends on the shape only
        cv2.imwrite(str(p), np.full((8, 8, 3), level, np.uint8))
        paths.append(p)
    records = [Record(id=p.stem, image_path=p) for p in paths]
    cards = [read_model_card(MODELS[0])]
    before = _job_key(cards, records, "hflip")
    st = paths[0].stat()
    cv2.imwrite(str(paths[0]), np.full((8, 8, 3), 99, np.uint8))
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (paths[0].stat().st_size, paths[0].stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert _job_key(cards, records, "hflip") != before
    assert _job_key(cards, records, "none") != _job_key(cards, records, "hflip")
