"""One parser per record kind, from a raw row to a record. They raise DataError with the field;
`load_records` adds the file and the line."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from alol.data.formats.fields import (
    ParseOptions,
    as_list,
    as_messages,
    as_number,
    as_prompt,
    as_record_group,
    as_record_id,
    as_response,
    as_reward,
    as_text,
    check_candidates,
    clip_text,
    required,
    type_name,
)
from alol.data.records import (
    CHOSEN_REWARD,
    REJECTED_REWARD,
    PreferenceRecord,
    Prompt,
    PromptRecord,
    RankedRecord,
    Record,
    RewardRecord,
)
from alol.errors import DataError

FILE_KINDS = ("auto", "reward", "preference", "ranked", "hh", "prompt")


HH_REWARDS = ("sigmoid", "raw")


HH_ROLES = {"<|prompter|>": "user", "<|assistant|>": "assistant"}


HH_ASSISTANT_MARKER = "<|assistant|>"


_REWARD_HINT = "a reward record needs 'prompt' and 'response' (or TRL's 'completion')"


_PREFERENCE_HINT = "a preference record needs 'prompt', 'chosen' and 'rejected'"


_RANKED_HINT = "a ranked record needs 'prompt', 'responses' and 'rewards'"


_HH_HINT = "an HH record needs 'prefix', 'suffix' and 'reward'"


def as_object(row: Any) -> dict[str, Any]:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object (one record), got {type_name(row)}")
    return row


def detect_kind(obj: dict[str, Any]) -> str:
    if "prefix" in obj and "suffix" in obj:
        return "hh"
    if "responses" in obj:
        return "ranked"
    if "chosen" in obj or "rejected" in obj:
        return "preference"
    if any(name in obj for name in ("response", "completion", "messages")):
        return "reward"
    if "prompt" in obj:
        return "prompt"
    raise DataError(
        f"cannot tell the record kind from its fields {clip_text(str(sorted(obj)))}; {_REWARD_HINT}, "
        f"{_PREFERENCE_HINT}, {_RANKED_HINT} (or pass kind=)"
    )


def _parse_reward(obj: dict[str, Any], options: ParseOptions) -> RewardRecord:
    if obj.get("prompt") is None and obj.get("messages") is not None:
        prompt, response = _split_conversation(obj["messages"], options)
    else:
        prompt = as_prompt(required(obj, "prompt", _REWARD_HINT), "prompt")
        name = _response_field_name(obj)
        response = as_response(obj[name], name, options)
    reward = as_reward(obj.get("reward"), "reward")
    label = obj.get("label")
    if label is not None:
        if reward is not None:
            raise DataError("both 'reward' and 'label' are set; keep one", field="label")
        reward = _label_reward(label)
    return RewardRecord(
        prompt, response, reward, as_record_id(obj), label=label, group=as_record_group(obj)
    )


def _response_field_name(obj: dict[str, Any]) -> str:
    present = [name for name in ("response", "completion") if obj.get(name) is not None]
    if len(present) == 2:
        raise DataError(
            "both 'response' and 'completion' are set ('completion' is TRL's name for 'response'); keep one",
            field="completion",
        )
    if not present:
        raise DataError(f"required field is missing; {_REWARD_HINT}", field="response")
    return present[0]


def _split_conversation(value: Any, options: ParseOptions) -> tuple[Prompt, str]:
    """TRL's conversational language-modelling form: the last (assistant) message is the response."""
    messages = as_messages(as_list(value, "messages"), "messages")
    if not messages or messages[-1]["role"] != "assistant":
        raise DataError("the last message must be the assistant's response", field="messages")
    return messages[:-1], as_response(messages[-1:], "messages", options)


def _label_reward(label: Any) -> float:
    """TRL's unpaired preference: `label` true marks a desirable completion."""
    if not isinstance(label, bool):
        raise DataError(f"expected true or false, got {type_name(label)}", field="label")
    return CHOSEN_REWARD if label else REJECTED_REWARD


def _parse_preference(obj: dict[str, Any], options: ParseOptions) -> PreferenceRecord:
    chosen = required(obj, "chosen", _PREFERENCE_HINT)
    rejected = required(obj, "rejected", _PREFERENCE_HINT)
    if obj.get("prompt") is None:
        prompt, chosen, rejected = _implicit_prompt(chosen, rejected)
    else:
        prompt = as_prompt(obj["prompt"], "prompt")
    return PreferenceRecord(
        prompt,
        as_response(chosen, "chosen", options),
        as_response(rejected, "rejected", options),
        as_record_id(obj),
        group=as_record_group(obj),
    )


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[Prompt, Any, Any]:
    """TRL's implicit prompt: the messages `chosen` and `rejected` share before they differ.

    The last message of each is always the response, even when both are identical."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise DataError(
            "required field is missing; the prompt may be left out only when 'chosen' and "
            "'rejected' are message lists that share their leading messages",
            field="prompt",
        )
    chosen, rejected = as_messages(chosen, "chosen"), as_messages(rejected, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _parse_ranked(obj: dict[str, Any], options: ParseOptions) -> RankedRecord:
    prompt = as_prompt(required(obj, "prompt", _RANKED_HINT), "prompt")
    responses = as_list(required(obj, "responses", _RANKED_HINT), "responses")
    rewards = as_list(required(obj, "rewards", _RANKED_HINT), "rewards")
    check_candidates(responses, rewards, "responses", "rewards")
    logits = obj.get("reward_logits")
    if logits is not None:
        check_candidates(responses, as_list(logits, "reward_logits"), "responses", "reward_logits")
        logits = [as_number(value, f"reward_logits[{i}]") for i, value in enumerate(logits)]
    return RankedRecord(
        prompt,
        [as_response(value, f"responses[{i}]", options) for i, value in enumerate(responses)],
        [as_number(value, f"rewards[{i}]") for i, value in enumerate(rewards)],
        as_record_id(obj),
        reward_logits=logits,
        group=as_record_group(obj),
    )


def _parse_hh(obj: dict[str, Any], options: ParseOptions) -> RankedRecord:
    """PRO's HH format; `prefix` holds one identical copy of the turns per candidate: use the first."""
    prefix = as_list(required(obj, "prefix", _HH_HINT), "prefix")
    if not prefix:
        raise DataError("no turns; expected a list of lists of turns", field="prefix")
    turns = as_list(prefix[0], "prefix[0]")
    if not turns or turns[-1] != HH_ASSISTANT_MARKER:
        raise DataError(
            f"the last turn must be the bare {HH_ASSISTANT_MARKER!r} marker", field="prefix[0]"
        )
    suffix = as_list(required(obj, "suffix", _HH_HINT), "suffix")
    logits = as_list(required(obj, "reward", _HH_HINT), "reward")
    check_candidates(suffix, logits, "suffix", "reward")
    logits = [as_number(value, f"reward[{i}]") for i, value in enumerate(logits)]
    return RankedRecord(
        [_hh_message(turn, f"prefix[0][{i}]") for i, turn in enumerate(turns[:-1])],
        [as_text(value, f"suffix[{i}]") for i, value in enumerate(suffix)],
        logits if options.hh_reward == "raw" else [_sigmoid(logit) for logit in logits],
        as_record_id(obj),
        reward_logits=logits,
        group=as_record_group(obj),
    )


def _hh_message(turn: Any, name: str) -> dict[str, str]:
    turn = as_text(turn, name)
    for marker, role in HH_ROLES.items():
        if turn.startswith(marker):
            return {"role": role, "content": turn[len(marker) :]}
    raise DataError(
        f"a turn must start with '<|prompter|>' or '<|assistant|>', got {clip_text(turn)!r}",
        field=name,
    )


def _sigmoid(logit: float) -> float:
    """Written per sign so that exp never overflows."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    exp_logit = math.exp(logit)
    return exp_logit / (1.0 + exp_logit)


def _parse_prompt(obj: dict[str, Any], options: ParseOptions) -> PromptRecord:
    return PromptRecord(
        as_prompt(required(obj, "prompt", "a prompt record needs 'prompt'"), "prompt"),
        as_record_id(obj),
        group=as_record_group(obj),
    )


PARSERS: dict[str, Callable[[dict[str, Any], ParseOptions], Record]] = {
    "prompt": _parse_prompt,
    "reward": _parse_reward,
    "preference": _parse_preference,
    "ranked": _parse_ranked,
    "hh": _parse_hh,
}
