"""One split by prompt (`alol.data.splits`) behind every hold-out: the validation split, the
value head's and the reward model's held-out prompts, the benchmark's files."""

from __future__ import annotations

import random

from alol.data.records import PromptRecord, RewardRecord
from alol.data.splits import (
    held_out_count,
    prompt_groups,
    shuffled_prompt_groups,
    split_by_prompt,
)
from alol.models.value_fit import split_holdout
from alol.pipeline.inputs import hold_out_prompts

KEYS = [f"prompt {i}" for i in range(10) for _ in range(3)]


def test_every_index_of_a_prompt_falls_on_one_side_and_each_side_keeps_its_order():
    kept, held = split_by_prompt(KEYS, held_out=3, seed=0)

    assert sorted(kept + held) == list(range(30))
    assert kept == sorted(kept) and held == sorted(held)
    assert len({KEYS[i] for i in held}) == 3
    assert not {KEYS[i] for i in kept} & {KEYS[i] for i in held}


def test_the_draw_depends_on_which_prompts_there_are_not_on_their_order():
    shuffled = KEYS[:]
    random.Random(1).shuffle(shuffled)

    groups = shuffled_prompt_groups(KEYS, seed=0)
    reordered = shuffled_prompt_groups(shuffled, seed=0)

    assert [KEYS[g[0]] for g in groups] == [shuffled[g[0]] for g in reordered]


def test_the_validation_split_and_the_value_heads_hold_out_are_the_same_draw():
    """Both hold out 3 of 10 prompts with seed 0: the same three."""
    records = [RewardRecord(key, "an answer") for key in KEYS]

    validation = {r.prompt for r in hold_out_prompts(records, fraction=0.3, seed=0).val}
    _, held = split_holdout(KEYS, holdout_fraction=0.3, seed=0)

    assert validation == {KEYS[i] for i in held}


def test_the_validation_split_is_the_one_alol_drew_before_the_split_was_shared():
    """Pinned: a changed draw would change every run's split, and every stage's fingerprint."""
    records = [RewardRecord(f"prompt {i}", f"answer {k}") for i in range(10) for k in range(2)]

    assert {r.prompt for r in hold_out_prompts(records, 0.2, seed=0).val} == {
        "prompt 4",
        "prompt 6",
    }
    assert {r.prompt for r in hold_out_prompts(records, 0.2, seed=1).val} == {
        "prompt 4",
        "prompt 8",
    }


def test_a_fit_holds_out_a_share_of_the_prompts_but_at_least_one_and_never_all():
    assert held_out_count(10, 0.25) == 2
    assert held_out_count(10, 0.01) == 1
    assert held_out_count(2, 0.9) == 1
    assert held_out_count(1, 0.5) == 0
    assert held_out_count(10, 0.0) == 0


def test_each_prompt_takes_the_group_of_its_first_record():
    records = [
        PromptRecord("Tell me about tea.", group="helpful"),
        PromptRecord("How do I pick a lock?", group="harmful"),
        PromptRecord("Tell me about tea.", group="harmful"),
    ]
    assert prompt_groups(records) == ["helpful", "harmful"]


def test_prompts_without_a_group_on_every_record_have_no_groups():
    records = [PromptRecord("Tell me about tea.", group="helpful"), PromptRecord("Hi?")]
    assert prompt_groups(records) is None
    assert prompt_groups([]) is None
