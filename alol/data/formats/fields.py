"""Checks of single fields, shared by the parsers and the CSV reader: each returns the value
in the type a record holds, or raises DataError naming the field and what was found."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alol.data.records import Prompt
from alol.errors import DataError
from alol.reports.metrics import counted

logger = logging.getLogger(__name__)

IMPLAUSIBLE_REWARD = 1e6
"""A reward this large in magnitude is almost surely a slip (units, a parse, a sentinel): every
loss scales with R or A = R − V, so training diverges or overflows, half precision first."""


@dataclass(frozen=True)
class ParseOptions:
    hh_reward: str
    allow_empty_responses: bool


def required(obj: dict[str, Any], name: str, hint: str) -> Any:
    if obj.get(name) is None:
        raise DataError(f"required field is missing; {hint}", field=name)
    return obj[name]


def as_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type_name(value)}", field=name)
    return value


def as_list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"expected a list, got {type_name(value)}", field=name)
    return value


def as_prompt(value: Any, name: str) -> Prompt:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return as_messages(value, name)
    raise DataError(
        f"expected a string or a list of {{role, content}} messages, got {type_name(value)}",
        field=name,
    )


def as_messages(value: list, name: str) -> list[dict[str, str]]:
    """Chat messages, keeping only role and content (the parts a chat template renders)."""
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(
                f"expected a {{role, content}} message, got {type_name(message)}",
                field=f"{name}[{i}]",
            )
        for key in ("role", "content"):
            as_text(message.get(key), f"{name}[{i}].{key}")
    return [{"role": message["role"], "content": message["content"]} for message in value]


def as_response(value: Any, name: str, options: ParseOptions) -> str:
    """Response text; a conversational response is a list holding one assistant message."""
    if isinstance(value, list):
        messages = as_messages(value, name)
        roles = [message["role"] for message in messages]
        if roles != ["assistant"]:
            raise DataError(
                f"expected one assistant message as the response, got roles {roles}", field=name
            )
        value = messages[0]["content"]
    text = as_text(value, name)
    if not text.strip() and not options.allow_empty_responses:
        raise DataError(
            "empty response; remove the record or skip it (alol: --skip-invalid; load_records: "
            "skip_invalid=True, or allow_empty_responses=True to train on empty replies)",
            field=name,
        )
    return text


def warn_of_implausible_rewards(rewards: Sequence[float], sources: Sequence[str], origin: str):
    """One warning naming how many rewards are implausibly large and the first one's record."""
    large = [(s, r) for s, r in zip(sources, rewards, strict=True) if abs(r) >= IMPLAUSIBLE_REWARD]
    if large:
        logger.warning(
            "%s: %s of magnitude %g or more (first: %s, %g); every loss scales with the reward, "
            "so training would diverge or overflow: rescale the rewards (to [0, 1], say)",
            origin,
            counted(len(large), "reward"),
            IMPLAUSIBLE_REWARD,
            *large[0],
        )


def as_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"expected a number, got {type_name(value)}", field=name)
    try:
        number = float(value)
    except OverflowError:
        raise DataError("number too large", field=name) from None
    if not math.isfinite(number):
        raise DataError(f"must be a finite number, got {number}", field=name)
    return number


def as_reward(value: Any, name: str) -> float | dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if not value:
            raise DataError("no components; give a number or {component: number, ...}", field=name)
        return {str(key): as_number(component, f"{name}.{key}") for key, component in value.items()}
    return as_number(value, name)


def as_record_group(obj: dict[str, Any]) -> str | None:
    value = obj.get("group")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise DataError(f"expected a non-empty string or an integer, got {value!r}", field="group")
    return str(value)


def as_record_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"expected a string or an integer, got {type_name(value)}", field="id")
    return str(value)


def check_candidates(
    responses: list, rewards: list, responses_name: str, rewards_name: str
) -> None:
    if not responses:
        raise DataError("no responses; a ranked record needs at least one", field=responses_name)
    if len(responses) != len(rewards):
        raise DataError(
            f"{len(responses)} responses but {len(rewards)} rewards; give one reward per response",
            field=rewards_name,
        )


def looks_like_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(message, dict) and {"role", "content"} <= message.keys() for message in value
    )


def type_name(value: Any) -> str:
    """JSON's names for types, as the user wrote the data in JSON terms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Real):
        return "a number"
    names = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def clip_text(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
