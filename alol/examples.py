"""Training examples: what one row of each objective family carries.

Three families match the objective registry's `data` field:
- `sequence`: one (prompt, response) with its reward, advantage and reference token log-probs;
- `pair`: a chosen and a rejected response to one prompt (DPO);
- `ranked`: several candidates to one prompt with their rewards (PRO).
Reference log-probs are precomputed (`alol.reference`), so examples carry them as data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from alol.tokenize import TokenizedPair


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

    def cut_counts(self) -> dict[str, int]:
        """How many sequences lost tokens to the length limits: reported by the stages."""
        pairs = [pair for example in self.examples for pair in sequences_of(example)]
        return {
            "sequences": len(pairs),
            "prompts_cut": sum(pair.prompt_cut for pair in pairs),
            "responses_cut": sum(pair.response_cut for pair in pairs),
        }


def sequences_of(example: Example) -> list[TokenizedPair]:
    if isinstance(example, SequenceExample):
        return [example.pair]
    if isinstance(example, PairExample):
        return [example.chosen, example.rejected]
    return example.candidates


def example_length(example: Example) -> int:
    """Tokens the example occupies in a padded batch row (the longest of its sequences)."""
    return max(pair.length for pair in sequences_of(example))


def rows_per_example(dataset: ExampleDataset) -> int:
    """Padded rows one example adds to a batch: 1 sequence, 2 for a pair (chosen and rejected),
    the most candidates of any ranked example (shorter lists are padded to it)."""
    first = dataset.examples[0]
    if isinstance(first, SequenceExample):
        return 1
    if isinstance(first, PairExample):
        return 2
    return max(len(example.candidates) for example in dataset.examples)
