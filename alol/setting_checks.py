"""What value a setting accepts: its type (from its annotation) and its range or its choices.

YAML reads `learning_rate: 1e-4` as a string and a command line gives only strings, so every
value is turned into its setting's type here and checked, or refused with the setting's name,
its flag and the value, before any stage runs (not as a `TypeError` after the precompute).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from alol.errors import AlolError

STAGES = ("reward-model", "sft", "value", "advantage", "train", "online", "eval")
"""The subcommands a setting can belong to."""

NONE_WORDS = ("none", "null", "off")
"""How a YAML file or a command line spells "no value" for an optional setting."""


class ConfigError(AlolError, ValueError):
    """A setting's value has the wrong type or lies outside its range, or a config file cannot
    be read; the message names the setting and the value, or the file and line. A ValueError
    too, as a bad argument to a config class is in Python."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class Check:
    """The values a setting accepts beyond its type: a range, and named choices."""

    low: float | None = None
    high: float | None = None
    low_included: bool = True
    high_included: bool = True
    choices: tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        if isinstance(value, list):  # each value accepted, once; none is a choice (π_ref only)
            return len(set(value)) == len(value) and all(self.accepts(item) for item in value)
        if isinstance(value, str):
            return value in self.choices
        if self.low is not None and not (
            value >= self.low if self.low_included else value > self.low
        ):
            return False
        return self.high is None or (
            value <= self.high if self.high_included else value < self.high
        )

    def describe(self, many: bool = False) -> str:
        """What the check accepts, in words; `many`: for a list of such values."""
        parts = []
        if self.high is None and self.low is not None:
            parts.append(f"a number {'≥' if self.low_included else '>'} {self.low:g}")
        elif self.low is not None or self.high is not None:
            left = "[" if self.low_included else "("
            right = "]" if self.high_included else ")"
            parts.append(f"a number in {left}{self.low:g}, {self.high:g}{right}")
        if self.choices:
            choices = ", ".join(repr(choice) for choice in self.choices)
            parts.append(
                ("any of " if many else "one of ") + choices + (", each once" if many else "")
            )
        return " or ".join(parts)


def at_least(low: float) -> Check:
    return Check(low=low)


def above(low: float, or_one_of: tuple[str, ...] = ()) -> Check:
    return Check(low=low, low_included=False, choices=or_one_of)


def fraction(below_one: bool = False) -> Check:
    return Check(low=0.0, high=1.0, high_included=not below_one)


def between_open(low: float, high: float, high_included: bool = False) -> Check:
    return Check(low=low, high=high, low_included=False, high_included=high_included)


def one_of(*choices: str) -> Check:
    return Check(choices=choices)


def option(
    default: Any,
    help: str,
    stages: tuple[str, ...] = STAGES,
    check: Check | None = None,
    aliases: tuple[str, ...] = (),
    affects_results: bool = True,
    **kwargs: Any,
) -> Any:
    """A config field with its --help text, the subcommands that show it, the values it
    accepts beyond its type (`alol.setting_checks`), other flags that set it, and whether it
    changes what a stage produces (False: where or how fast it runs, and what it reports),
    which decides whether it enters the stage's fingerprint."""
    factory = kwargs.pop("default_factory", None)
    metadata = {
        "help": help,
        "stages": stages,
        "check": check,
        "aliases": aliases,
        "affects_results": affects_results,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def same_as(owner: type, name: str) -> Any:
    """A field of another config class with the default and help text `owner` declares for the
    setting `name`, and no other metadata: how a `TrainingArguments` subclass (whose metadata
    argparse reads) takes a setting declared once elsewhere."""
    declared = next(f for f in dataclasses.fields(owner) if f.name == name)
    metadata = {"help": declared.metadata["help"]}
    if declared.default_factory is not dataclasses.MISSING:
        return field(default_factory=declared.default_factory, metadata=metadata)
    return field(default=declared.default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_settings(config: Any, owner: type | None = None, skip: tuple[str, ...] = ()) -> None:
    """Give every field of the dataclass `config` (or only those `owner` declares, but `skip`)
    its annotated type, then check its range; the first value that fits neither is refused
    with a `ConfigError` naming it."""
    hints = typing.get_type_hints(type(config))
    for config_field in dataclasses.fields(owner or config):
        name = config_field.name
        if name in skip:
            continue
        value = _typed(name, hints[name], getattr(config, name))
        check = config_field.metadata.get("check")
        if value is not None and check is not None and not check.accepts(value):
            expected = check.describe(many=isinstance(value, list))
            refusal = _refusal(name, value, expected)
            if type(None) in _members(hints[name]):
                refusal += f"; '{NONE_WORDS[0]}' ({name}=None in Python) turns it off"
            raise ConfigError(refusal, name)
        setattr(config, name, value)


def _typed(name: str, annotation: Any, value: Any) -> Any:
    if annotation is Any:
        return value
    members = _members(annotation)
    optional = type(None) in members
    if value is None or (optional and isinstance(value, str) and value.lower() in NONE_WORDS):
        if optional:
            return None
        raise ConfigError(_refusal(name, value, "a value (this setting has no 'none')"), name)
    for member in members:
        converted = _convert(member, value)
        if converted is not None:
            return converted
    expected = " or ".join(
        _TYPE_NAMES.get(m, getattr(m, "__name__", str(m))) for m in members if m is not type(None)
    )
    raise ConfigError(_refusal(name, value, expected), name)


def _members(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _convert(kind: Any, value: Any) -> Any:
    """`value` as `kind`, or None when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    if isinstance(value, bool):
        return None  # true is not the number 1 here
    if kind is int:
        number = _number(value)
        return int(number) if number is not None and float(number).is_integer() else None
    if kind is float:
        number = _number(value)
        return None if number is None or not math.isfinite(number) else float(number)
    if kind is str:
        return value if isinstance(value, str) else None
    if typing.get_origin(kind) is list:
        any_item = typing.get_args(kind) == (Any,)
        items = (
            [value] if isinstance(value, str) or (any_item and isinstance(value, dict)) else value
        )
        return (
            list(items)
            if isinstance(items, list | tuple)
            and (any_item or all(isinstance(i, str) for i in items))
            else None
        )
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _refusal(name: str, value: Any, expected: str) -> str:
    return f"setting {name!r} ({flag(name)}): expected {expected}, got {value!r}"
