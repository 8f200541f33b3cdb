"""Issue "labels that do not match the numbers" and the time estimate: pure helpers of the pages."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")

from lesion.card import ModelCard  # noqa: E402
from ui.scope import estimate_seconds, human_time  # noqa: E402
from ui.tables import PERFECT, auc_notes  # noqa: E402
from ui.trust import default_models, no_training_words, training_unknown  # noqa: E402


def test_perfect_separation_says_so_instead_of_a_1_1_ci():
    t = auc_notes(pd.DataFrame([{"model": "a", "auc": 1.0, "ci_lo": 1.0, "ci_hi": 1.0, "n": 20},
                                {"model": "b", "auc": 0.8, "ci_lo": 0.7, "ci_hi": 0.9, "n": 20}]))
    assert t.loc[0, "note"] == PERFECT and np.isnan(t.loc[0, "ci_lo"]) and np.isnan(t.loc[0, "ci_hi"])
    assert t.loc[1, "note"] == "" and t.loc[1, "ci_lo"] == 0.7


def test_none_trained_only_when_the_card_names_its_training_data():
    from lesion.card import DataSource

    named = ModelCard(name="shipped", task="classification", domain="derm",
                      data=(DataSource(name="HAM10000", source="HAM10000", role="train"),))
    imported = ModelCard(name="mine", task="classification", domain="derm",
                         extra={"source": "imported", "training_data_unknown": True})
    assert not training_unknown(named) and training_unknown(imported)
    assert no_training_words([named], None) == "none trained the model"
    words = no_training_words([imported], None)
    assert "none trained" not in words and "mine" in words and "unknown" in words
    assert "none trained" not in no_training_words([named, imported], None)


def test_time_estimate_from_measured_speed():
    assert estimate_seconds(848, [30.0], "d4") == pytest.approx(848 * 8 * 0.03)
    assert human_time(0.2) == "under a second" and human_time(40) == "40 s" and human_time(203) == "3.4 min"
    assert human_time(3 * 3600 + 600).endswith("h")


def test_classification_defaults_one_fast_member():
    from lesion.weights import list_weights

    cards = [c for c in list_weights(domain="derm") if c.task in ("classification", "multitask")]
    if not cards:
        pytest.skip("no derm classifiers shipped")
    assert len(default_models(cards, None)) == 1
