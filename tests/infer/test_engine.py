"""Batched engine == naive reference; the disk cache skips the model on a revisit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lesion.card import ModelCard, Preprocessing
from lesion.classify.models import ClsModelConfig, create_classifier
from lesion.classify.multitask import MultiTaskConfig, MultiTaskNet
from lesion.data.records import Dataset, Record
from lesion.infer.cache import CacheSpec
from lesion.infer.engine import predict, predict_naive


def _cached(members, data, cache_root=None, warn=None, refresh=False, **kw):
    """The one entry point with the disk cache under ``cache_root``."""
    return predict(members, data, cache=CacheSpec(root=cache_root, warn=warn, refresh=refresh), **kw)


def _card(name: str, size: int, crop: bool = True, task: str = "classification") -> ModelCard:
    return ModelCard(name=name, classes=("melanoma",), task=task,
                     preprocessing=Preprocessing(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                                 center_crop=crop, clahe=False))


@pytest.fixture(scope="module")
def members():
    torch.manual_seed(0)
    a = create_classifier(ClsModelConfig("resnet10t", num_classes=1)).eval()
    mt = MultiTaskNet(MultiTaskConfig(arch="resnet10t", num_classes=1, size=32)).eval()
    card_mt = _card("mt", 32, crop=False, task="multitask")
    return [(a, _card("a", 32)), (mt, card_mt)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    import cv2

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    recs = []
    for i in range(5):
        img = rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)  # non-square: centre crop matters
        p = root / f"i{i}.png"
        cv2.imwrite(str(p), img)
        recs.append(Record(id=f"i{i}", image_path=p, diagnosis="mel" if i % 2 else "nv",
                           meta={"age": 30 + 10 * i, "sex": "female", "site": "back"}))
    return Dataset("rand", "plain", "derm", root, recs, ("mel", "nv"))


@pytest.mark.parametrize("merge", ["mean_prob", "log_mean", "rank"])
def test_batched_equals_naive(members, dataset, merge):
    fast = predict(members, dataset, tta="d4", merge=merge, batch_size=2, device="cpu")
    slow = predict_naive(members, dataset, tta="d4", merge=merge, device="cpu")
    assert fast.ids == slow.ids == [r.id for r in dataset.records]
    np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-5)
    for name in ("a", "mt"):
        np.testing.assert_allclose(fast.member_probs[name], slow.member_probs[name], atol=1e-5)
    assert fast.probs.shape == (5, 1) and fast.classes == ("melanoma",)


def test_metadata_reaches_multitask_model(members, dataset):
    mt = members[1]
    with_meta = predict([mt], dataset, tta="none", device="cpu").probs
    no_meta = predict([mt], [np.asarray(__import__("lesion.data.io", fromlist=["read_image"]).read_image(r.image_path))
                             for r in dataset.records], tta="none", device="cpu").probs
    assert not np.allclose(with_meta, no_meta)  # arrays carry no metadata -> "unknown" vector


def test_mismatched_classes_rejected(members, dataset):
    from lesion.errors import DataError

    other = (members[0][0], members[0][1].replace(name="b", classes=("malignant",)))
    with pytest.raises(DataError, match="different classes"):
        predict([members[0], other], dataset, tta="none", device="cpu")


def test_cache_second_call_skips_model(members, dataset, tmp_path: Path):

    calls = {"n": 0}
    model, card = members[0]
    h = model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        first = _cached([(model, card)], dataset, tta="hflip", device="cpu", cache_root=tmp_path)
        n_first = calls["n"]
        assert n_first > 0
        second = _cached([(model, card)], dataset, tta="hflip", device="cpu", cache_root=tmp_path)
        assert calls["n"] == n_first  # no forward pass on the revisit
        np.testing.assert_array_equal(first.probs, second.probs)
        assert "from cache" in second.notes[0]
        _cached([(model, card)], dataset, tta="none", device="cpu", cache_root=tmp_path)
        assert calls["n"] > n_first  # another TTA is another key
        with torch.no_grad():  # changed weights -> new key (state-dict hash)
            model.fc.bias.add_(1.0)
        n = calls["n"]
        _cached([(model, card)], dataset, tta="hflip", device="cpu", cache_root=tmp_path)
        assert calls["n"] > n
    finally:
        h.remove()
        with torch.no_grad():
            model.fc.bias.sub_(1.0)


def test_auto_batch_size_fills_a_forward_pass_per_device(members, dataset):
    from lesion.infer.engine import FORWARD_IMAGES, auto_batch_size

    assert auto_batch_size("cpu", "d4") == 1 and auto_batch_size("cpu", "none") == FORWARD_IMAGES["cpu"]
    assert auto_batch_size("cpu", "flips") == FORWARD_IMAGES["cpu"] // 4
    assert auto_batch_size("cuda:0", "d4") == FORWARD_IMAGES["cuda"] // 8
    # the default (None) batch size gives the same answer as an explicit one, odd remainders included
    auto = predict(members, dataset, tta="hflip", device="cpu")
    fixed = predict(members, dataset, tta="hflip", batch_size=3, device="cpu")
    np.testing.assert_allclose(auto.probs, fixed.probs, atol=1e-5)


class _LogMean(torch.nn.Module):
    """Logit = log(mean of the normalised image): NaN for every image darker than the normalisation mean."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.log(x.mean(dim=(1, 2, 3)) * self.scale)[:, None]


@pytest.fixture(scope="module")
def dark_and_bright(tmp_path_factory) -> Dataset:
    """5 images, 2 of them dark (mean below the card's 0.5 normalisation mean), 3 bright."""
    import cv2

    root = tmp_path_factory.mktemp("dark")
    recs = []
    for i, level in enumerate([40, 200, 60, 220, 180]):
        p = root / f"d{i}.png"
        cv2.imwrite(str(p), np.full((32, 32, 3), level, np.uint8))
        recs.append(Record(id=f"d{i}", image_path=p, diagnosis="nv"))
    return Dataset("dark", "plain", "derm", root, recs, ("nv",))


def test_nan_model_is_an_error_not_a_score(members, dataset, tmp_path):
    from lesion.errors import LesionError, ModelOutputError

    torch.manual_seed(0)
    nan_model = create_classifier(ClsModelConfig("resnet10t", num_classes=1)).eval()
    with torch.no_grad():
        for p in nan_model.parameters():
            p.fill_(float("nan"))
    pair = (nan_model, _card("broken", 32))
    for run in (lambda: predict([members[0], pair], dataset, tta="hflip", device="cpu"),
                lambda: predict_naive([pair], dataset, tta="none", device="cpu")):
        with pytest.raises(ModelOutputError, match=r"'broken' output NaN or Inf for 5 of 5 images") as e:
            run()
        assert isinstance(e.value, LesionError)
    with pytest.raises(ModelOutputError, match="broken"):
        _cached([pair], dataset, tta="none", device="cpu", cache_root=tmp_path)
    assert not list(tmp_path.rglob("*.npz"))  # nothing cached
    with torch.no_grad():  # +Inf logits are refused too
        inf_model = create_classifier(ClsModelConfig("resnet10t", num_classes=1)).eval()
        inf_model.fc.bias.fill_(float("inf"))
    with pytest.raises(ModelOutputError, match="5 of 5"):
        predict([(inf_model, _card("inf", 32))], dataset, tta="none", device="cpu")


def test_nan_on_some_images_counts_them(dark_and_bright):
    from lesion.errors import ModelOutputError

    pair = (_LogMean().eval(), _card("logmean", 32))
    for run in (predict, predict_naive):
        with pytest.raises(ModelOutputError, match=r"'logmean' output NaN or Inf for 2 of 5 images \(e\.g\. d0, d2\)"):
            run([pair], dark_and_bright, tta="d4", device="cpu")
    bright = Dataset("bright", "plain", "derm", dark_and_bright.root,
                     [r for r in dark_and_bright.records if r.id in ("d1", "d3", "d4")], ("nv",))
    res = predict([pair], bright, tta="d4", device="cpu")  # the same model scores finite images
    assert np.isfinite(res.probs).all() and res.probs.shape == (3, 1)


def test_uncertainty_spread_over_views_and_members(members, dataset, tmp_path: Path):
    """TTA spread is 0 without TTA and equals the views' std by hand with it; member spread is the members' std;
    entropy is the Bernoulli entropy of the ensemble mean; the cache keeps the views' spread."""
    from lesion.infer.ensemble import activate
    from lesion.infer.tta import parse_tta

    plain = predict(members, dataset, tta="none", device="cpu").uncertainty()
    assert np.allclose(plain["tta_std"], 0.0)
    res = predict(members, dataset, tta="hflip", device="cpu")
    u = res.uncertainty()
    # by hand, member "a", first image: the two views' probabilities and their std
    from lesion.classify.models import normalize, prepare_image
    from lesion.data.io import read_image

    model, card = members[0]
    x = torch.from_numpy(normalize(prepare_image(read_image(dataset.records[0].image_path), card.preprocessing)[None],
                                   card.preprocessing))
    with torch.no_grad():
        views = [float(activate(model(v).numpy())[0, 0]) for v in parse_tta("hflip").augment(x)]
    assert res.view_std["a"][0, 0] == pytest.approx(np.std(views), abs=1e-6)
    stack = np.stack([p[:, 0] for p in res.member_probs.values()])
    assert np.allclose(u["member_std"], stack.std(axis=0)) and u["member_std"].max() > 0
    p = res.probs[:, 0]
    assert np.allclose(u["entropy"], -(p * np.log(p) + (1 - p) * np.log(1 - p)), atol=1e-9)
    assert {"tta_std", "member_std", "entropy"} <= set(res.to_frame().columns)
    first = _cached(members, dataset, tta="hflip", device="cpu", cache_root=tmp_path)
    again = _cached(members, dataset, tta="hflip", device="cpu", cache_root=tmp_path)
    assert all("from cache" in n for n in again.notes)
    assert np.allclose(again.uncertainty()["tta_std"], first.uncertainty()["tta_std"])
    assert np.allclose(again.uncertainty()["tta_std"], u["tta_std"], atol=1e-6)
