"""What each objective trains on: the examples of its family, their sampling weights, the
share of the data kept, and a fingerprint of it all (which enters the train stage's).

Pointwise objectives train on reward records (weighted and selected through the advantage
table), DPO on preference pairs with π_ref's log-probs, PRO on ranked candidates, KTO on
labelled responses and their mismatched pairs with π_ref's log-probs of both.

All of it is decided from the stage's inputs before any weights load; only the examples
themselves wait for the tokenizer (`TrainingSet.build`), so a finished stage loads no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alol.data.conversions import to_preference_records, to_ranked_records, to_reward_records
from alol.data.examples import (
    ExampleDataset,
    SequenceExample,
    Tokenize,
    kl_blocks,
    kto_sequences,
    pair_examples,
    ranked_examples,
    unpaired_examples,
)
from alol.data.records import RewardRecord
from alol.errors import AlolError
from alol.fingerprint import fingerprint_of, fingerprint_records
from alol.method.kto import kto_rows, report_balance
from alol.method.leftover import select_training_examples
from alol.method.objectives import Objective
from alol.pipeline.inputs import StageInputs
from alol.pipeline.tables import advantage_table, joined, reference_logps


@dataclass(frozen=True)
class TrainingSet:
    """An objective's training data as far as it is known before a tokenizer is at hand."""

    build: Callable[[Tokenize], ExampleDataset]
    """The examples, tokenized by the function given; π_ref's log-probs of DPO's and KTO's
    sequences are read (or computed) here, once the stage knows it has work to do."""
    weights: np.ndarray | None
    """Sampling weight of each example (None: uniform)."""
    fraction_positive: float
    """Share of the training pairs with A > 0 (1.0 where no advantage is involved)."""
    fingerprint: str
    """Of the examples, their weights and how they were chosen."""


def nll_dataset(records: list[RewardRecord], tokenize: Tokenize) -> ExampleDataset:
    """Every response as an NLL example: what π_ref is fine-tuned on."""
    return ExampleDataset(
        [SequenceExample(tokenize(r.prompt, r.response), index=i) for i, r in enumerate(records)]
    )


def training_set(inputs: StageInputs, objective: Objective) -> TrainingSet:
    """The `TrainingSet` of `objective` from the stage's training records."""
    if objective.data == "pair":
        return _pair_set(inputs, objective)
    if objective.data == "ranked":
        return _ranked_set(inputs)
    if objective.data == "unpaired":
        return _unpaired_set(inputs)
    records = inputs.train_pairs
    data_fp = fingerprint_records(records)
    if objective.name == "nll" and inputs.cfg.sampling in (None, "uniform"):
        return TrainingSet(lambda tokenize: nll_dataset(records, tokenize), None, 1.0, data_fp)
    table = joined(records, advantage_table(inputs, records, objective.needs_advantage))
    sampling = inputs.cfg.sampling or objective.default_sampling
    indices, weights = select_training_examples(table, objective.positive_advantage_only, sampling)

    def build(tokenize: Tokenize) -> ExampleDataset:
        return ExampleDataset(
            [
                SequenceExample(
                    tokenize(records[i].prompt, records[i].response),
                    index=int(i),
                    reward=float(table.reward[i]),
                    advantage=float(table.advantage[i]),
                    ref_token_logps=table.token_logps(int(i)),
                )
                for i in indices
            ]
        )

    fraction = float(np.mean(table.advantage > 0))
    return TrainingSet(build, weights, fraction, fingerprint_of(data_fp, table.key, sampling))


def _ranked_set(inputs: StageInputs) -> TrainingSet:
    ranked = to_ranked_records(inputs.splits.train)
    return TrainingSet(
        lambda tokenize: ExampleDataset(ranked_examples(ranked, tokenize)),
        None,
        1.0,
        fingerprint_records(to_reward_records(ranked)),
    )


def _pair_set(inputs: StageInputs, objective: Objective) -> TrainingSet:
    pairs = to_preference_records(inputs.splits.train)
    if not pairs:
        raise AlolError(
            f"{objective.name} needs preference pairs, but the training data yields none: give "
            "{prompt, chosen, rejected} records, ranked records, or several scored responses per prompt."
        )
    flat = [RewardRecord(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]

    def build(tokenize: Tokenize) -> ExampleDataset:
        ref_logps = reference_logps(inputs, flat, "pairs") if objective.needs_reference else None
        return ExampleDataset(pair_examples(pairs, tokenize, ref_logps))

    return TrainingSet(build, None, 1.0, fingerprint_records(flat))


def _unpaired_set(inputs: StageInputs) -> TrainingSet:
    """KTO's labelled rows (`alol.method.kto.kto_rows`), cut into blocks of one batch each whose
    completions make each other's mismatched pairs, with π_ref's log-probs of both."""
    cfg = inputs.cfg
    if cfg.kto_label == "advantage_positive":
        records = inputs.train_pairs
        advantages = joined(records, advantage_table(inputs, records)).advantage
        rows = kto_rows(records, cfg.kto_label, advantages=advantages)
    else:
        rows = kto_rows(inputs.splits.train, cfg.kto_label, cfg.kto_threshold)
    report_balance(
        np.array([label for *_, label in rows]), cfg.desirable_weight, cfg.undesirable_weight
    )
    blocks = kl_blocks(len(rows), cfg.batch_size, cfg.seed)
    sequences = [RewardRecord(prompt, response) for prompt, response in kto_sequences(rows, blocks)]
    labels = [rows[i][2] for block in blocks for i in block]

    def build(tokenize: Tokenize) -> ExampleDataset:
        ref_logps = reference_logps(inputs, sequences, "kto")
        examples = unpaired_examples(rows, blocks, tokenize, ref_logps)
        return ExampleDataset(examples, batch_size=cfg.batch_size)

    return TrainingSet(build, None, 1.0, fingerprint_of(fingerprint_records(sequences), labels))
