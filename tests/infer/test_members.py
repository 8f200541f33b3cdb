"""The one member protocol, the one merge, the cache around any member."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.card import ModelCard, Preprocessing
from lesion.data.records import Dataset, Record
from lesion.errors import ConfigError
from lesion.infer.cache import CacheSpec, CachedMember
from lesion.infer.engine import predict
from lesion.infer.ensemble import activate, merge_predictions
from lesion.infer.members import Member, build_members
from lesion.infer.torch_member import TorchMember
from lesion.infer.tta import parse_tta

ROOT = Path(__file__).resolve().parents[2]
PREP = Preprocessing(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), center_crop=False, clahe=False)


class _Brightness(torch.nn.Module):
    """Logit = scale * (mean of the normalised image): a flat image of level L gives (L/255 - 0.5) / 0.5 * scale."""

    num_classes = 1

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((1,), float(scale)))

    def forward(self, x):
        return (x.mean(dim=(1, 2, 3)) * self.scale)[:, None]


def _card(name="b") -> ModelCard:
    return ModelCard(name=name, task="classification", classes=("melanoma",), preprocessing=PREP)


def _flat(levels):
    return [np.full((16, 16, 3), v, np.uint8) for v in levels]


class _Lookup(Member):
    """A member that answers a whole data set at once from a table of logits per id (as a predictions file
    does): it has no network, no gradients, no features."""

    kind = "lookup"

    def __init__(self, table: dict[str, float]):
        super().__init__(_card("lookup"), "sha256:" + "0" * 64)
        self.table = table

    def predict_all(self, items, tta, progress=None):
        z = np.asarray([[self.table[it.id]] for it in items], np.float32)
        return np.repeat(z[None], tta.views, axis=0)


def test_torch_member_says_what_it_can_do_and_names_its_weights():
    m = build_members([(_Brightness(), _card())])[0]
    assert isinstance(m, TorchMember) and m.gradients and m.features and not m.uses_metadata
    assert m.identity.startswith("state:") and m.prep == PREP  # its card's preprocessing, nothing else
    other = build_members([(_Brightness(2.0), _card())])[0]
    assert other.identity != m.identity  # another state, another identity
    same = build_members([(_Brightness(), _card())])[0]
    assert same.identity == m.identity


def test_names_are_made_unique_and_backends_are_checked():
    a, b = build_members([(_Brightness(), _card()), (_Brightness(), _card())])
    assert (a.name, b.name) == ("b", "b#2")
    with pytest.raises(ConfigError, match="torch"):
        build_members([(_Brightness(), _card())], backend="tpu")


def test_one_merge_by_hand():
    z = {"a": np.array([[[0.0], [2.0]], [[1.0], [-2.0]]]), "b": np.array([[[1.0], [1.0]], [[1.0], [1.0]]])}
    res = merge_predictions(z, ["x", "y"], ("melanoma",), tta="hflip", merge="mean_prob")
    pa = activate(z["a"]).mean(axis=0)
    pb = activate(z["b"]).mean(axis=0)
    np.testing.assert_allclose(res.member_probs["a"], pa)
    np.testing.assert_allclose(res.probs, (pa + pb) / 2, atol=1e-9)
    np.testing.assert_allclose(res.view_std["a"], activate(z["a"]).std(axis=0))
    assert res.view_logits["b"].shape == (2, 2, 1) and res.ids == ["x", "y"]


def test_prediction_result_is_built_in_one_place():
    """Only lesion/infer/ensemble.py constructs a PredictionResult (the one merge)."""
    builders = []
    for path in (ROOT / "lesion").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == \
                    "PredictionResult":
                builders.append(path.relative_to(ROOT).as_posix())
    assert builders == ["lesion/infer/ensemble.py"]


def test_a_member_that_answers_all_at_once_joins_an_ensemble():
    images = _flat([30, 220, 60])
    table = {"image_00000": -1.0, "image_00001": 1.5, "image_00002": 0.25}
    res = predict([_Lookup(table), (_Brightness(), _card())], images, tta="hflip", device="cpu")
    p_lookup = 1 / (1 + np.exp(-np.array(list(table.values()))))
    p_net = 1 / (1 + np.exp(-((np.array([30, 220, 60]) / 255 - 0.5) / 0.5)))
    np.testing.assert_allclose(res.member_probs["lookup"][:, 0], p_lookup, atol=1e-6)
    np.testing.assert_allclose(res.member_probs["b"][:, 0], p_net, atol=1e-5)
    np.testing.assert_allclose(res.probs[:, 0], (p_lookup + p_net) / 2, atol=1e-5)


def test_cache_wraps_any_member_and_keys_metadata(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    import cv2

    recs = []
    for i, level in enumerate((30, 220)):
        p = root / f"i{i}.png"
        cv2.imwrite(str(p), np.full((16, 16, 3), level, np.uint8))
        recs.append(Record(id=f"i{i}", image_path=p, meta={"age": 40}))
    ds = Dataset("d", "plain", "derm", root, recs, ("mel", "nv"))
    spec = CacheSpec(root=tmp_path / "cache")
    table = {"i0": 0.5, "i1": -0.5}
    first = predict([_Lookup(table)], ds, tta="none", cache=spec)
    assert first.notes == []
    again = predict([_Lookup(table)], ds, tta="none", cache=spec)
    assert again.notes == ["lookup: from cache"]
    np.testing.assert_allclose(again.probs, first.probs)
    # the same images with other metadata (a multi-task model would answer otherwise): not the cached entry
    ds2 = Dataset("d", "plain", "derm", root, [Record(id=r.id, image_path=r.image_path, meta={"age": 80})
                                                for r in recs], ("mel", "nv"))
    assert predict([_Lookup(table)], ds2, tta="none", cache=spec).notes == []
    wrapped = CachedMember(_Lookup(table), ds, [], spec)
    assert wrapped.identity == _Lookup(table).identity and not wrapped.gradients


def test_tta_views_of_one_shape_share_a_forward_pass():
    calls = []

    class Counting(_Brightness):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return super().forward(x)

    predict([(Counting(), _card())], _flat([10, 20, 30]), tta="d4", batch_size=3, device="cpu")
    assert calls == [(24, 3, 16, 16)]  # 8 views x 3 images in one pass
    assert parse_tta("d4").views == 8


def test_unreadable_images_are_named_and_left_out_by_readable_only(tmp_path):
    """One unreadable file: its row is NaN and named in ``errors``; the others are scored; ``readable_only`` merges
    the readable rows again; nothing readable is an error."""
    import cv2

    from lesion.errors import DataError
    from lesion.infer.ensemble import readable_only

    paths = []
    for i, level in enumerate((30, 220, 60)):
        p = tmp_path / f"i{i}.png"
        cv2.imwrite(str(p), np.full((16, 16, 3), level, np.uint8))
        paths.append(p)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n broken")
    res = predict([(_Brightness(), _card())], paths, tta="hflip", device="cpu")
    assert list(res.errors) == ["i1"] and np.isnan(res.probs[1]).all() and np.isfinite(res.probs[[0, 2]]).all()
    assert any("could not be read" in n for n in res.notes)
    ok = readable_only(res)
    assert ok.ids == ["i0", "i2"] and np.allclose(ok.probs[:, 0], res.probs[[0, 2], 0]) and ok.errors == res.errors
    with pytest.raises(DataError, match="None of the 1 image"):
        predict([(_Brightness(), _card())], [paths[1]], tta="none", device="cpu")
