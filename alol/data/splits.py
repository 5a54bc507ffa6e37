"""Splits by prompt: every record (or sample) of one prompt falls on the same side, so a
held-out prompt was never trained on. One seeded draw serves the validation split, the held-out
prompts of the value head and of the reward model, and the benchmark's test, validation and
training files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np


def prompt_key(record: Any) -> str:
    """A record's prompt as a string (a message list too), equal for equal prompts."""
    return json.dumps(record.prompt, sort_keys=True)


def prompt_groups(records: Sequence[Any]) -> list[str] | None:
    """The group of each distinct prompt, in first-seen order (`alol.pipeline.inputs.
    unique_prompts`'s), taken from its first record, so a report can say which part of the data
    a change comes from; None unless every record has one."""
    if not records or any(record.group is None for record in records):
        return None
    seen: dict[str, str] = {}
    for record in records:
        seen.setdefault(prompt_key(record), record.group)
    return list(seen.values())


def shuffled_prompt_groups(keys: Sequence[str], seed: int) -> list[list[int]]:
    """The indices of each distinct key, one group per key, in a seeded order: a permutation of
    the sorted keys, so the draw depends on which prompts there are, not on their order."""
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    distinct = sorted(groups)
    return [groups[distinct[i]] for i in np.random.default_rng(seed).permutation(len(distinct))]


def split_by_prompt(keys: Sequence[str], held_out: int, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held-out) indices, each in their original order: the first `held_out` prompts of
    `shuffled_prompt_groups(keys, seed)` are held out, with every index of each."""
    groups = shuffled_prompt_groups(keys, seed)
    held = sorted(index for group in groups[:held_out] for index in group)
    drawn = set(held)
    return [index for index in range(len(keys)) if index not in drawn], held


def held_out_count(prompts: int, fraction: float) -> int:
    """How many of `prompts` a fit holds out to measure itself: `fraction` of them, but at least
    one and never all when there are two or more (none when `fraction` is 0)."""
    if prompts < 2 or fraction <= 0:
        return 0
    return min(max(1, round(prompts * fraction)), prompts - 1)
