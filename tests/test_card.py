"""The model card: one typed, frozen schema; old cards through one converter; the shipped cards migrated."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from lesion.card import EXTERNAL, SCHEMA_VERSION, DataSource, Metric, ModelCard, Preprocessing, from_v1
from lesion.data.licences import LICENCES
from lesion.errors import CheckpointError
from lesion.paths import WEIGHTS_DIR
from lesion.weights import list_weights, read_card

FIXTURES = Path(__file__).parent / "fixtures"


def _v1(name: str) -> dict:
    return json.loads((FIXTURES / f"card_v1_{name}.json").read_text())


def test_card_is_frozen_and_roundtrips_through_json():
    card = ModelCard(name="m", task="classification", classes=("melanoma",), preprocessing=Preprocessing(size=64),
                     data=(DataSource("HAM10000", licences=(LICENCES["ham10000"],)),),
                     metrics=(Metric("auc", 0.81, "HAM10000", n=100, ci=(0.7, 0.9)),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.name = "other"  # type: ignore[misc]
    d = card.to_dict()
    assert d["schema"] == SCHEMA_VERSION and list(d)[0] == "schema" and "path" not in d
    assert ModelCard.from_dict(json.loads(json.dumps(d))) == card


def test_unknown_task_and_newer_schema_are_refused():
    with pytest.raises(CheckpointError, match="task 'detection'"):
        ModelCard(name="m", task="detection")
    with pytest.raises(CheckpointError, match="schema 99"):
        ModelCard.from_dict({"schema": 99, "name": "m", "task": "classification"})
    with pytest.raises(CheckpointError, match="does not follow schema"):
        ModelCard.from_dict({"schema": SCHEMA_VERSION, "name": "m", "task": "classification",
                             "metrics": [{"name": "auc"}]})


def test_v1_classifier_card_converts_with_every_number_and_its_data():
    old = _v1("classifier")
    card = from_v1(old)
    auc = card.metric("auc")
    assert auc.value == old["metrics"]["val_auc"] and auc.ci == tuple(old["metrics"]["val_auc_ci"])
    assert (auc.data, auc.split, auc.n) == ("HAM10000", "val", old["split"]["n_val"])
    ext = card.metric("auc", split="external")
    assert ext.value == old["metrics"]["external"]["auc"] and (ext.data, ext.n, ext.positives) == ("PH2", 200, 40)
    # the external set, once only a name under metrics, is a data source of its own, marked never trained on
    assert [(d.name, d.role) for d in card.data] == [("HAM10000", "train+val"), ("PH2", EXTERNAL)]
    assert card.trained_on[0].n_train == old["split"]["n_train"]
    # one licence text per data set, whichever trainer wrote the old card
    assert card.licences == (LICENCES["ham10000"], LICENCES["ph2"])
    assert card.training.best_epoch == old["metrics"]["best_epoch"] and card.training.epochs == old["epochs"]
    assert card.training.config == old["train_config"] and card.provenance.sha256 == old["sha256"]
    assert card.split.fold == 0 and card.split.n_splits == 5 and card.history == tuple(old["history"])
    assert card.preprocessing == Preprocessing(size=128, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_v1_segmentation_card_keeps_per_set_and_external_metrics():
    old = _v1("segmentation")
    card = ModelCard.from_dict(old)  # a schema-less dict goes through the converter
    pooled = card.headline()
    assert pooled.name == "iou" and pooled.value == old["metrics"]["val"]["iou"]
    assert pooled.data == "HAM10000 + Demo dermoscopy (synthetic)" and pooled.n == old["metrics"]["val"]["n"]
    ham = card.metric("iou", data="HAM10000")
    assert ham.value == old["metrics"]["val_by_set"]["HAM10000"]["iou"]
    assert ham.ci == tuple(old["metrics"]["val_by_set"]["HAM10000"]["iou_ci95"])
    ph2 = card.metric("dice", split="external", data="PH2")
    assert ph2.value == old["metrics"]["external"]["PH2"]["dice"]
    assert card.preprocessing.center_crop is False and card.preprocessing.threshold == 0.5
    assert card.provenance.command == old["command"] and card.provenance.versions == old["versions"]
    assert card.split.val_ids() >= set(old["split"]["sets"]["HAM10000"]["val_ids"])


def test_v1_chest_xray_card_keeps_per_label_auc_and_label_set():
    old = _v1("cxr")
    card = from_v1(old)
    assert card.multilabel and card.target == "tb" and card.classes == ("tuberculosis",)
    per = card.metric("auc", label="tuberculosis")
    block = old["metrics"]["val_per_label"]["tuberculosis"]
    assert (per.value, per.n, per.positives, per.ci) == (block["auc"], block["n"], block["positives"],
                                                         tuple(block["auc_ci"]))
    assert card.headline().name == "auc_mean" and card.headline().value == old["metrics"]["val_auc_mean"]
    assert card.extra["label_set"] == old["label_set"] and card.extra["pos_weight"] == old["pos_weight"]
    assert card.notes == old["notes"]


def test_every_shipped_card_is_migrated_and_still_matches_its_weights():
    cards = list_weights()
    assert len(cards) == len(list(WEIGHTS_DIR.glob("*.json")))
    for card in cards:
        raw = json.loads(Path(card.path).with_suffix(".json").read_text())
        assert raw["schema"] == SCHEMA_VERSION, card.name
        assert card.sha256 == hashlib.sha256(Path(card.path).read_bytes()).hexdigest(), card.name
        assert card.headline() is not None, f"{card.name}: no headline metric"
        assert card.licences, f"{card.name}: no licence"
        assert all(m.data for m in card.metrics), f"{card.name}: a metric without its data"
        assert read_card(Path(card.path).with_suffix(".json"), card.path) == card


def test_shipped_numbers_survive_the_migration():
    """The migrated cards hold the figures bench/RESULTS.md and the old cards reported."""
    by = {c.name: c for c in list_weights()}
    assert round(by["derm_unet_efficientnet_lite0"].metric("iou", split="external", data="PH2").value, 4) == 0.7988
    assert round(by["cxr_tb_efficientnet_lite0"].metric("auc", label="tuberculosis").value, 4) == 0.8833
    assert round(by["derm_cls_efficientnet_lite1_bce"].metric("auc").value, 4) == 0.845
    assert round(by["lung_unet_efficientnet_lite0"].metric("iou", data="Chest X-ray Masks and Labels").value, 4) == 0.9274


def test_domain_warning_names_both_domains():
    lung = ModelCard(name="lung_unet", task="segmentation", domain="cxr")
    msg = lung.domain_warning("derm")
    assert "lung_unet" in msg and "chest X-rays" in msg and "dermoscopy" in msg
    assert lung.domain_warning("cxr") is None and lung.domain_warning(None) is None
    assert ModelCard(name="x", task="classification").domain_warning("derm") is None  # domain unknown: no claim
