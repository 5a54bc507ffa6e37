"""Padding: token rows into batch tensors, for every pass that batches sequences (training,
the reference precompute, value features, decoding), and the training collator that adds
each example's reward, advantage and reference log-probs."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from alol.data.examples import Example, PairExample, RankedExample, SequenceExample, UnpairedExample
from alol.data.tokenize import TokenizedPair

MISMATCHED = "mismatched_"
"""Prefix of the keys under which a KTO batch carries its mismatched pairs."""


def padded_width(length: int, pad_to_multiple_of: int | None) -> int:
    """The width a batch whose longest row has `length` tokens is padded to."""
    multiple = pad_to_multiple_of or 1
    return -(-length // multiple) * multiple


def pad_token_rows(
    rows: list[list[int]], pad_token_id: int, side: str = "right", width: int | None = None
) -> tuple[Tensor, Tensor]:
    """`input_ids` and `attention_mask` `[len(rows), width]` long (width: the longest row).

    The one padding routine: right padding keeps every real token at its unpadded position
    (training, the precompute's responses, value features); left padding ends every row in the
    last column, as batched decoding and the precompute's prompts want.
    """
    if side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
    if pad_token_id is None:
        raise ValueError(
            "no pad token id; set tokenizer.pad_token (for example to tokenizer.eos_token)"
        )
    width = max(map(len, rows)) if width is None else width
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        start = 0 if side == "right" else width - len(ids)
        input_ids[row, start : start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start : start + len(ids)] = 1
    return input_ids, attention_mask


def locate_response_tokens(response_mask: Tensor) -> Tensor:
    """`[2, N]` long: the row and column of every response token, in row-major order.

    collate_pairs computes them on the CPU and ships them with the batch. Computed on an
    accelerator they would cost a host sync (the count N is data-dependent), mid-forward, where
    it stalls the host until the decoder has run instead of queueing the rest of the step.
    """
    return response_mask.nonzero().T


def collate_pairs(
    pairs: list[TokenizedPair],
    pad_token_id: int,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, Tensor]:
    """Pad pairs into one batch (shapes in docs/architecture.md).

    Returns input_ids [B, L] long (prompt, then response, padding after or before),
    attention_mask [B, L] long (1 on real tokens), response_mask [B, L] bool (True on
    response tokens, EOS included) and response_positions [2, N] long (row and column of each
    response token, found here on the CPU so the training step needs no host sync). Right
    padding suits training; left padding ends every prompt in the same column, as batched
    decoding wants. `pad_to_multiple_of` rounds L up, so compiled code meets few distinct shapes.
    """
    if not pairs:
        raise ValueError("no pairs to collate")
    width = padded_width(max(pair.length for pair in pairs), pad_to_multiple_of)
    input_ids, attention_mask = pad_token_rows(
        [pair.prompt_ids + pair.response_ids for pair in pairs], pad_token_id, padding_side, width
    )
    response_mask = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, pair in enumerate(pairs):
        end = width if padding_side == "left" else pair.length
        response_mask[row, end - len(pair.response_ids) : end] = True
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "response_positions": locate_response_tokens(response_mask),
    }


def collate_prompt_groups(
    groups: list[list[TokenizedPair]], pad_token_id: int
) -> dict[str, Tensor]:
    """Pad a batch of prompt groups (pairs that share their prompt) for
    `alol.models.reference.score_shared_prompt_batch`.

    Returns the distinct prompts, left-padded so each ends in the last column, whose state
    predicts the first response token: `prompt_input_ids` / `prompt_attention_mask` `[G, P]`
    long; the responses, right-padded and group by group: `response_input_ids` `[R, Lr]` long
    and `response_mask` `[R, Lr]` bool (True on response tokens, EOS included); and `owner`
    `[R]` long, the prompt row of each response.
    """
    if not groups or not all(groups):
        raise ValueError("no prompt groups to collate, or an empty group")
    prompts = [group[0].prompt_ids for group in groups]
    for prompt_ids, group in zip(prompts, groups, strict=True):
        if any(pair.prompt_ids != prompt_ids for pair in group):
            raise ValueError(
                "the pairs of one prompt group hold different prompt ids; group only pairs whose "
                "rendered prompt text is equal and that were tokenized with the same limits"
            )
    prompt_input_ids, prompt_attention_mask = pad_token_rows(prompts, pad_token_id, "left")
    response_input_ids, response_attention = pad_token_rows(
        [pair.response_ids for group in groups for pair in group], pad_token_id, "right"
    )
    owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(list(map(len, groups))))
    return {
        "prompt_input_ids": prompt_input_ids,
        "prompt_attention_mask": prompt_attention_mask,
        "response_input_ids": response_input_ids,
        "response_mask": response_attention.bool(),
        "owner": owner,
    }


def place_on_response_positions(
    values: list[np.ndarray], response_mask: torch.Tensor
) -> torch.Tensor:
    """Scatter per-response-token values into a `[B, L]` tensor aligned with `response_mask`."""
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    for row, row_values in enumerate(values):
        out[row, response_mask[row]] = torch.as_tensor(row_values, dtype=torch.float32)
    return out


def pack_pairs(pairs: list[TokenizedPair], response_positions: Tensor) -> dict[str, Tensor]:
    """The pairs of a batch as ONE row with no padding, for a padding-free forward pass.

    `packed_input_ids` / `packed_position_ids` `[1, T]` (positions restart at 0 in each
    sequence: the sequence boundaries, from which `alol.models.logprobs.packed_attention_mask` keeps
    the sequences apart), and `packed_response_columns` `[N]`: the packed column of each
    response token, in the order of the padded batch's `response_positions`, so log-probs land
    back in the `[B, L]` layout.
    """
    ids = [pair.prompt_ids + pair.response_ids for pair in pairs]
    starts = torch.tensor([0, *itertools.accumulate(len(row) for row in ids)])
    rows, cols = response_positions
    return {
        "packed_input_ids": torch.tensor([token for row in ids for token in row])[None],
        "packed_position_ids": torch.cat([torch.arange(len(row)) for row in ids])[None],
        "packed_response_columns": starts[rows] + cols,
    }


class Collator:
    """Pads a list of examples of one family into the batch dict of docs/architecture.md;
    with `packing`, the batch also holds its sequences packed into one row (`pack_pairs`)."""

    def __init__(
        self,
        pad_token_id: int,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        packing: bool = False,
    ):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        first = examples[0]
        if isinstance(first, SequenceExample):
            return self._sequences(examples)
        if isinstance(first, PairExample):
            return self._pairs(examples)
        if isinstance(first, UnpairedExample):
            return self._unpaired(examples)
        return self._ranked(examples)

    def _pad(self, pairs: list[TokenizedPair]) -> dict[str, torch.Tensor]:
        batch = collate_pairs(pairs, self.pad_token_id, self.padding_side, self.pad_to_multiple_of)
        if self.packing:
            if self.padding_side != "right":
                raise ValueError("packing needs right padding: the packed columns assume it")
            batch.update(pack_pairs(pairs, batch["response_positions"]))
        return batch

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

    def _unpaired(self, examples: list[UnpairedExample]) -> dict[str, torch.Tensor]:
        """The completions as the batch; the mismatched pairs as a second batch under
        `MISMATCHED` keys, which the trainer runs without gradients (as TRL's KL forward)."""
        batch = self._pad([e.completion for e in examples])
        mismatched = self._pad([e.mismatched for e in examples])
        batch.update({MISMATCHED + key: value for key, value in mismatched.items()})
        batch["index"] = torch.tensor([e.index for e in examples])
        batch["label"] = torch.tensor([e.label for e in examples])
        if all(e.ref_logp is not None for e in examples):
            batch["ref_logp"] = torch.tensor([e.ref_logp for e in examples])
            batch["ref_mismatched_logp"] = torch.tensor([e.ref_mismatched_logp for e in examples])
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
