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
