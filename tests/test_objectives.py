"""The objectives of docs/method.md, checked against hand-computed numbers and their gradients."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from alol.method.batches import PairBatch, RankedBatch, SequenceBatch, UnpairedBatch
from alol.method.objectives import (
    MAX_ABS_LOG_RATIO,
    OBJECTIVES,
    ObjectiveConfig,
    a_lol_kl_loss,
    a_lol_loss,
    a_lol_ref_free_loss,
    a_lol_seq_loss,
    dpo_loss,
    dpo_ref_free_loss,
    get_objective,
    importance_weights,
    nll_loss,
    pro_loss,
    r_gold_loss,
    r_lol_loss,
    wbc_loss,
)

CONFIG = ObjectiveConfig()  # clip 0.9 → weights in [0.1, 1.9]; beta 0.1; gold_floor 0.1


def scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def two_responses(**fields) -> SequenceBatch:
    """Two examples of length 4: prompt at positions 0 (and 1), the response after it.

    Example 1: response tokens at positions 1, 2 with log-probs −1, −3  → log π(y|x) = −4
    Example 2: response tokens at positions 2, 3 with log-probs −0.5, −1.5 → log π(y|x) = −2
    """
    token_logps = torch.tensor([[0.0, -1.0, -3.0, 0.0], [0.0, 0.0, -0.5, -1.5]], requires_grad=True)
    response_mask = torch.tensor([[False, True, True, False], [False, False, True, True]])
    return SequenceBatch(token_logps=token_logps, response_mask=response_mask, **fields)


def reference_with_sequence_log_ratios(first: float, second: float) -> torch.Tensor:
    """Reference token log-probs putting all of log π_θ − log π_ref on each response's last token."""
    return torch.tensor([[0.0, -1.0, -3.0 - first, 0.0], [0.0, 0.0, -0.5, -1.5 - second]])


def token_grad(loss_fn, batch: SequenceBatch, config: ObjectiveConfig = CONFIG) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss_fn(batch, config).loss, batch.token_logps)
    return grad


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("clip", 0.0, "clip=None"),
        ("clip", 1.0, "clip=None"),
        ("beta", -0.1, "beta"),
        ("gold_floor", 1.5, "gold_floor"),
        ("pro_sft_weight", -1.0, "pro_sft_weight"),
    ],
)
def test_config_rejects_out_of_range_values_with_a_hint(field, value, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**{field: value})


# ---------------------------------------------------------------------------------------------
# Importance weight


def test_importance_weight_is_a_detached_clamp_computed_in_log_space():
    """Log-ratios −1000, log 0.5, 0, log 1.9, 1000 with ε = 0.9:

    w = [0.1, 0.5, 1, 1.9, 1.9]; only ±1000 lie strictly beyond a bound (log 1.9 sits on it).
    exp(1000) would overflow; clamping the log-ratio first keeps everything finite.
    """
    logps = torch.tensor([-1000.0, math.log(0.5), 0.0, math.log1p(0.9), 1000.0], requires_grad=True)
    weights, clipped = importance_weights(logps, torch.zeros(5), clip=0.9)
    assert_close(weights, torch.tensor([0.1, 0.5, 1.0, 1.9, 1.9]))
    assert clipped.tolist() == [True, False, False, False, True]
    assert not weights.requires_grad


def test_clip_none_does_not_clip_and_stays_finite_for_huge_log_ratios():
    """With clip=None, ratio e² stays e² (ε = 0.9 would clip it to 1.9); ±1000 become exp(±20)."""
    logps = torch.tensor([2.0, -1000.0, 1000.0])
    weights, clipped = importance_weights(logps, torch.zeros(3), clip=None)
    assert_close(weights, torch.tensor([math.exp(2.0), math.exp(-20.0), math.exp(20.0)]))
    assert clipped.tolist() == [False, True, True]
    assert MAX_ABS_LOG_RATIO == 20.0


# ---------------------------------------------------------------------------------------------
# Pointwise objectives


def test_nll_is_the_mean_negative_sequence_log_prob():
    """(4 + 2) / 2 = 3; d loss / d token = −1/2 on response tokens, 0 elsewhere."""
    batch = two_responses()
    output = nll_loss(batch, CONFIG)
    assert_close(output.loss, scalar(3.0))
    assert_close(output.metrics["logps/mean"], scalar(-3.0))
    assert_close(token_grad(nll_loss, batch), -0.5 * batch.response_mask.float())


def test_wbc_weights_each_sequence_nll_by_its_reward():
    """R = [0.5, 2]: (0.5·4 + 2·2) / 2 = 3."""
    batch = two_responses(rewards=torch.tensor([0.5, 2.0]))
    output = wbc_loss(batch, CONFIG)
    assert_close(output.loss, scalar(3.0))
    assert_close(output.metrics["reward/mean"], scalar(1.25))


def test_r_gold_weights_tokens_by_their_probability_floored_at_gold_floor():
    """R = [0.5, 2]. Token probabilities e^−1, e^−3 ≈ 0.05 → floored to 0.1, e^−0.5, e^−1.5:

    loss = (0.5·(e^−1·1 + 0.1·3) + 2·(e^−0.5·0.5 + e^−1.5·1.5)) / 2
    and the weights carry no gradient: d loss / d token = −R · weight / 2.
    """
    rewards = torch.tensor([0.5, 2.0])
    batch = two_responses(rewards=rewards)
    expected = (
        0.5 * (math.exp(-1) * 1 + 0.1 * 3) + 2 * (math.exp(-0.5) * 0.5 + math.exp(-1.5) * 1.5)
    ) / 2
    assert_close(r_gold_loss(batch, CONFIG).loss, scalar(expected))

    token_weights = torch.tensor(
        [[0.0, math.exp(-1), 0.1, 0.0], [0.0, 0.0, math.exp(-0.5), math.exp(-1.5)]]
    )
    assert_close(token_grad(r_gold_loss, batch), -rewards[:, None] * token_weights / 2)


def test_r_lol_multiplies_reward_by_the_clipped_sequence_weight():
    """Log-ratios [1, −0.2]: w = [clip(e, 0.1, 1.9) = 1.9, e^−0.2]. R = [0.5, 2]:

    loss = (0.5·1.9·4 + 2·e^−0.2·2) / 2; mean w = (1.9 + e^−0.2)/2; clip_frac = 1/2.
    The unclipped weight is a constant too: example 2's tokens get −2·e^−0.2/2 = −e^−0.2.
    """
    batch = two_responses(
        rewards=torch.tensor([0.5, 2.0]),
        ref_token_logps=reference_with_sequence_log_ratios(1.0, -0.2),
    )
    output = r_lol_loss(batch, CONFIG)
    assert_close(output.loss, scalar((0.5 * 1.9 * 4 + 2 * math.exp(-0.2) * 2) / 2))
    assert_close(output.metrics["importance_weight/mean"], scalar((1.9 + math.exp(-0.2)) / 2))
    assert_close(output.metrics["importance_weight/clip_frac"], scalar(0.5))
    token_scale = torch.tensor([[0.0, 0.5 * 1.9, 0.5 * 1.9, 0.0], [0.0, 0.0, 2.0, 2.0]])
    token_scale[1] *= math.exp(-0.2)
    assert_close(token_grad(r_lol_loss, batch), -token_scale / 2)


def test_a_lol_trains_only_on_positive_advantage_with_a_detached_weight():
    """A = [1.5, −0.5], log-ratios [1, −0.2] → w = [1.9, e^−0.2]:

    loss = (1.5·1.9·4 + 0) / 2 = 5.7; example 1's tokens get gradient −1.5·1.9/2 = −1.425
    (w is a constant), example 2's tokens get exactly 0.
    """
    batch = two_responses(
        advantages=torch.tensor([1.5, -0.5]),
        ref_token_logps=reference_with_sequence_log_ratios(1.0, -0.2),
    )
    output = a_lol_loss(batch, CONFIG)
    assert_close(output.loss, scalar(5.7))
    assert_close(output.metrics["advantage/mean"], scalar(0.5))
    assert_close(
        token_grad(a_lol_loss, batch), -1.425 * torch.tensor([[0.0, 1, 1, 0], [0, 0, 0, 0]])
    )


def test_a_lol_without_clipping_survives_log_ratios_of_plus_minus_1000():
    """clip=None, log-ratios [1000, −1000] → w = [e^20, e^−20]; loss and gradient stay finite."""
    batch = two_responses(
        advantages=torch.tensor([1.0, 1.0]),
        ref_token_logps=reference_with_sequence_log_ratios(1000.0, -1000.0),
    )
    config = ObjectiveConfig(clip=None)
    output = a_lol_loss(batch, config)
    assert_close(output.loss, scalar((math.exp(20) * 4 + math.exp(-20) * 2) / 2))
    assert torch.isfinite(token_grad(a_lol_loss, batch, config)).all()


def test_a_lol_ref_free_is_positive_advantage_times_nll():
    """A = [1.5, −0.5]: (1.5·4 + 0·2) / 2 = 3."""
    batch = two_responses(advantages=torch.tensor([1.5, -0.5]))
    assert_close(a_lol_ref_free_loss(batch, CONFIG).loss, scalar(3.0))


def test_a_lol_seq_clips_single_step_ratios_per_token():
    """Per-token log-ratios: example 1 [0.5, −2.5], example 2 [0, −1.3]; A = [1.5, 2].

    w_t = [e^0.5, clip(e^−2.5 ≈ 0.08) = 0.1] and [1, e^−1.3]. (The sequence ratio of example 1,
    e^−2, is not clipped at all: these are single-step ratios, not a cumulative product.)
    loss = (1.5·(e^0.5·1 + 0.1·3) + 2·(1·0.5 + e^−1.3·1.5)) / 2
    metrics over the 4 response tokens: mean w = (e^0.5 + 0.1 + 1 + e^−1.3)/4, clip_frac 1/4.
    """
    reference = torch.tensor([[0.0, -1.5, -0.5, 0.0], [0.0, 0.0, -0.5, -0.2]])
    batch = two_responses(advantages=torch.tensor([1.5, 2.0]), ref_token_logps=reference)
    output = a_lol_seq_loss(batch, CONFIG)
    expected = (1.5 * (math.exp(0.5) + 0.1 * 3) + 2 * (0.5 + math.exp(-1.3) * 1.5)) / 2
    assert_close(output.loss, scalar(expected))
    assert_close(
        output.metrics["importance_weight/mean"], scalar((math.exp(0.5) + 1.1 + math.exp(-1.3)) / 4)
    )
    assert_close(output.metrics["importance_weight/clip_frac"], scalar(0.25))

    token_weights = torch.tensor([[0.0, math.exp(0.5), 0.1, 0.0], [0.0, 0.0, 1.0, math.exp(-1.3)]])
    expected_grad = -torch.tensor([1.5, 2.0])[:, None] * token_weights / 2
    assert_close(token_grad(a_lol_seq_loss, batch), expected_grad)


def test_a_lol_kl_value_follows_the_formula():
    """A = [1.5, −0.5], β = 0.1, log π_θ = [−4, −2], log-ratios [1, −0.2]:

    loss = ((1.5·4 + 0.1·1) + (0 + 0.1·(−0.2))) / 2 = (6.1 − 0.02) / 2 = 3.04.
    """
    batch = two_responses(
        advantages=torch.tensor([1.5, -0.5]),
        ref_token_logps=reference_with_sequence_log_ratios(1.0, -0.2),
    )
    assert_close(a_lol_kl_loss(batch, CONFIG).loss, scalar(3.04))


def test_a_lol_kl_trains_like_positive_advantage_minus_beta_times_nll():
    """The reference term has no gradient, so the gradient is that of (max(A,0) − β)·NLL:

    per response token, −(max(A,0) − β)/2 = −(1.5 − 0.1)/2 = −0.7 and −(0 − 0.1)/2 = +0.05.
    """
    batch = two_responses(
        advantages=torch.tensor([1.5, -0.5]),
        ref_token_logps=reference_with_sequence_log_ratios(1.0, -0.2),
    )
    expected = torch.tensor([[0.0, -0.7, -0.7, 0.0], [0.0, 0.0, 0.05, 0.05]])
    assert_close(token_grad(a_lol_kl_loss, batch), expected)


# ---------------------------------------------------------------------------------------------
# Preference objectives


def preference_pairs() -> PairBatch:
    """Two pairs: chosen [−1, −2], rejected [−3, −1], reference chosen [−2, −2], rejected [−2, −1]."""
    return PairBatch(
        chosen_logps=torch.tensor([-1.0, -2.0], requires_grad=True),
        rejected_logps=torch.tensor([-3.0, -1.0], requires_grad=True),
        ref_chosen_logps=torch.tensor([-2.0, -2.0]),
        ref_rejected_logps=torch.tensor([-2.0, -1.0]),
    )


def test_dpo_loss_and_trl_metrics():
    """β = 0.1. Implicit rewards: chosen 0.1·[1, 0] = [0.1, 0], rejected 0.1·[−1, 0] = [−0.1, 0].

    margins [0.2, 0] → loss = (−log σ(0.2) − log σ(0)) / 2; accuracy 1/2 (a tie is not a win).
    """
    output = dpo_loss(preference_pairs(), CONFIG)
    assert_close(output.loss, scalar((-math.log(1 / (1 + math.exp(-0.2))) + math.log(2)) / 2))
    expected_metrics = {
        "rewards/chosen": 0.05,
        "rewards/rejected": -0.05,
        "rewards/margins": 0.1,
        "rewards/accuracies": 0.5,
        "logps/chosen": -1.5,
        "logps/rejected": -2.0,
    }
    for name, value in expected_metrics.items():
        assert_close(output.metrics[name], scalar(value), msg=name)


def test_dpo_ref_free_ignores_any_reference_given():
    """Reference term 0: margins β·[(−1+3), (−2+1)] = [0.2, −0.1] → (softplus(−0.2) + softplus(0.1)) / 2."""
    with_reference = dpo_ref_free_loss(preference_pairs(), CONFIG)
    pairs = preference_pairs()
    without_reference = dpo_ref_free_loss(
        PairBatch(pairs.chosen_logps, pairs.rejected_logps), CONFIG
    )
    expected = scalar((F.softplus(scalar(-0.2)) + F.softplus(scalar(0.1))).item() / 2)
    assert_close(with_reference.loss, expected)
    assert_close(without_reference.loss, expected)


def test_pro_with_two_candidates_is_a_reward_scaled_logistic_loss_plus_sft():
    """Candidates given worst first: R = [0.2, 0.9], log π = [−4, −9], lengths [2, 3] → s = [−2, −3].

    Sorted best first: s_1 = −3 (R 0.9), s_2 = −2 (R 0.2), τ = 0.7:
    loss = −log σ((s_1 − s_2)·τ) + 0.05·(2−1)²·9 = −log σ(−0.7) + 0.45.
    """
    batch = RankedBatch(
        logps=torch.tensor([[-4.0, -9.0]], requires_grad=True),
        lengths=torch.tensor([[2, 3]]),
        rewards=torch.tensor([[0.2, 0.9]]),
        candidate_mask=torch.tensor([[True, True]]),
    )
    output = pro_loss(batch, CONFIG)
    assert_close(output.loss, F.softplus(scalar(0.7)) + 0.45)
    assert_close(output.metrics["loss/sft"], scalar(0.45))


def three_ranked_candidates() -> RankedBatch:
    """One prompt; rewards [2, 0, 3], log π all −2, lengths [1, 4, 2] → s = [−2, −0.5, −1]."""
    return RankedBatch(
        logps=torch.tensor([[-2.0, -2.0, -2.0]], requires_grad=True),
        lengths=torch.tensor([[1, 4, 2]]),
        rewards=torch.tensor([[2.0, 0.0, 3.0]]),
        candidate_mask=torch.tensor([[True, True, True]]),
    )


# Sorted best first: R = [3, 2, 0], s = [−1, −2, −0.5].
# k=1: τ = [max(1, 3), 1, 3] = [3, 1, 3] → logits [−3, −2, −1.5]: log(e^−3 + e^−2 + e^−1.5) + 3
# k=2: τ = [2, 2] → logits [−4, −1]: log(e^−4 + e^−1) + 4
# SFT: 0.05 · (3−1)² · 2 = 0.4
THREE_CANDIDATE_LOSS = (
    math.log(math.exp(-3) + math.exp(-2) + math.exp(-1.5))
    + 3
    + math.log(math.exp(-4) + math.exp(-1))
    + 4
    + 0.4
)


def test_pro_with_three_candidates_matches_the_listwise_formula():
    """See THREE_CANDIDATE_LOSS for the arithmetic."""
    assert_close(pro_loss(three_ranked_candidates(), CONFIG).loss, scalar(THREE_CANDIDATE_LOSS))


def test_pro_padding_candidates_take_part_in_no_term():
    """Prompt 1 is the three-candidate example; prompt 2 pads its third slot with junk (NaN reward,
    length 0). Prompt 2 alone: s = [−1, −2], R = [1, 0] → −log σ(1) + 0.05·1²·1.
    The loss is the mean over the two prompts and the padding slot gets zero gradient.
    """
    three = three_ranked_candidates()
    batch = RankedBatch(
        logps=torch.cat([three.logps.detach(), torch.tensor([[-1.0, -2.0, 0.0]])]).requires_grad_(),
        lengths=torch.cat([three.lengths, torch.tensor([[1, 1, 0]])]),
        rewards=torch.cat([three.rewards, torch.tensor([[1.0, 0.0, math.nan]])]),
        candidate_mask=torch.tensor([[True, True, True], [True, True, False]]),
    )
    loss = pro_loss(batch, CONFIG).loss
    two_candidate_loss = F.softplus(scalar(-1.0)) + 0.05
    assert_close(loss, (THREE_CANDIDATE_LOSS + two_candidate_loss) / 2)
    (grad,) = torch.autograd.grad(loss, batch.logps)
    assert torch.isfinite(grad).all()
    assert grad[1, 2] == 0


# ---------------------------------------------------------------------------------------------
# Properties shared by all objectives, through the registry


ALL_NAMES = {
    "nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl",
    "dpo", "dpo_ref_free", "pro", "kto",
}  # fmt: skip


def random_batch(data: str, batch_size: int, generator: torch.Generator, *, with_all: bool = True):
    """A random batch of the given kind; `with_all=False` leaves out every optional field."""

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    if data == "pair":
        return PairBatch(
            chosen_logps=-randn(batch_size).abs().requires_grad_(),
            rejected_logps=-randn(batch_size).abs().requires_grad_(),
            ref_chosen_logps=-randn(batch_size).abs() if with_all else None,
            ref_rejected_logps=-randn(batch_size).abs() if with_all else None,
        )
    if data == "unpaired":
        return UnpairedBatch(
            logps=-randn(batch_size).abs().requires_grad_(),
            kl_logps=-randn(batch_size).abs(),
            labels=torch.tensor([True, False] * (batch_size // 2)),
            ref_logps=-randn(batch_size).abs(),
            ref_kl_logps=-randn(batch_size).abs(),
        )
    if data == "ranked":
        return RankedBatch(
            logps=-randn(batch_size, 3).abs().requires_grad_(),
            lengths=torch.randint(1, 6, (batch_size, 3), generator=generator),
            rewards=randn(batch_size, 3),
            candidate_mask=torch.tensor([[True, True, False]] * batch_size),
        )
    response_mask = torch.zeros(batch_size, 6, dtype=torch.bool)
    response_mask[:, 2:] = True
    return SequenceBatch(
        token_logps=(-randn(batch_size, 6).abs() * response_mask).requires_grad_(),
        response_mask=response_mask,
        ref_token_logps=-randn(batch_size, 6).abs() * response_mask if with_all else None,
        rewards=randn(batch_size) if with_all else None,
        advantages=randn(batch_size) if with_all else None,
    )


def minimal_batch(name: str, generator: torch.Generator):
    """A batch holding only the fields the registry says the objective needs."""
    objective = OBJECTIVES[name]
    full = random_batch(objective.data, 4, generator)
    if objective.data != "sequence":
        if objective.data == "pair" and not objective.needs_reference:
            return PairBatch(full.chosen_logps, full.rejected_logps)
        return full
    return SequenceBatch(
        token_logps=full.token_logps,
        response_mask=full.response_mask,
        ref_token_logps=full.ref_token_logps if objective.needs_reference else None,
        rewards=full.rewards if objective.needs_reward else None,
        advantages=full.advantages if objective.needs_advantage else None,
    )


def test_registry_holds_the_twelve_objectives_under_their_names():
    assert set(OBJECTIVES) == ALL_NAMES
    assert all(objective.name == name for name, objective in OBJECTIVES.items())
    assert {name for name, o in OBJECTIVES.items() if o.positive_advantage_only} == {
        "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_each_objective_runs_on_exactly_the_inputs_the_registry_declares(name):
    """Finite scalar loss with a gradient, and metrics that are detached scalars."""
    output = OBJECTIVES[name].loss(minimal_batch(name, torch.Generator().manual_seed(0)), CONFIG)
    assert output.loss.shape == () and torch.isfinite(output.loss) and output.loss.requires_grad
    assert output.metrics
    for metric_name, value in output.metrics.items():
        assert value.shape == () and not value.requires_grad, metric_name


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("wbc", "rewards"),
        ("r_gold", "rewards"),
        ("r_lol", "ref_token_logps"),
        ("a_lol", "advantages"),
        ("a_lol_seq", "advantages"),
        ("a_lol_kl", "advantages"),
        ("dpo", "ref_chosen_logps"),
    ],
)
def test_missing_inputs_raise_an_error_naming_the_field_and_the_fix(name, missing):
    objective = OBJECTIVES[name]
    batch = random_batch(objective.data, 2, torch.Generator().manual_seed(0), with_all=False)
    if name == "r_lol":
        batch.rewards = torch.ones(2)
    with pytest.raises(ValueError, match=rf"'{name}' needs batch\.{missing}, but it is None: "):
        objective.loss(batch, CONFIG)


@pytest.mark.parametrize("name", sorted(ALL_NAMES - {"dpo", "dpo_ref_free", "pro", "kto"}))
def test_pointwise_loss_is_the_mean_over_examples_whatever_the_batch_split(name):
    """loss(batch of 8) = (loss(first 4) + loss(last 4)) / 2, so accumulation averages correctly."""
    full = random_batch("sequence", 8, torch.Generator().manual_seed(1))

    def rows(sl):
        return SequenceBatch(
            full.token_logps[sl], full.response_mask[sl], full.ref_token_logps[sl],
            full.rewards[sl], full.advantages[sl],
        )  # fmt: skip

    loss = OBJECTIVES[name].loss
    halves = (loss(rows(slice(0, 4)), CONFIG).loss + loss(rows(slice(4, 8)), CONFIG).loss) / 2
    assert_close(loss(full, CONFIG).loss, halves)


CHANGED_SETTINGS = {
    "clip": 0.2,
    "beta": 0.5,
    "gold_floor": 0.9,
    "pro_sft_weight": 0.5,
    "desirable_weight": 2.0,
    "undesirable_weight": 0.5,
}


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_each_objective_reads_exactly_the_hyperparameters_it_declares(name):
    """The registry's `hyperparameters` decide which settings reach a training run and its
    fingerprint: changing a declared one changes the loss, changing any other does not."""
    objective = OBJECTIVES[name]
    batch = random_batch(objective.data, 8, torch.Generator().manual_seed(2))
    if objective.data == "sequence":
        batch.advantages = batch.advantages.abs()
    assert set(CHANGED_SETTINGS) == {f.name for f in dataclasses.fields(ObjectiveConfig)}
    base = objective.loss(batch, CONFIG).loss
    for setting, value in CHANGED_SETTINGS.items():
        loss = objective.loss(batch, dataclasses.replace(CONFIG, **{setting: value})).loss
        assert (loss != base).item() == (setting in objective.hyperparameters), setting


def test_batches_reject_tensors_of_mismatched_shapes():
    with pytest.raises(ValueError, match=r"rewards has shape \(3,\), expected \(2,\)"):
        two_responses(rewards=torch.ones(3))


def test_get_objective_returns_the_entry_or_lists_the_valid_names():
    assert get_objective("a_lol") is OBJECTIVES["a_lol"]
    with pytest.raises(
        ValueError, match="Unknown objective 'alol'; choose one of: nll, wbc, .*kto, pro"
    ):
        get_objective("alol")


def test_module_imports_on_its_own():
    subprocess.run([sys.executable, "-c", "import alol.method.objectives"], check=True)
