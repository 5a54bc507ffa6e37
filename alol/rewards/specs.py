"""Reward specs: the strings, dicts and lists of a config that name a reward, and the reward
each builds (see `alol.rewards` for the forms)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from alol.rewards.base import CallableReward, RewardError
from alol.rewards.classifier import ClassifierReward
from alol.rewards.gated import GatedReward
from alol.rewards.scorers import SCORERS
from alol.rewards.weighted import WeightedSum

RewardSpec = str | dict | list
BuiltReward = CallableReward | ClassifierReward | WeightedSum | GatedReward
GATED_PARTS = ("term", "gate")

PATH_OF = {
    "callable": "'package.module:function' or 'path/to/file.py:function'",
    "classifier": "the folder of a sequence classifier",
}
"""What the 'path' of each reward type that needs one names."""


def load_reward(spec: RewardSpec) -> BuiltReward:
    """Build the reward a spec describes (see the module docstring for the forms)."""
    return _build(normalize_spec(spec))


def normalize_spec(spec: RewardSpec) -> dict[str, Any]:
    """Every spec form as a dict with a "type"; a sum's terms become {"spec": ..., "weight": ...}."""
    if isinstance(spec, str):
        if spec in SCORERS:
            return {"type": spec}
        if ":" in spec:
            return {"type": "callable", "path": spec}
        if Path(spec).is_dir():
            return {"type": "classifier", "path": spec}
        raise ValueError(
            f"unknown reward {spec!r}: give a built-in scorer ({', '.join(SCORERS)}), "
            "'package.module:function', 'path/to/file.py:function' or the folder of a "
            "sequence classifier"
        )
    if isinstance(spec, list | tuple):
        return {"type": "sum", "components": [_normalize_term(term) for term in spec]}
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if not isinstance(kind, str):
            raise ValueError(
                f"reward spec {dict(spec)!r} needs a 'type': {', '.join(map(repr, BUILDERS))} "
                f"or a built-in scorer ({', '.join(SCORERS)})"
            )
        if kind in PATH_OF and not isinstance(spec.get("path"), str):
            raise ValueError(f"reward spec {dict(spec)!r} needs a 'path': {PATH_OF[kind]}")
        normalized = dict(spec)
        if kind == "gated":
            missing = [part for part in GATED_PARTS if not spec.get(part)]
            if missing:
                raise ValueError(
                    f"a gated reward needs {' and '.join(repr(p) for p in missing)}: "
                    "{'type': 'gated', 'term': SPEC, 'gate': SPEC} scores term × gate, the gate "
                    "a reward in [0, 1] (e.g. a classifier of the prompt)"
                )
            normalized.update((part, normalize_spec(spec[part])) for part in GATED_PARTS)
        if normalized["type"] == "sum":
            terms = normalized.get("components")
            if not isinstance(terms, list | tuple) or not terms:
                raise ValueError("a sum reward needs 'components': a non-empty list of specs")
            normalized["components"] = [_normalize_term(term) for term in terms]
        return normalized
    raise ValueError(
        f"a reward spec is a string, a dict or a list, got a {type(spec).__name__}: {spec!r}"
    )


def _normalize_term(term: RewardSpec) -> dict[str, Any]:
    if not (isinstance(term, Mapping) and ("spec" in term or "weight" in term)):
        return {"spec": normalize_spec(term), "weight": 1.0}
    if "spec" not in term:
        raise ValueError(
            f"sum component {dict(term)!r} has a 'weight' but no 'spec'; write it as "
            "{'spec': ..., 'weight': w, 'name': n}"
        )
    unknown = sorted(set(term) - {"spec", "weight", "name"})
    if unknown:
        raise ValueError(
            f"a sum component has unknown keys {unknown}; use 'spec', 'weight', 'name'"
        )
    spec = normalize_spec(term["spec"])
    if term.get("name") is not None:
        spec["name"] = term["name"]
    weight = term.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not math.isfinite(weight)
    ):
        raise ValueError(f"the weight of a sum component must be a finite number, got {weight!r}")
    return {"spec": spec, "weight": float(weight)}


def reward_name(spec: RewardSpec) -> str:
    """The name the reward a spec builds carries, known without loading any weights: its
    'name', else the scorer, the classifier's folder or the name the function is imported by
    (read from the reference, so a reward's file is imported once, when the reward is built)."""
    normalized = normalize_spec(spec)
    if normalized.get("name"):
        return normalized["name"]
    kind = normalized["type"]
    if kind == "classifier":
        return Path(normalized["path"]).name
    if kind == "callable":
        return normalized["path"].rpartition(":")[2]
    return kind


def nested_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The normalised specs a composite (normalised) spec is made of: a sum's terms, a gated
    reward's term and gate; none for any other."""
    if spec["type"] == "sum":
        return [term["spec"] for term in spec["components"]]
    if spec["type"] == "gated":
        return [spec[part] for part in GATED_PARTS]
    return []


def _build(spec: dict[str, Any]) -> BuiltReward:
    options = dict(spec)
    kind = options.pop("type")
    options["name"] = reward_name(spec)
    if kind in SCORERS:
        name = options.pop("name")
        scorer = _construct(SCORERS[kind], options, f"the {kind!r} scorer")
        return CallableReward(scorer, name, components=(name,))
    if kind not in BUILDERS:
        raise ValueError(
            f"unknown reward type {kind!r}; use {', '.join(map(repr, BUILDERS))} or a built-in "
            f"scorer ({', '.join(SCORERS)})"
        )
    return _construct(BUILDERS[kind], options, f"a {kind!r} reward")


def _construct(factory: Callable, options: dict[str, Any], what: str):
    """Call `factory(**options)`, first naming any option it does not take or needs and lacks."""
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"{what} has no option {unknown}; its options are {list(parameters)}")
    missing = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in options
    ]
    if missing:
        raise ValueError(f"{what} needs the option {missing}")
    return factory(**options)


def _callable_reward(path: str, name: str, kwargs: dict[str, Any] | None = None) -> CallableReward:
    function = load_callable(path)
    if kwargs:
        function = partial(function, **kwargs)
    return CallableReward(function, name)


def _sum_reward(components: list[dict[str, Any]], name: str) -> WeightedSum:
    return WeightedSum([(_build(term["spec"]), term["weight"]) for term in components], name)


def _gated_reward(term: dict[str, Any], gate: dict[str, Any], name: str) -> GatedReward:
    return GatedReward(_build(term), _build(gate), name)


BUILDERS: dict[str, Callable[..., BuiltReward]] = {
    "callable": _callable_reward,
    "classifier": ClassifierReward,
    "sum": _sum_reward,
    "gated": _gated_reward,
}
"""Each reward type (besides the built-in scorers) → what builds it from the spec's options."""


def load_callable(reference: str) -> Callable:
    """Import the function that `package.module:function` or `path/to/file.py:function` names."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise ValueError(
            f"reward {reference!r} must look like 'package.module:function' or 'path/to/file.py:function'"
        )
    module = _load_file(Path(target)) if is_file_target(target) else _import(target, reference)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"reward {reference!r}: {target} has no function named {attribute!r}")
    return function


def is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(module: str, reference: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"reward {reference!r}: cannot import module {module!r} ({error}); install it or add "
            "its directory to PYTHONPATH, or name a file as 'path/to/file.py:function'"
        ) from error


def _load_file(path: Path):
    """Import a .py file as a module of its own (registered so pickling and dataclasses work)."""
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"reward file {path} not found (a relative path is resolved from the current "
            f"directory, {Path.cwd()})"
        )
    module_name = f"_alol_reward_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[module_name]
        raise RewardError(
            f"reward file {path}:{error.lineno}: syntax error: {error.msg}"
            + (f" in {error.text.strip()!r}" if error.text else "")
        ) from None
    except Exception as error:
        del sys.modules[module_name]
        raise RewardError(
            f"reward file {path} raised {type(error).__name__} while being imported: {error}"
        ) from error
    return module
