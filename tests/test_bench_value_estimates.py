"""The value-estimates benchmark's table: each estimate's rows, and its difference from the
head's trainings seed by seed."""

from __future__ import annotations

import pytest

from bench.value_estimates import ESTIMATES, OBJECTIVES, markdown, summary


def run(reward: float, judge: float, positive: float) -> dict:
    """One seed's runs: every estimate's models score `reward` and `judge` more than the head's
    by their rank in ESTIMATES."""
    found = {}
    for rank, estimate in enumerate(ESTIMATES):
        models = {
            name: {
                "reward": reward + rank * 0.01,
                "good_answers": judge + rank * 0.1,
                "distinct_2": 0.6,
                "template_share": 0.04,
                "length": 20.0,
            }
            for name in ("reference", *OBJECTIVES)
        }
        found[estimate] = {"models": models, "fraction_positive": positive, "flags": []}
    found["head_fit"] = {
        e: {"explained_variance": 0.2, "mean_offset": 0.05} for e in ESTIMATES if e != "head"
    }
    return found


def test_each_estimate_is_compared_with_the_head_on_the_same_seed():
    runs = {0: run(0.8, 0.5, 0.4), 1: run(0.9, 0.7, 0.5)}
    result = summary(runs)
    assert result["minus_head"]["per_prompt"]["a_lol"]["reward"] == [
        pytest.approx(0.01),
        pytest.approx(0.01),
    ]
    assert result["minus_head"]["per_prompt_4"]["a_lol_seq"]["good_answers"] == [
        pytest.approx(0.2),
        pytest.approx(0.2),
    ]
    assert result["table"]["head"]["a_lol"]["reward"] == [
        pytest.approx(0.85),
        pytest.approx(0.0707, abs=1e-3),
    ]


def test_the_table_shows_every_estimate_and_its_differences_per_seed():
    runs = {0: run(0.8, 0.5, 0.4), 1: run(0.9, 0.7, 0.5)}
    result = {"commit": "abc", "seeds": [0, 1], "minutes": 3.0, "machine": "CPU", "per_seed": runs}
    table = markdown({**result, **summary(runs)})
    for estimate in ESTIMATES:
        assert f"| {estimate} | a_lol_seq | " in table
    assert "- a_lol: reward +0.010, +0.010 (mean +0.010)" in table
    assert "A > 0 for 40%, 50% (mean 45%) of the training answers with the head." in table
    assert "Audit flags" in table and "- none" in table
