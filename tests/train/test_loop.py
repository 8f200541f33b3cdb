"""The shared training loop on a one-weight problem whose answers can be worked out by hand.

The recipe's "training" adds 1 to the single weight at each of its 3 optimiser steps per epoch, and its
validation score is a fixed function of that weight, so the best epoch, the stop and the saved weight are
known in advance. The loop under test (:func:`lesion.train.loop.fit`) is the real one.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch

from lesion.card import ModelCard
from lesion.errors import ConfigError
from lesion.train.loop import LoopConfig, fit, monitor_score, out_stem

STEPS = 3


class CountingRecipe:
    """weight = 3 * epochs trained; val_score read from ``scores`` by epoch (through the weight)."""

    def __init__(self, scores, clock=None, seconds_per_epoch=0.0):
        self.model = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.zero_()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.steps_per_epoch = STEPS
        self.scores = scores
        self.clock = clock
        self.seconds_per_epoch = seconds_per_epoch
        self.validated = []  # (epoch as the weight says, model given to validate, its weight)

    def train_epoch(self, epoch, after_step):
        for _ in range(STEPS):
            with torch.no_grad():
                self.model.weight += 1.0
            after_step()
        if self.clock is not None:
            self.clock.now += self.seconds_per_epoch
        return {"train_loss": 1.0 / epoch}

    def validate(self, model):
        w = float(model.weight.detach())
        self.validated.append((model, w))
        epoch = round(float(self.model.weight.detach()) / STEPS)
        return {"val_loss": 0.0, "val_score": self.scores[epoch - 1]}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_early_stopping_keeps_the_best_epochs_weights_and_counts_steps():
    # best at epoch 2 (0.7); epochs 3, 4, 5 bring no gain -> patience 3 stops after epoch 5
    recipe = CountingRecipe([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    calls = []
    res = fit(recipe, LoopConfig(epochs=6, monitor="val_score", patience=3), progress=lambda d, t: calls.append((d, t)))
    assert res.stop_reason == "patience" and res.epochs == 5 and res.best_epoch == 2 and res.best_score == 0.7
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]
    assert [h["val_score"] for h in res.history] == [0.5, 0.7, 0.6, 0.65, 0.69]
    assert float(recipe.model.weight.detach()) == 2 * STEPS  # the weights of epoch 2, not of the last epoch (15)
    assert not recipe.model.training
    # one unit (optimiser steps of the whole run): 1..15 one by one, then the run is done: (18, 18)
    assert calls == [(i, 6 * STEPS) for i in range(1, 5 * STEPS + 1)] + [(18, 18)]
    assert all(h["lr"] == pytest.approx(0.1) and h["time_s"] >= 0 for h in res.history)


def test_without_patience_every_epoch_runs():
    recipe = CountingRecipe([0.5, 0.4, 0.3])
    res = fit(recipe, LoopConfig(epochs=3, monitor="val_score", patience=0))
    assert res.stop_reason == "epochs" and res.epochs == 3 and res.best_epoch == 1
    assert float(recipe.model.weight.detach()) == STEPS


def test_time_budget_stops_after_the_epoch_that_passes_it():
    clock = FakeClock()
    recipe = CountingRecipe([0.1 * i for i in range(1, 11)], clock=clock, seconds_per_epoch=10.0)
    calls = []
    res = fit(recipe, LoopConfig(epochs=10, monitor="val_score", max_minutes=0.5), clock=clock,
              progress=lambda d, t: calls.append((d, t)))
    # 30 s budget: after epoch 3 the clock reads 30 (not past it), after epoch 4 it reads 40
    assert res.stop_reason == "time" and res.epochs == 4 and res.best_epoch == 4
    assert [h["time_s"] for h in res.history] == [10.0, 20.0, 30.0, 40.0]
    assert [h["epoch_s"] for h in res.history] == [10.0] * 4
    assert calls[-1] == (30, 30) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_ema_is_what_is_validated_and_kept():
    recipe = CountingRecipe([0.5, 0.9, 0.1])
    res = fit(recipe, LoopConfig(epochs=3, monitor="val_score", ema_decay=0.5))
    models = {id(m) for m, _ in recipe.validated}
    assert len(models) == 1 and id(recipe.model) not in models  # the EMA copy, every epoch
    ema_weights = [w for _, w in recipe.validated]
    assert all(0 < w < (i + 1) * STEPS for i, w in enumerate(ema_weights))  # an average lags the weights
    assert res.best_epoch == 2 and float(recipe.model.weight.detach()) == pytest.approx(ema_weights[1])


def test_run_folder_gets_the_log_and_the_running_best_checkpoint(tmp_path):
    recipe = CountingRecipe([0.5, 0.7, 0.6])
    card = ModelCard(name="counting", task="classification")
    fit(recipe, LoopConfig(epochs=3, monitor="val_score"), run_dir=tmp_path / "run", card=card)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and float(rows[1]["val_score"]) == 0.7
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["extra"]["status"] == "running" and best["training"]["best_epoch"] == 2
    assert len(best["history"]) == 2  # written when epoch 2 became the best


def test_monitor_falls_back_to_minus_val_loss():
    assert monitor_score({"val_auc": float("nan"), "val_loss": 0.3}, "val_auc") == -0.3
    assert monitor_score({"val_auc": 0.8, "val_loss": 0.3}, "val_auc") == 0.8


def test_zero_epochs_is_refused():
    with pytest.raises(ConfigError):
        fit(CountingRecipe([]), LoopConfig(epochs=0, monitor="val_score"))


def test_out_stem(tmp_path):
    assert out_stem("", "n") is None and out_stem("", "n", tmp_path) == tmp_path / "n"
    assert out_stem(str(tmp_path), "n") == tmp_path / "n" and out_stem("w/x", "n").as_posix() == "w/x"
    assert out_stem("w/", "n").as_posix() == "w/n"
