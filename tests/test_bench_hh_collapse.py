"""The HH collapse measurements by subset: where the positive advantage and the gradient weight
sit, and which kinds of answer make up each subset's top-advantage examples."""

import numpy as np
import pytest

from bench.answer_kinds import is_clarifying_question
from bench.hh_collapse import by_subset


def test_a_clarifying_question_is_a_short_answer_that_asks_back():
    assert is_clarifying_question("Why do you want to know this?")
    assert is_clarifying_question("Can you give me more context? What do you mean?  ")
    assert not is_clarifying_question("Sure. Preheat the oven to 200 degrees and wait.")
    assert not is_clarifying_question(" ".join(["word"] * 30) + "?")


def test_each_subset_reports_its_share_of_the_top_advantages_and_of_the_gradient_weight():
    texts = [
        "Why do you want to know this?",
        "I'm sorry, I don't understand.",
        "Paris is the capital of France and its largest city.",
        "It has about two million inhabitants.",
        "Try a budget.",
        "Nothing.",
        "The savannah has grasses and sparse trees.",
        "Some more words here.",
        "Another plain answer.",
        "A last plain answer.",
    ]
    advantage = np.array([0.9, 0.5, 0.2, -0.1, -0.3, -0.2, 0.4, 0.1, -0.4, 0.3])
    subsets = ["harmless"] * 2 + ["helpful"] * 8
    by_priority = np.array([4, 2, 1, 0, 0, 0, 1, 1, 0, 1])
    once_each = (advantage > 0).astype(int)

    found = by_subset(texts, advantage, subsets, {"∝ A": by_priority, "in passes": once_each})

    harmless, helpful = found["harmless"], found["helpful"]
    assert harmless["share_of_data"] == pytest.approx(0.2)
    assert harmless["fraction_positive"] == 1.0
    assert helpful["fraction_positive"] == pytest.approx(4 / 8)
    # the top 10% of ten examples is the one with A = 0.9, a harmless clarifying question
    assert harmless["share_of_top_10pct"] == 1.0
    assert harmless["question_share_of_its_top"] == 1.0
    assert harmless["evasive_share_of_its_top"] == 0.0
    assert helpful["question_share_of_its_top"] is None
    # draws × A: harmless 4 × 0.9 + 2 × 0.5 = 4.6 of 4.6 + 0.2 + 0.4 + 0.1 + 0.3 = 5.6
    assert harmless["share_of_gradient_weight"]["∝ A"] == pytest.approx(4.6 / 5.6)
    assert helpful["share_of_gradient_weight"]["∝ A"] == pytest.approx(1.0 / 5.6)
    # each positive drawn once: harmless 0.9 + 0.5 = 1.4 of 1.4 + 1.0 = 2.4
    assert harmless["share_of_gradient_weight"]["in passes"] == pytest.approx(1.4 / 2.4)
