"""Command-line options come from the config dataclasses: same spelling in every trainer, round trip exact."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace

import pytest

from lesion.train import cls, cxr, seg
from lesion.train.options import (
    add_config_options,
    config_argv,
    config_from_namespace,
    describe,
    docstring_attributes,
    field_help,
)


@dataclass(frozen=True)
class Toy:
    """A toy config.

    Attributes:
        data: where from,
            over two lines.
        n: how many.
        on: a switch.
    """

    data: tuple[str, ...] = ("a",)
    n: int = 3
    on: bool = True
    mode: str = field(default="x", metadata={"choices": ("x", "y"), "help": "the mode"})


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_options(p, Toy)
    return config_from_namespace(Toy, p.parse_args(argv))


def test_fields_become_options():
    assert docstring_attributes(Toy) == {"data": "where from, over two lines.", "n": "how many.", "on": "a switch."}
    assert field_help(Toy)["mode"] == "the mode"
    assert _parse([]) == Toy()
    assert _parse(["--data", "b", "--data", "c", "--n", "5", "--no-on", "--mode", "y"]) == Toy(("b", "c"), 5, False, "y")
    with pytest.raises(SystemExit):
        _parse(["--mode", "z"])


@pytest.mark.parametrize("cfg", [
    seg.SegTrainConfig(data=("demo:derm", "x"), batch_size=3, augment=0.5, overwrite=True, out="w/a", lr=3e-4),
    cls.ClsTrainConfig(data="d", center_crop=False, ema_decay=0.99, external=("p",), target="dx7", out="o"),
    cxr.CxrTrainConfig(data=("a", "b"), hflip=True, labels="tb", max_minutes=1.5),
], ids=["seg", "cls", "cxr"])
def test_config_argv_round_trips(cfg):
    parse = {seg.SegTrainConfig: seg.config_from_argv, cls.ClsTrainConfig: cls.config_from_argv,
             cxr.CxrTrainConfig: cxr.config_from_argv}[type(cfg)]
    back, _ = parse(config_argv(cfg))
    assert replace(back, command="") == cfg


def test_every_trainer_spells_the_shared_options_the_same_way():
    parsers = {"seg": seg.build_parser(), "cls": cls._parser(), "cxr": cxr._parser()}
    shared = {"--data", "--out", "--epochs", "--batch-size", "--patience", "--max-minutes", "--lr", "--seed",
              "--device", "--overwrite", "--ema-decay", "--runs-dir", "--init", "--size", "--loss", "--arch",
              "--weight-decay", "--max-images", "--no-aug", "--threads"}
    for name, p in parsers.items():
        assert shared <= set(p._option_string_actions), (name, shared - set(p._option_string_actions))
    for cfg_cls in (seg.SegTrainConfig, cls.ClsTrainConfig, cxr.CxrTrainConfig):
        undocumented = [opt for opt, text in describe(cfg_cls).items() if not text]
        assert not undocumented, (cfg_cls.__name__, undocumented)
