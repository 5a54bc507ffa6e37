"""Training examples and their collation: what one row of each objective family carries.

Three families match the objective registry's `data` field:
- `sequence`: one (prompt, response) with its reward, advantage and reference token log-probs;
- `pair`: a chosen and a rejected response to one prompt (DPO);
- `ranked`: several candidates to one prompt with their rewards (PRO).
Reference log-probs are precomputed (`alol.advantage`), so batches carry them as data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from alol.data import TokenizedPair, collate_pairs, length_grouped_order


@dataclass
class SequenceExample:
    pair: TokenizedPair
    index: int
    reward: float | None = None
    advantage: float | None = None
    ref_token_logps: np.ndarray | None = None  # one entry per response token


@dataclass
class PairExample:
    chosen: TokenizedPair
    rejected: TokenizedPair
    index: int
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None


@dataclass
class RankedExample:
    candidates: list[TokenizedPair]
    rewards: list[float]
    index: int


Example = SequenceExample | PairExample | RankedExample


class ExampleDataset(Dataset):
    """A list of examples; `lengths` lets the sampler group similar lengths into batches."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def lengths(self) -> list[int]:
        return [example_length(example) for example in self.examples]


def example_length(example: Example) -> int:
    """Tokens the example occupies in a padded batch row (the longest of its sequences)."""
    if isinstance(example, SequenceExample):
        pairs = [example.pair]
    elif isinstance(example, PairExample):
        pairs = [example.chosen, example.rejected]
    else:
        pairs = example.candidates
    return max(len(p.prompt_ids) + len(p.response_ids) for p in pairs)


def rows_per_example(dataset: ExampleDataset) -> int:
    """Padded rows one example adds to a batch: 1 sequence, 2 for a pair (chosen and rejected),
    the most candidates of any ranked example (shorter lists are padded to it)."""
    first = dataset.examples[0]
    if isinstance(first, SequenceExample):
        return 1
    if isinstance(first, PairExample):
        return 2
    return max(len(example.candidates) for example in dataset.examples)


def place_on_response_positions(
    values: list[np.ndarray], response_mask: torch.Tensor
) -> torch.Tensor:
    """Scatter per-response-token values into a `[B, L]` tensor aligned with `response_mask`."""
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    for row, row_values in enumerate(values):
        out[row, response_mask[row]] = torch.as_tensor(row_values, dtype=torch.float32)
    return out


class Collator:
    """Pads a list of examples of one family into the batch dict of docs/architecture.md."""

    def __init__(
        self, pad_token_id: int, padding_side: str = "right", pad_to_multiple_of: int | None = None
    ):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        first = examples[0]
        if isinstance(first, SequenceExample):
            return self._sequences(examples)
        if isinstance(first, PairExample):
            return self._pairs(examples)
        return self._ranked(examples)

    def _pad(self, pairs: list[TokenizedPair]) -> dict[str, torch.Tensor]:
        return collate_pairs(pairs, self.pad_token_id, self.padding_side, self.pad_to_multiple_of)

    def _sequences(self, examples: list[SequenceExample]) -> dict[str, torch.Tensor]:
        batch = self._pad([e.pair for e in examples])
        batch["index"] = torch.tensor([e.index for e in examples])
        if all(e.reward is not None for e in examples):
            batch["reward"] = torch.tensor([e.reward for e in examples], dtype=torch.float32)
        if all(e.advantage is not None for e in examples):
            batch["advantage"] = torch.tensor([e.advantage for e in examples], dtype=torch.float32)
        if all(e.ref_token_logps is not None for e in examples):
            batch["ref_token_logps"] = place_on_response_positions(
                [e.ref_token_logps for e in examples], batch["response_mask"]
            )
        return batch

    def _pairs(self, examples: list[PairExample]) -> dict[str, torch.Tensor]:
        batch = self._pad([e.chosen for e in examples] + [e.rejected for e in examples])
        batch["index"] = torch.tensor([e.index for e in examples])
        if all(e.ref_chosen_logp is not None for e in examples):
            batch["ref_chosen_logp"] = torch.tensor([e.ref_chosen_logp for e in examples])
            batch["ref_rejected_logp"] = torch.tensor([e.ref_rejected_logp for e in examples])
        return batch

    def _ranked(self, examples: list[RankedExample]) -> dict[str, torch.Tensor]:
        """Stack K candidates per prompt; short lists repeat their first candidate, masked out."""
        for e in examples:
            if len(e.candidates) < 2:
                raise ValueError(
                    f"training example {e.index} has {len(e.candidates)} candidate response(s); "
                    "ranking objectives (PRO) need at least 2 per prompt: drop prompts with a "
                    "single response or train them with another objective"
                )
        k = max(len(e.candidates) for e in examples)
        pairs, rewards, mask = [], [], []
        for e in examples:
            missing = k - len(e.candidates)
            pairs += e.candidates + [e.candidates[0]] * missing
            rewards.append(list(e.rewards) + [0.0] * missing)
            mask.append([True] * len(e.candidates) + [False] * missing)
        batch = self._pad(pairs)
        batch["index"] = torch.tensor([e.index for e in examples])
        batch["rewards"] = torch.tensor(rewards, dtype=torch.float32)
        batch["candidate_mask"] = torch.tensor(mask)
        return batch


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
