"""Training examples: what one row of each objective family carries.

Three families match the objective registry's `data` field:
- `sequence`: one (prompt, response) with its reward, advantage and reference token log-probs;
- `pair`: a chosen and a rejected response to one prompt (DPO);
- `ranked`: several candidates to one prompt with their rewards (PRO).
Reference log-probs are precomputed (`alol.reference`), so examples carry them as data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from alol.records import PreferenceRecord, Prompt, RankedRecord
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


Tokenize = Callable[[Prompt, str], TokenizedPair]
"""(prompt, response) → token ids, with the caller's rendering and length limits."""


def pair_examples(
    pairs: list[PreferenceRecord], tokenize: Tokenize, ref_logps: np.ndarray | None = None
) -> list[PairExample]:
    """DPO's examples; `ref_logps` holds π_ref's summed log-probs, chosen then rejected per pair."""
    return [
        PairExample(
            tokenize(p.prompt, p.chosen),
            tokenize(p.prompt, p.rejected),
            index=i,
            ref_chosen_logp=None if ref_logps is None else float(ref_logps[2 * i]),
            ref_rejected_logp=None if ref_logps is None else float(ref_logps[2 * i + 1]),
        )
        for i, p in enumerate(pairs)
    ]


def ranked_examples(ranked: list[RankedRecord], tokenize: Tokenize) -> list[RankedExample]:
    """PRO's examples. Its reward-gap temperatures come from the reward model's logits where
    the records carry them (HH/PRO files), as in PRO's and the A-LoL authors' code: sigmoid
    rewards would shrink every gap (logits −0.4 and −0.7 differ by 0.3, their sigmoids by
    0.07) and so weaken the ranking term against the SFT term."""
    return [
        RankedExample(
            [tokenize(r.prompt, response) for response in r.responses],
            list(r.reward_logits or r.rewards),
            i,
        )
        for i, r in enumerate(ranked)
    ]
