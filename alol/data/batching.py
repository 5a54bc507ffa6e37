"""How drawn examples are cut into batches: permuted so a batch holds similar lengths (fixed
batch size), or packed to a padded-token budget; both deterministic per (seed, epoch)."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def length_grouped_order(
    indices: list[int],
    lengths: list[int],
    batch_size: int,
    generator: torch.Generator,
    megabatch_factor: int = 50,
) -> list[int]:
    """Reorder a sampled stream of dataset rows so each batch holds rows of similar length.

    `indices` are dataset rows in sampling order (repeats allowed, as priority sampling draws
    with replacement) and `lengths[k]` is the token length of `indices[k]`. The stream is cut
    into consecutive megabatches of batch_size * megabatch_factor draws; each is sorted by length
    (longest first) and cut into batches, and its full batches are shuffled with `generator` so
    no long-to-short trend remains. A final short batch stays last, so batches of the result
    start every `batch_size` items. The result is a permutation of `indices` (no draw leaves its
    megabatch): the same draws, so the same sampling distribution, with less padding.
    """
    if batch_size < 1 or megabatch_factor < 1:
        raise ValueError(
            f"batch_size and megabatch_factor must be at least 1, got {batch_size} and {megabatch_factor}"
        )
    if len(lengths) != len(indices):
        raise ValueError(
            f"{len(indices)} indices but {len(lengths)} lengths; give the length of each drawn row"
        )
    megabatch_size = batch_size * megabatch_factor
    order: list[int] = []
    for start in range(0, len(indices), megabatch_size):
        positions = range(start, min(start + megabatch_size, len(indices)))
        longest_first = [
            indices[k] for k in sorted(positions, key=lengths.__getitem__, reverse=True)
        ]
        batches = [
            longest_first[i : i + batch_size] for i in range(0, len(longest_first), batch_size)
        ]
        full_count = len(longest_first) // batch_size
        shuffled = [batches[i] for i in torch.randperm(full_count, generator=generator).tolist()]
        for batch in shuffled + batches[full_count:]:
            order.extend(batch)
    return order


class LengthGroupedSampler(Sampler[int]):
    """Reorders another sampler's draws so each batch holds similar lengths.

    The draws are only permuted inside megabatches, so which examples are trained (and how
    often) is exactly the wrapped sampler's; only the padding changes. Deterministic per
    epoch, so a resumed run replays the same order.
    """

    def __init__(self, sampler: Sampler[int], lengths: list[int], batch_size: int, seed: int):
        self.sampler = sampler
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        draws = list(self.sampler)
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        lengths = [self.lengths[i] for i in draws]
        return iter(length_grouped_order(draws, lengths, self.batch_size, generator))


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Global batches of as many draws as fit `max_tokens` padded tokens, instead of a fixed count.

    At HH lengths (mean ~160 tokens, tail 768) a fixed batch size is a bad trade: the longest
    batch sets the memory peak while the typical batch is a few thousand tokens, too few to keep
    a GPU busy (bench/NOTES.md: the step is launch-bound). A token budget holds every batch near
    the same padded size. The draws are `sampler.draws()` in order (so which examples are
    trained, and how often, follows the sampler's weights); each megabatch of about
    `megabatch_batches` budgets' worth is sorted longest first, packed greedily, and its batches
    shuffled. Batches then hold different numbers of examples: `mean_examples` (set when an
    epoch's batches are built) lets the loss weigh every example alike (`example_weight`).

    Yields exactly `num_batches` batches per epoch, the same ones for the same (seed, epoch),
    so a resumed run replays them; accelerate deals them out to the processes in turn.
    """

    def __init__(
        self,
        sampler,
        lengths: list[int],
        rows_per_example: int,
        max_tokens: int,
        num_batches: int,
        seed: int,
        megabatch_batches: int = 50,
    ):
        if max_tokens < 1 or num_batches < 1 or rows_per_example < 1:
            raise ValueError(
                "max_tokens, num_batches and rows_per_example must be at least 1, got "
                f"{max_tokens}, {num_batches} and {rows_per_example}"
            )
        self.sampler = sampler
        self.lengths = lengths
        self.rows_per_example = rows_per_example
        self.max_tokens = max_tokens
        self.num_batches = num_batches
        self.seed = seed
        self.megabatch_batches = megabatch_batches
        self.epoch = 0
        self.mean_examples: float | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        batches = self._epoch_batches()
        self.mean_examples = sum(map(len, batches)) / len(batches)
        return iter(batches)

    def _epoch_batches(self) -> list[list[int]]:
        draws = self.sampler.draws()
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        batches: list[list[int]] = []
        while len(batches) < self.num_batches:
            packed = pack_to_token_budget(
                self._megabatch(draws), self.lengths, self.rows_per_example, self.max_tokens
            )
            batches += [packed[i] for i in torch.randperm(len(packed), generator=generator)]
        # Cutting the last megabatch's shuffled batches keeps every draw equally likely to stay.
        return batches[: self.num_batches]

    def _megabatch(self, draws) -> list[int]:
        megabatch, tokens = [], 0
        while tokens < self.megabatch_batches * self.max_tokens:
            index = next(draws)
            megabatch.append(index)
            tokens += self.rows_per_example * self.lengths[index]
        return megabatch


def pack_to_token_budget(
    draws: list[int], lengths: list[int], rows_per_example: int, max_tokens: int
) -> list[list[int]]:
    """Sort `draws` longest first and cut them into batches whose padded size (examples x rows
    x the batch's longest length) stays within `max_tokens`. An example longer than the budget
    alone still gets a batch of its own."""
    batches: list[list[int]] = []
    for index in sorted(draws, key=lambda i: -lengths[i]):
        batch = batches[-1] if batches else None
        # Longest first: the batch's first example sets its padded width.
        if batch and (len(batch) + 1) * rows_per_example * lengths[batch[0]] <= max_tokens:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def example_weight(batch_examples: int, mean_examples: float | None) -> float:
    """The factor that turns a batch's per-example mean loss into a sum over its examples
    divided by the epoch's mean batch size, so under token-budget batches (sizes vary) every
    example weighs the same in the epoch's gradient, as with a fixed batch size (factor 1)."""
    return 1.0 if mean_examples is None else batch_examples / mean_examples


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first; ties keep input order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
