"""Token-budget batches: as many examples as fit a padded-token budget, each weighing the same."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from alol.data.batching import TokenBudgetBatchSampler, example_weight, pack_to_token_budget
from alol.method.sampling import PrioritySampler
from tests.test_invariance import make_trainer, pipeline  # noqa: F401  (fixture)

LENGTHS = [10, 40, 25, 5, 60, 12, 33, 8]


def budget_sampler(max_tokens=80, num_batches=20, rows=1, weights=None, seed=0):
    draws = PrioritySampler(range(len(LENGTHS)), weights, num_samples=1, seed=seed)
    return TokenBudgetBatchSampler(draws, LENGTHS, rows, max_tokens, num_batches, seed=seed)


def padded_tokens(batch: list[int], rows: int = 1) -> int:
    return len(batch) * rows * max(LENGTHS[i] for i in batch)


def test_packing_sorts_longest_first_and_fills_each_batch_up_to_the_budget():
    """Longest first: 60 | 40 33 (2 x 40 = 80) | 25 12 10 (3 x 25 = 75) | 8 5."""
    batches = pack_to_token_budget([0, 1, 2, 3, 4, 5, 6, 7], LENGTHS, 1, 80)

    assert batches == [[4], [1, 6], [2, 5, 0], [7, 3]]


def test_an_example_longer_than_the_budget_gets_a_batch_of_its_own():
    assert pack_to_token_budget([4, 3], LENGTHS, 1, 50) == [[4], [3]]


def test_pairs_count_both_rows_against_the_budget():
    """A pair pads two rows (chosen and rejected): 2 x 2 x 25 = 100 fits, 3 x 2 x 25 does not."""
    assert pack_to_token_budget([2, 5, 0], LENGTHS, 2, 100) == [[2, 5], [0]]


def test_every_batch_stays_within_the_budget_and_there_are_exactly_num_batches():
    sampler = budget_sampler(max_tokens=80, num_batches=37)
    batches = list(sampler)

    assert len(batches) == len(sampler) == 37
    assert all(padded_tokens(b) <= 80 or len(b) == 1 for b in batches)
    assert len({len(b) for b in batches}) > 1, "short examples share bigger batches"
    assert sampler.mean_examples == pytest.approx(sum(map(len, batches)) / 37)


def test_batches_replay_for_the_same_epoch_and_change_with_the_next():
    sampler = budget_sampler()
    first, again = list(sampler), list(sampler)
    sampler.set_epoch(1)

    assert first == again
    assert list(sampler) != first


def test_examples_are_drawn_in_proportion_to_their_weights():
    """Weights 0 for half the examples: they are never trained; the rest follow 1:2:3:4."""
    weights = [0, 1, 0, 2, 0, 3, 0, 4]
    sampler = budget_sampler(max_tokens=200, num_batches=2000, weights=weights)
    counts = Counter(i for batch in sampler for i in batch)
    total = sum(counts.values())

    assert set(counts) == {1, 3, 5, 7}
    for index, weight in zip((1, 3, 5, 7), (1, 2, 3, 4), strict=True):
        assert counts[index] / total == pytest.approx(weight / 10, abs=0.02)


def test_each_example_weighs_the_same_whatever_its_batch_size():
    """Batches of 1 and 3 examples, mean 2: per-example mean losses scaled by n / mean sum to
    the mean over the 4 examples times the number of batches, as two batches of 2 would."""
    losses = torch.tensor([1.0, 2.0, 3.0, 6.0])
    small, big = losses[:1].mean(), losses[1:].mean()
    step = small * example_weight(1, 2.0) + big * example_weight(3, 2.0)

    torch.testing.assert_close(step / 2, losses.mean())
    assert example_weight(7, None) == 1.0  # fixed-size batches are left as they are


def test_the_trainer_keeps_padded_batches_within_the_budget_also_when_rounding_lengths_up(
    tmp_path,
    pipeline,  # noqa: F811
):
    trainer = make_trainer(
        pipeline,
        "a_lol",
        tmp_path,
        4,
        1,
        max_steps=6,
        max_tokens_per_batch=96,
        pad_to_multiple_of=16,
    )
    batches = list(trainer.get_train_dataloader())

    assert len(batches) == 6
    assert all(b["input_ids"].numel() <= 96 or len(b["index"]) == 1 for b in batches)
    assert all(b["input_ids"].shape[1] % 16 == 0 for b in batches)
