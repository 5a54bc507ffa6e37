"""Answers side by side: the prompts where a model's reward rose and its judges did not
follow come first, because a reader believes a reward gain only after reading such answers."""

from __future__ import annotations

from alol.reports.eval_report import evaluate_responses
from alol.reports.samples_report import disputed_prompts, samples_markdown, side_by_side

PROMPTS = [
    "Tell me about tea?",
    "Tell me about rain?",
    "Tell me about cats?",
    "Tell me about boats?",
]


def report(rewards: list[float], relevance: list[float], answers: list[str], reference=None):
    return evaluate_responses(
        PROMPTS,
        answers,
        [{"r": value} for value in rewards],
        reference_scores=None if reference is None else [e.scores for e in reference.examples],
        judges={"relevance": relevance},
        reference_judges=None
        if reference is None
        else {"relevance": [e.judges["relevance"] for e in reference.examples]},
    )


REFERENCE = report([0.5, 0.5, 0.5, 0.7], [0.4, 0.6, 0.5, 0.5], ["Tea is a drink."] * 4)


def test_the_most_disputed_prompts_are_where_the_reward_rose_and_the_judges_fell():
    """Changes (reward, relevance): (+0.3, −0.4), (+0.3, +0.2), (+0.1, −0.1), (−0.2, −0.4).
    The second is left out (the judge followed the reward), the fourth too (the reward fell);
    the first disputes more than the third."""
    model = report([0.8, 0.8, 0.6, 0.5], [0.0, 0.8, 0.4, 0.1], ["No."] * 4, REFERENCE)

    assert disputed_prompts(model, REFERENCE, count=3) == [0, 2]
    assert disputed_prompts(model, REFERENCE, count=1) == [0]


def test_a_judge_on_a_larger_scale_does_not_decide_the_dispute_alone():
    """Relevance moves by 100s, but in units of π_ref's spread (reward 0.1, relevance 111.8)
    prompt 1 (reward +0.3 = 3.0, relevance −100 = −0.89) disputes more than prompt 0 (+0.1 =
    1.0, −150 = −1.34); on the raw scale prompt 0 would come first."""
    reference = report([0.4, 0.6, 0.4, 0.6], [0.0, 100.0, 200.0, 300.0], ["Tea is a drink."] * 4)
    model = report([0.5, 0.9, 0.4, 0.6], [-150.0, 0.0, 200.0, 300.0], ["No."] * 4, reference)

    assert disputed_prompts(model, reference, count=2) == [1, 0]


def test_answers_stand_side_by_side_with_each_change_from_pi_refs_answer():
    model = report([0.8, 0.8, 0.6, 0.5], [0.0, 0.8, 0.4, 0.1], ["No."] * 4, REFERENCE)

    lines = side_by_side({"reference": REFERENCE, "a_lol": model}, 0, "a_lol: prompt")

    assert lines[0] == "### a_lol: prompt 1"
    assert "Tell me about tea?" in lines[2]
    assert "**π_ref** (reward 0.500; relevance 0.400)" in lines
    assert "**a_lol** (reward 0.800 (+0.300); relevance 0.000 (−0.400))" in lines
    assert "```text\nNo.\n```" in lines


def test_samples_md_shows_each_models_disputes_and_then_the_first_prompts():
    disputed = report([0.8, 0.8, 0.6, 0.5], [0.0, 0.8, 0.4, 0.1], ["No."] * 4, REFERENCE)
    honest = report([0.4, 0.5, 0.5, 0.7], [0.6, 0.7, 0.6, 0.6], ["Tea!"] * 4, REFERENCE)

    markdown = samples_markdown(
        {"reference": REFERENCE, "a_lol": disputed, "nll": honest}, first=2, disputed=1
    )

    assert markdown.index("## Where the reward and the judges disagree most") < markdown.index(
        "### a_lol: prompt 1"
    )
    assert "### nll\n\nNo prompt where the reward rose and the judges fell." in markdown
    first = markdown[markdown.index("## The first 2 test prompts") :]
    assert first.count("### Prompt") == 2 and first.count("**nll**") == 2


def test_without_judges_only_the_first_prompts_are_shown():
    plain = {
        name: evaluate_responses(PROMPTS, ["Tea."] * 4, [{"r": 0.5}] * 4)
        for name in ("reference", "nll")
    }

    markdown = samples_markdown(plain, first=1)

    assert "disagree" not in markdown and "## The first 1 test prompts" in markdown
