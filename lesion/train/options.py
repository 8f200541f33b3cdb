"""Command-line options made from a frozen config dataclass, so every ``lesion train …`` spells a field the same way.

One option per field, like ``ui/forms.py`` makes one widget per field: the name is the field's with ``_`` as
``-`` (``batch_size`` -> ``--batch-size``), the type and default are the field's, the help is the field's
``metadata["help"]`` or its line in the class docstring's ``Attributes:`` section, and the choices come from
``metadata["choices"]`` or a ``Literal`` hint. By type:

* ``bool``: ``--flag`` / ``--no-flag`` (``argparse.BooleanOptionalAction``);
* ``int`` / ``float`` / ``str`` (also ``str | None``): ``--name VALUE``;
* ``tuple[str, ...]``: ``--name VALUE`` repeatable (``--data A --data B``);
* nested dataclasses and fields with ``init=False`` get no option (a recipe adds its own, e.g. ``--no-aug``).

Every trainer also takes ``--threads`` and ``--no-aug`` (:func:`add_common_options`), and its
``metadata["aliases"]`` keep the old spellings working (``--ema`` for ``--ema-decay``).
A parsed namespace becomes the config with :func:`config_from_namespace`; :func:`config_argv` goes the
other way: the options that rebuild a config, which the card records as the
command of a run started from Python.

**Ranges** are part of the field too, so the CLI and a Python caller get the same check from one rule:
``metadata`` keys ``min`` / ``max`` (inclusive), ``gt`` / ``lt`` (exclusive) and ``why`` (a reason added to
the message). A config calls :func:`check_config` in its ``__post_init__``: a bad value raises
:class:`~lesion.errors.ConfigError` naming the option (``--batch-size must be >= 1, got 0.``), which the CLI
prints as one line with exit code 2, before anything is read or trained. :class:`OptionParser` makes
argparse's own errors (a word where a number goes, an unknown choice) one line with exit code 2 as well.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Iterable, Mapping, Sequence

from lesion.cliutil import OneLineParser
from lesion.errors import ConfigError, unknown_option

#: Value of ``--no-aug`` given without a list: switch every augmentation off.
ALL = "all"


#: Field-metadata keys of a range rule (see the module docstring).
RANGE_KEYS = ("min", "max", "gt", "lt")


#: The trainers' parser: :class:`lesion.cliutil.OneLineParser` (one-line errors, exit code 2), under its old name.
OptionParser = OneLineParser


def range_problem(value: Any, rule: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under ``rule`` (keys of :data:`RANGE_KEYS`), e.g. ``'must be >= 1'``; None if fine."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if isinstance(value, float) and value != value:
        return "must be a number (not NaN)"
    parts = []
    lo = [(">=", rule["min"])] if "min" in rule else [(">", rule["gt"])] if "gt" in rule else []
    hi = [("<=", rule["max"])] if "max" in rule else [("<", rule["lt"])] if "lt" in rule else []
    bad = False
    for op, bound in lo + hi:
        parts.append(f"{op} {bound}")
        bad |= {">=": value < bound, ">": value <= bound, "<=": value > bound, "<": value >= bound}[op]
    if not bad:
        return None
    if lo and hi:
        return f"must be {parts[0]} and {parts[1]}"
    return f"must be {parts[0]}"


def check_value(option: str, value: Any, rule: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` ``'<option> must be …, got <value>.'`` when ``value`` breaks ``rule``.

    The one range check of lesion-lab's options: :func:`check_config` applies it to config fields, and the
    parsers without a config (``lesion export``) call it directly.
    """
    problem = range_problem(value, rule)
    if problem:
        why = f" ({rule['why']})" if rule.get("why") else ""
        raise ConfigError(f"{option} {problem}, got {value!r}{why}.")


def check_config(cfg: Any) -> None:
    """Check every field of the config dataclass ``cfg`` against its type and range rule (``metadata``).

    Numbers must be numbers of the field's type (an ``int`` field takes no ``2.5`` or ``"big"``), and values
    within ``min`` / ``max`` / ``gt`` / ``lt``. Called from a config's ``__post_init__``, so a bad
    value fails when the config is made: on the command line and from Python alike.

    Raises:
        ConfigError: naming the option, the rule and the value.
    """
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, typ = getattr(cfg, f.name), _scalar(hints.get(f.name))
        opt = option_name(f.name)
        if typ in (int, float) and value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if typ is int and ok and isinstance(value, float):
                ok = value.is_integer()
            if not ok:
                kind = "a whole number" if typ is int else "a number"
                raise ConfigError(f"{opt} must be {kind}, got {value!r}.")
        rule = {k: f.metadata[k] for k in (*RANGE_KEYS, "why") if k in f.metadata}
        if rule:
            check_value(opt, value, rule)


def plain_name(option: str, value: str) -> None:
    """A name that becomes a file name (``--name``): no folder separators, no leading dot.

    Raises:
        ConfigError: otherwise.
    """
    if value and (any(c in value for c in "/\\") or value.startswith(".") or value.strip() != value):
        raise ConfigError(f"{option} must be a plain file name (no '/', no leading '.'), got {value!r}; "
                          "use --out for a folder.")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def docstring_attributes(cls: type) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of a Google-style class docstring (continuation lines joined)."""
    doc = cls.__doc__ or ""
    m = re.search(r"^\s*Attributes:\s*$", doc, flags=re.M)
    if not m:
        return {}
    out: dict[str, str] = {}
    current = None
    indent = None
    for line in doc[m.end():].splitlines():
        if not line.strip():
            continue
        ind = len(line) - len(line.lstrip())
        if indent is None:
            indent = ind
        if ind < indent:
            break
        item = re.match(r"\s*(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if ind == indent and item:
            current = item.group(1)
            out[current] = item.group(2).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def field_help(cls: type) -> dict[str, str]:
    """Help text per field: ``metadata["help"]`` first, else the docstring's ``Attributes:`` line."""
    doc = docstring_attributes(cls)
    return {f.name: str(f.metadata.get("help") or doc.get(f.name, "")) for f in dataclasses.fields(cls)}


def _choices(cls: type, f: dataclasses.Field) -> list | None:
    if "choices" in f.metadata:
        return list(f.metadata["choices"])
    hint = _hints(cls).get(f.name)
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    return None


def _scalar(hint: Any) -> type | None:
    """``int`` / ``float`` / ``str`` / ``bool`` of a hint (``X | None`` -> ``X``), else None."""
    if hint in (int, float, str, bool):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar(args[0])
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0])
    return None


def _is_str_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (str,)


def option_name(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def config_options(cls: type) -> list[str]:
    """The fields of ``cls`` that have an option (in field order)."""
    hints = _hints(cls)
    return [f.name for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)
            and (_scalar(hints[f.name]) is not None or _is_str_tuple(hints[f.name]))]


def add_config_options(parser: argparse.ArgumentParser, cls: type, required: Iterable[str] = ()) -> None:
    """Add one option per field of the frozen dataclass ``cls`` (see the module docstring).

    Args:
        parser: where to add them.
        cls: the config dataclass; its defaults are the options' defaults.
        required: fields that must be given (e.g. ``data`` when the config has no default data).
    """
    hints, helps, required = _hints(cls), field_help(cls), set(required)
    names = set(config_options(cls))
    for f in dataclasses.fields(cls):
        if f.name not in names:
            continue
        hint, default = hints[f.name], _default(f)
        flags = [option_name(f.name), *f.metadata.get("aliases", ())]
        help_text = helps[f.name] or None
        rule = {k: f.metadata[k] for k in RANGE_KEYS if k in f.metadata}
        if help_text and rule:
            bounds = [f"{op} {rule[k]}" for k, op in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
                      if k in rule]
            help_text = f"{help_text} [{', '.join(bounds)}]"
        kw: dict[str, Any] = {"dest": f.name, "help": help_text}
        if _is_str_tuple(hint):
            kw.update(action="append", default=None, metavar=f.name.upper())
            if default:
                kw["help"] = f"{help_text or ''} (repeatable; default {' '.join(map(str, default))})".strip()
            else:
                kw["help"] = f"{help_text or ''} (repeatable)".strip()
            if f.name in required:
                kw["required"] = True
        elif _scalar(hint) is bool:
            kw.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            typ = _scalar(hint)
            kw.update(type=typ, default=default if default is not None else ("" if typ is str else None))
            choices = _choices(cls, f)
            if choices is not None:
                kw["choices"] = choices
            if f.name in required:
                kw["required"] = True
            if help_text and default not in (None, ""):
                kw["help"] = f"{help_text} (default %(default)s)"
        parser.add_argument(*flags, **kw)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def config_from_namespace(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The ``cls`` instance an argparse namespace made by :func:`add_config_options` describes.

    A repeatable option not given keeps the field's default; ``overrides`` (fields the options do not
    cover, such as a nested augmentation config or the command line) win over everything.
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name in config_options(cls):
        if not hasattr(args, name):
            continue
        v = getattr(args, name)
        if _is_str_tuple(hints[name]):
            if v is None:
                continue
            v = tuple(v)
        values[name] = v
    values.update(overrides)
    return cls(**values)


def config_argv(cfg: Any, skip: Iterable[str] = ("command",)) -> list[str]:
    """The options that rebuild ``cfg`` with :func:`config_from_namespace` (fields left at their default omitted)."""
    cls, hints, skip = type(cfg), _hints(type(cfg)), set(skip)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    argv: list[str] = []
    for name in config_options(cls):
        if name in skip:
            continue
        value, default = getattr(cfg, name), _default(fields[name])
        if value == default:
            continue
        opt = option_name(name)
        if _is_str_tuple(hints[name]):
            for v in value:
                argv += [opt, str(v)]
        elif isinstance(value, bool):
            argv.append(opt if value else "--no-" + opt[2:])
        elif value is not None:
            argv += [opt, str(value)]
    return argv


def _non_negative_int(text: str) -> int:
    """argparse type of ``--threads``: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_common_options(parser: argparse.ArgumentParser, augmentations: Sequence[str] = ()) -> None:
    """Options every ``lesion train`` command takes that are not part of a recipe's config.

    ``--threads N``: torch CPU threads (0 = torch's default). ``--no-aug [LIST]``: train without
    augmentation; with a comma list (``flips,cutout``), switch off only those of ``augmentations``.
    """
    parser.add_argument("--threads", type=_non_negative_int, default=0, help="torch CPU threads (0 = torch's default)")
    listed = f"; or a comma list of: {', '.join(augmentations)}" if augmentations else ""
    parser.add_argument("--no-aug", nargs="?", const=ALL, default="", metavar="LIST",
                        help=f"train without augmentation{listed}")


def switched_off(no_aug: str, names: Sequence[str]) -> list[str]:
    """The augmentations ``--no-aug`` names (all of ``names`` for a bare ``--no-aug``).

    Raises:
        ConfigError: a name not in ``names`` (lists them).
    """
    off = [s.strip() for s in str(no_aug or "").split(",") if s.strip()]
    if ALL in off:
        return list(names)
    for n in off:
        if n not in names:
            raise unknown_option("augmentation", n, [ALL, *names])
    return off


def apply_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` when ``threads`` > 0."""
    if threads > 0:
        import torch  # heavy; only when asked

        torch.set_num_threads(threads)


def command_line(prog: str, argv: Sequence[str] | None, cfg: Any) -> str:
    """The command recorded in the card: the argv as typed, else the options that rebuild ``cfg``."""
    parts = list(argv) if argv is not None else config_argv(cfg)
    return " ".join([prog, *parts])


def describe(cls: type) -> Mapping[str, str]:
    """``{option: help}`` of every option of ``cls`` (for docs and tests)."""
    helps = field_help(cls)
    return {option_name(n): helps[n] for n in config_options(cls)}
