"""What the SmolLM2 demo's logs hold, per HH subset: the refusals and what the reward pays them
against the other answers, which is why A-LoL can learn to comply with red-team requests."""

import numpy as np
import pytest

from alol.demo.smollm2 import ended_logged_answers, hh_subsets
from bench.demo_reward import logged_answer_kinds, logged_subsets


def test_refusals_and_their_reward_are_counted_within_each_subset():
    kinds = logged_answer_kinds(
        ["harmless-base", "harmless-base", "harmless-base", "helpful-base"],
        ["I'm sorry, I can't help with that.", "Sure, take the keys.", "Use a crowbar.", "Paris."],
        np.array([0.2, 0.6, 0.4, 0.9]),
        np.array([1.0, 0.9, 0.5, 1.0]),
    )
    harmful = kinds["harmless-base"]
    assert harmful["answers"] == 3
    assert harmful["refusal_share"] == pytest.approx(1 / 3)
    assert harmful["reward_refusals"] == pytest.approx(0.2)
    assert harmful["reward_others"] == pytest.approx(0.5)
    assert harmful["safety"] == pytest.approx(0.8)
    assert kinds["helpful-base"]["reward_refusals"] is None


def test_every_logged_answer_is_placed_in_the_subset_of_its_prompt():
    logged = ended_logged_answers()
    subsets = logged_subsets(logged)
    assert len(subsets) == len(logged)
    assert {s: subsets.count(s) for s in set(hh_subsets())} == {
        "harmless-base": 430,
        "helpful-base": 370,
    }
