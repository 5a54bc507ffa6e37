"""The HH collapse measurements by subset: where the positive advantage and the gradient weight
sit, which kinds of answer make up each subset's top-advantage examples, and what a judge says
of the answers the reward selects."""

from types import SimpleNamespace

import numpy as np
import pytest

import bench.hh_collapse as hh_collapse
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


def test_the_judges_score_what_the_reward_selects_per_subset(monkeypatch):
    """A judge that pays long answers, against a reward whose A favours the short ones: the
    selection scores below the data and A ranks against the judge."""
    monkeypatch.setattr(hh_collapse, "load_tokenizer", lambda model: None)
    monkeypatch.setattr(hh_collapse, "render", lambda cfg, prompt, tokenizer: prompt)
    monkeypatch.setattr(hh_collapse, "load_reward", lambda spec: spec["name"])
    monkeypatch.setattr(
        hh_collapse,
        "score",
        lambda judge, prompts, texts: [{"total": float(len(t.split()))} for t in texts],
    )
    texts = ["no", "a b", "a b c", "a b c d", "one", "a b c d e f"]
    records = [SimpleNamespace(prompt=f"q{i}", response=t) for i, t in enumerate(texts)]
    advantage = np.array([0.6, 0.4, -0.1, -0.3, 0.2, -0.5])
    counts = np.array([3, 1, 0, 0, 2, 0])
    subsets = ["harmless"] * 4 + ["helpful"] * 2

    found = hh_collapse.judged_selection(
        SimpleNamespace(model="m"), records, advantage, subsets, counts, {"length": "p"}
    )

    harmless = found["length"]["harmless"]
    assert harmless["all"] == pytest.approx(2.5)
    assert harmless["positive"] == pytest.approx(1.5)  # "no" and "a b"
    # draws × A: 3 × 0.6 on 1 word, 1 × 0.4 on 2 words
    assert harmless["gradient_weighted"] == pytest.approx((1.8 * 1 + 0.4 * 2) / 2.2)
    assert harmless["spearman_with_advantage"] == pytest.approx(-1.0)
    assert found["length"]["all"]["top_10pct"] == 1.0  # the one answer with A = 0.6
    assert found["length"]["helpful"]["positive"] == 1.0
