"""The held-out records of a model, rebuilt from its card, are exactly those its training run validated on."""
from __future__ import annotations

import pytest

from lesion.card import ModelCard, Split, Training
from lesion.data.spec import open_data
from lesion.errors import DataError
from lesion.train.cls import ClsTrainConfig, split_records, split_section
from lesion.train.heldout import held_out


@pytest.fixture(scope="module")
def demo():
    return open_data("demo:derm")


def test_kfold_classifier_split_is_rebuilt_from_the_card(demo):
    cfg = ClsTrainConfig(data="demo:derm", target="melanoma", split="kfold", n_splits=4, fold=2, seed=3)
    run = split_records(demo, cfg)  # what the training run validated on
    card = ModelCard(name="m", task="classification", target="melanoma", split=split_section(run.info),
                     training=Training(config={"target": "melanoma", "split": "kfold", "dedupe": True}))
    got = held_out(card, demo)
    assert [r.id for r in got.records] == [r.id for r in run.val] and got.matches_card
    assert {r.id for r in got.train} == {r.id for r in run.train}
    # another fold is another split, and the card's counts say so
    other = card.replace(split=split_section(split_records(demo, ClsTrainConfig(
        data="demo:derm", target="melanoma", split="kfold", n_splits=4, fold=1, seed=3)).info))
    assert {r.id for r in held_out(other, demo).records}.isdisjoint({r.id for r in got.records})
    lying = card.replace(split=Split(method="stratified_group_kfold", n_splits=4, fold=2, seed=3, n_val=1))
    assert not held_out(lying, demo).matches_card


def test_listed_ids_are_used_as_given(demo):
    ids = [r.id for r in demo.records[:7]]
    card = ModelCard(name="seg", task="segmentation", split=Split(sets={demo.name: {"val_ids": ids}}))
    got = held_out(card, demo)
    assert [r.id for r in got.records] == ids and got.matches_card and len(got.train) == len(demo.records) - 7
    missing = card.replace(split=Split(sets={demo.name: {"val_ids": ids + ["not_in_this_set"]}}))
    assert not held_out(missing, demo).matches_card


def test_a_card_without_a_split_is_an_error(demo):
    with pytest.raises(DataError, match="records no validation split"):
        held_out(ModelCard(name="bare", task="classification"), demo)
