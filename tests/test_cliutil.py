"""lesion.cliutil: the one-line-error parser every command uses, and the strict JSON summary line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lesion.cliutil import OneLineParser, json_line


def test_parser_errors_are_one_line_with_exit_code_2(capsys):
    p = OneLineParser(prog="lesion x")
    p.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lesion x: error: argument --n") and "(see lesion x --help)" in err


def test_the_commands_share_the_one_parser():
    from lesion.data import demo
    from lesion.segment import evaluate
    from lesion.train.options import OptionParser

    assert OptionParser is OneLineParser
    assert isinstance(evaluate._parser(), OneLineParser)
    assert "OneLineParser(" in open(demo.__file__).read()


def test_json_line_writes_nan_as_null():
    line = json_line({"auc": float("nan"), "ci": [np.float32(0.5), float("inf")], "n": np.int64(3), "ok": (1, None)})
    assert "\n" not in line
    assert json.loads(line) == {"auc": None, "ci": [0.5, None], "n": 3, "ok": [1, None]}
