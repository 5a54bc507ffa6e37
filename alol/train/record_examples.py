"""`AlolTrainer(train_dataset=...)` given records, as TRL's trainers take a `datasets.Dataset`.

Rows in any of alol's record formats (reward, preference, ranked, HH; TRL's forms too) become
the examples of the objective's family, tokenized with the config's length limits, by the
builder the pipeline uses (`alol.data.objective_data`). What the pipeline precomputes in its
own stages is done here at construction: π_ref's log-probs, from
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

from alol.data.conversions import to_reward_records
from alol.data.examples import ExampleDataset
from alol.data.formats import records_from_rows
from alol.data.objective_data import PointwiseScores, Sources, training_set
from alol.data.records import RewardRecord
from alol.data.tokenize import render_prompt, tokenize_pair
from alol.errors import DataError
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
    pointwise = to_reward_records(records, preferred_only=args.train_responses == "preferred")
    batch_size = args.per_device_train_batch_size
    sources = row_sources(rows, model, tokenizer, args)
    training = training_set(objective, records, pointwise, args, batch_size, sources)

    def tokenize(prompt, response: str):
        text = render_prompt(prompt, tokenizer, args.string_prompts)
        return tokenize_pair(
            tokenizer, text, response, args.max_prompt_length, args.max_response_length
        )

    weights = None if training.weights is None else training.weights.tolist()
    return training.build(tokenize), weights


def row_sources(rows: list[dict[str, Any]], model, tokenizer, args: AlolConfig) -> Sources:
    """R from the records, A from the rows' `advantage` field, π_ref's log-probs from `model`
    as it is now (before any adapter is added, it is π_ref)."""

    def reference(sequences: list[RewardRecord]) -> list[np.ndarray]:
        return _reference_logps(model, tokenizer, [(r.prompt, r.response) for r in sequences], args)

    def scores(records: list[RewardRecord], objective: Objective) -> PointwiseScores:
        reward = np.array([np.nan if r.total_reward is None else r.total_reward for r in records])
        advantage = _advantages(rows, records) if objective.needs_advantage else None
        token_logps = reference(records) if objective.needs_reference else None
        return PointwiseScores(
            reward, advantage, None, None if token_logps is None else token_logps.__getitem__
        )

    def summed(sequences: list[RewardRecord], _: str) -> np.ndarray:
        return np.array([t.sum(dtype=np.float64) for t in reference(sequences)])

    return Sources(scores, lambda records: _advantages(rows, records), summed)


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
