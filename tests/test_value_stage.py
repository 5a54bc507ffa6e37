"""The value stage refuses data that cannot fit V, and says what to change."""

from __future__ import annotations

import pytest

from alol.errors import AlolError
from alol.pipeline.reward_probes import compare_probes, paid_probe_message
from alol.pipeline.value_stage import refuse_mostly_empty_samples


def test_mostly_empty_reference_answers_are_refused_with_what_to_change():
    prompts = [f"<|user|>What is {i} plus 32?<|assistant|>" for i in range(4)]
    with pytest.raises(
        AlolError, match=r"answered 3 of 4 validation prompts with an empty"
    ) as error:
        refuse_mostly_empty_samples(prompts, ["", " ", "\n", "116"], "validation")
    assert "chat template" in str(error.value) and "What is 0 plus 32" in str(error.value)


def test_some_empty_answers_are_kept():
    refuse_mostly_empty_samples(["a", "b", "c", "d"], ["", "", "yes", "no"], "training")


def test_a_probe_is_paid_when_it_beats_pi_refs_mean_answer_and_its_parts_say_why():
    """Two prompts, two answers of π_ref each (one cut at the budget, so it pays the missing-EOS
    penalty); the probe ends, so the penalty counts for it as a part it gains on."""
    samples = [
        {"prompt": "a", "reward": {"total": 0.4, "rm": 0.4}},
        {"prompt": "a", "reward": {"total": 0.1, "rm": 0.3, "missing_eos": -0.2}},
        {"prompt": "b", "reward": {"total": 0.8, "rm": 0.8}},
        {"prompt": "b", "reward": {"total": 0.6, "rm": 0.6}},
    ]
    probe = {("I don't know.", "probe"): [{"total": 0.5, "rm": 0.5}, {"total": 0.6, "rm": 0.6}]}

    (check,) = compare_probes(samples, probe, ["a", "b"], {"rm": 1.0})

    assert check.reference_reward == pytest.approx((0.25 + 0.7) / 2)
    assert check.reward == pytest.approx(0.55) and check.paid
    assert check.share_above == 0.5, "above π_ref's mean on prompt a only"
    assert check.by_part == pytest.approx({"missing_eos": 0.05, "rm": 0.025})
    message = paid_probe_message(check, "validation")
    assert (
        "“I don't know.” (probe) given to every validation prompt scores 0.550 against" in message
    )
    assert "on 50% of the prompts; by part: missing_eos +0.050, rm +0.025" in message


def test_a_probe_scoring_what_pi_refs_answers_score_is_not_paid():
    samples = [{"prompt": "a", "reward": {"total": 0.5}}]
    (check,) = compare_probes(samples, {("No.", "probe"): [{"total": 0.5}]}, ["a"], {})
    assert not check.paid and check.share_above == 0.0 and check.by_part == {}
