"""Training examples: what one row of each objective family carries.

Four families match the objective registry's `data` field:
- `sequence`: one (prompt, response) with its reward, advantage and reference token log-probs;
- `pair`: a chosen and a rejected response to one prompt (DPO);
- `ranked`: several candidates to one prompt with their rewards (PRO);
- `unpaired`: one labelled response and its mismatched pair (KTO).
Reference log-probs are precomputed (`alol.models.reference`), so examples carry them as data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from alol.data.records import PreferenceRecord, Prompt, RankedRecord
from alol.data.tokenize import TokenizedPair
from alol.errors import AlolError


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


@dataclass
class UnpairedExample:
    """KTO's example: a completion marked desirable or not, and its mismatched pair (the same
    prompt with another example of the batch's completion) for the KL estimate (`alol.method.kto`)."""

    completion: TokenizedPair
    mismatched: TokenizedPair
    label: bool
    index: int
    ref_logp: float | None = None
    ref_mismatched_logp: float | None = None


Example = SequenceExample | PairExample | RankedExample | UnpairedExample


class ExampleDataset(Dataset):
    """A list of examples; `lengths` lets the sampler group similar lengths into batches.
    `batch_size` names the batch size KTO's examples were formed in blocks of (their
    mismatched pairs lie inside a block), which training must use."""

    def __init__(self, examples: list[Example], batch_size: int | None = None):
        self.examples = examples
        self.batch_size = batch_size

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
    if isinstance(example, UnpairedExample):
        return [example.completion, example.mismatched]
    return example.candidates


def example_length(example: Example) -> int:
    """Tokens the example occupies in a padded batch row (the longest of its sequences)."""
    return max(pair.length for pair in sequences_of(example))


def rows_per_example(dataset: ExampleDataset) -> int:
    """Padded rows one example adds to a batch: 1 sequence, 2 for a pair (chosen and rejected)
    or an unpaired example (the completion and its mismatched pair), the most candidates of any
    ranked example (shorter lists are padded to it)."""
    first = dataset.examples[0]
    if isinstance(first, SequenceExample):
        return 1
    if isinstance(first, PairExample | UnpairedExample):
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


def kl_blocks(count: int, batch_size: int, seed: int) -> list[list[int]]:
    """A seeded shuffle of `range(count)` cut into blocks of `batch_size` (the last one filled
    up from the start of the shuffle, so every batch is whole): the batches KTO trains on."""
    if batch_size < 2:
        raise AlolError(
            f"KTO needs batches of at least 2 examples (got {batch_size}): its KL estimate pairs "
            "each prompt with another example's completion of the same batch, and a batch of 1 "
            "has none (TRL refuses it too). Raise --batch-size."
        )
    if count < batch_size:
        raise AlolError(
            f"KTO needs at least one whole batch of distinct examples: {count} example(s) for "
            f"a batch size of {batch_size}. Give more data or lower --batch-size."
        )
    order = np.random.default_rng(seed).permutation(count).tolist()
    order += order[: -len(order) % batch_size]
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def mismatched(block: Sequence[int]) -> list[int]:
    """Whose completion each member of a block is paired with: the member before it (the first
    takes the last's), as TRL pairs a batch's KL completions."""
    return [block[-1], *block[:-1]]


def check_blocks(dataset: ExampleDataset | None, batch_size: int) -> None:
    """KTO's examples come in blocks of one batch each (their mismatched pairs lie inside a
    block): training must cut batches of that size."""
    if dataset is not None and dataset.batch_size != batch_size:
        raise ValueError(
            f"the KTO examples were formed in batches of {dataset.batch_size}, but "
            f"per_device_train_batch_size is {batch_size}: build them for the batch size you "
            "train with (alol.data.examples.kl_blocks)"
        )


def kto_sequences(
    rows: list[tuple[Prompt, str, bool]], blocks: list[list[int]]
) -> list[tuple[Prompt, str]]:
    """The (prompt, response) sequences of KTO's examples in `blocks` (`alol.method.kto.kl_blocks`):
    every completion in block order, then every mismatched pair in the same order. π_ref's
    log-probs are precomputed over exactly this list."""
    completions = [(rows[i][0], rows[i][1]) for block in blocks for i in block]
    pairs = [
        (rows[i][0], rows[j][1])
        for block in blocks
        for i, j in zip(block, mismatched(block), strict=True)
    ]
    return completions + pairs


def unpaired_examples(
    rows: list[tuple[Prompt, str, bool]],
    blocks: list[list[int]],
    tokenize: Tokenize,
    ref_logps: np.ndarray | None = None,
) -> list[UnpairedExample]:
    """KTO's examples, block after block (each block one batch, `alol.method.sampling.BlockSampler`);
    `ref_logps` holds π_ref's summed log-probs of `kto_sequences(rows, blocks)`."""
    sequences = kto_sequences(rows, blocks)
    count = len(sequences) // 2
    labels = [rows[i][2] for block in blocks for i in block]
    return [
        UnpairedExample(
            tokenize(*sequences[k]),
            tokenize(*sequences[count + k]),
            labels[k],
            index=k,
            ref_logp=None if ref_logps is None else float(ref_logps[k]),
            ref_mismatched_logp=None if ref_logps is None else float(ref_logps[count + k]),
        )
        for k in range(count)
    ]
