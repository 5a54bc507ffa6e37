"""`AlolTrainer(train_dataset=...)` given records, as TRL's trainers take a `datasets.Dataset`.

Rows in any of alol's record formats (reward, preference, ranked, HH; TRL's forms too) become
the examples of the objective's family, tokenized with the config's length limits. What the
pipeline precomputes in its own stages is done here at construction: π_ref's log-probs, from
the model before any adapter is added (it is π_ref then), and the sampling weights the
objective asks for. A-LoL's advantages cannot be made here, since they need a value head
fitted on π_ref's own answers: reward rows carry them in an `advantage` field (from
`alol advantage` or `alol.models.precompute.compute_advantages`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from alol.data.conversions import to_preference_records, to_ranked_records, to_reward_records
from alol.data.examples import (
    ExampleDataset,
    SequenceExample,
    kl_blocks,
    kto_sequences,
    pair_examples,
    ranked_examples,
    unpaired_examples,
)
from alol.data.formats import records_from_rows
from alol.data.tokenize import render_prompt, tokenize_pair
from alol.errors import DataError
from alol.method.kto import kto_rows, report_balance
from alol.method.leftover import select_examples
from alol.method.objectives import Objective
from alol.models.reference import ReferenceConfig, reference_pass
from alol.train.config import AlolConfig

ADVANTAGE_FIELD = "advantage"


def examples_from_records(
    rows: Iterable[dict[str, Any]], objective: Objective, model, tokenizer, args: AlolConfig
) -> tuple[ExampleDataset, list[float] | None]:
    """The objective's examples from `rows`, and their sampling weights (None: uniform)."""
    rows = list(rows)
    records = records_from_rows(rows).records

    def tokenize(prompt, response: str):
        text = render_prompt(prompt, tokenizer, args.string_prompts)
        return tokenize_pair(
            tokenizer, text, response, args.max_prompt_length, args.max_response_length
        )

    if objective.data == "ranked":
        return ExampleDataset(ranked_examples(to_ranked_records(records), tokenize)), None
    if objective.data == "unpaired":
        return _unpaired_dataset(rows, records, model, tokenizer, tokenize, args), None
    if objective.data == "pair":
        pairs = to_preference_records(records)
        responses = [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
        ref = (
            _reference_logps(model, tokenizer, responses, args)
            if objective.needs_reference
            else None
        )
        summed = None if ref is None else np.array([t.sum(dtype=np.float64) for t in ref])
        return ExampleDataset(pair_examples(pairs, tokenize, summed)), None
    pointwise = to_reward_records(records, preferred_only=args.train_responses == "preferred")
    rewards = np.array([np.nan if r.total_reward is None else r.total_reward for r in pointwise])
    if objective.needs_reward and np.isnan(rewards).any():
        raise DataError(f"{objective.name} needs a 'reward' on every record", field="reward")
    advantages = _advantages(rows, pointwise) if objective.needs_advantage else None
    ref = None
    if objective.needs_reference:
        ref = _reference_logps(model, tokenizer, [(r.prompt, r.response) for r in pointwise], args)
    sampling = args.sampling or objective.default_sampling
    indices, weights = select_examples(rewards, advantages, objective.needs_advantage, sampling)
    examples = [
        SequenceExample(
            tokenize(pointwise[i].prompt, pointwise[i].response),
            index=int(i),
            reward=None if np.isnan(rewards[i]) else float(rewards[i]),
            advantage=None if advantages is None else float(advantages[i]),
            ref_token_logps=None if ref is None else ref[i],
        )
        for i in indices
    ]
    return ExampleDataset(examples), None if weights is None else weights.tolist()


def _unpaired_dataset(rows, records, model, tokenizer, tokenize, args: AlolConfig):
    """KTO's examples (`alol.method.kto.kto_rows`), with π_ref's log-probs of the completions and of
    their mismatched pairs from `model` as it is now."""
    if args.kto_label == "advantage_positive":
        pointwise = to_reward_records(records, preferred_only=args.train_responses == "preferred")
        labelled = kto_rows(pointwise, args.kto_label, advantages=_advantages(rows, pointwise))
    else:
        labelled = kto_rows(records, args.kto_label, args.kto_threshold)
    labels = np.array([label for *_, label in labelled])
    report_balance(labels, args.desirable_weight, args.undesirable_weight)
    blocks = kl_blocks(len(labelled), args.per_device_train_batch_size, args.seed)
    token_logps = _reference_logps(model, tokenizer, kto_sequences(labelled, blocks), args)
    summed = np.array([t.sum(dtype=np.float64) for t in token_logps])
    examples = unpaired_examples(labelled, blocks, tokenize, summed)
    return ExampleDataset(examples, batch_size=args.per_device_train_batch_size)


def _advantages(rows: list[dict[str, Any]], pointwise: list) -> np.ndarray:
    """The rows' `advantage` field: one per reward row (rows and records align one to one)."""
    if len(rows) != len(pointwise) or not all(ADVANTAGE_FIELD in row for row in rows):
        raise DataError(
            f"A-LoL objectives need A = R − V(x) on every record: give reward rows an "
            f"'{ADVANTAGE_FIELD}' field (as `alol advantage` computes it, or "
            "alol.models.precompute.compute_advantages), or run the whole pipeline with `alol run`",
            field=ADVANTAGE_FIELD,
        )
    return np.array([float(row[ADVANTAGE_FIELD]) for row in rows])


@torch.no_grad()
def _reference_logps(
    model, tokenizer, responses: list[tuple], args: AlolConfig
) -> list[np.ndarray]:
    """π_ref's token log-probs of each (prompt, response), from `model` as it is now."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    config = ReferenceConfig(
        max_prompt_length=args.max_prompt_length,
        max_response_length=args.max_response_length,
        reference_dtype=str(dtype).removeprefix("torch."),
        show_progress=False,
    )
    prompts = [render_prompt(prompt, tokenizer, args.string_prompts) for prompt, _ in responses]
    token_logps, _ = reference_pass(
        model, tokenizer, prompts, [r for _, r in responses], None, config
    )
    return token_logps
