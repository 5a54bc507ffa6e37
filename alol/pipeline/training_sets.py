"""What each objective trains on: the examples of its family, their sampling weights, the
share of the data kept, and a fingerprint of it all (which enters the train stage's).

Pointwise objectives train on reward records (weighted and selected through the advantage
table), DPO on preference pairs with π_ref's log-probs, PRO on ranked candidates, KTO on
labelled responses and their mismatched pairs with π_ref's log-probs of both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from alol.config import PipelineConfig
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
from alol.data.records import RewardRecord
from alol.errors import AlolError
from alol.fingerprint import fingerprint_of, fingerprint_records
from alol.method.kto import kto_rows, report_balance
from alol.method.leftover import select_training_examples
from alol.method.objectives import Objective
from alol.pipeline.inputs import pointwise_records, tokenize_record
from alol.pipeline.tables import advantage_table, pair_reference_logps, reference_logps


class TrainingSet(NamedTuple):
    dataset: ExampleDataset
    weights: np.ndarray | None
    """Sampling weight of each example (None: uniform)."""
    fraction_positive: float
    """Share of the training pairs with A > 0 (1.0 where no advantage is involved)."""
    fingerprint: str
    """Of the examples, their weights and how they were chosen."""


def nll_dataset(cfg: PipelineConfig, records: list[RewardRecord], tokenizer) -> ExampleDataset:
    """Every response as an NLL example: what π_ref is fine-tuned on."""
    return ExampleDataset(
        [
            SequenceExample(tokenize_record(tokenizer, r, cfg), index=i)
            for i, r in enumerate(records)
        ]
    )


def training_set(cfg: PipelineConfig, objective: Objective, train_records: list, tokenizer):
    """The `TrainingSet` of `objective` from the training records."""
    if objective.data == "pair":
        return _pair_set(cfg, objective, train_records, tokenizer)
    if objective.data == "ranked":
        return _ranked_set(cfg, train_records, tokenizer)
    if objective.data == "unpaired":
        return _unpaired_set(cfg, train_records, tokenizer)
    records = pointwise_records(cfg, train_records)
    data_fp = fingerprint_records(records)
    if objective.name == "nll" and cfg.sampling in (None, "uniform"):
        return TrainingSet(nll_dataset(cfg, records, tokenizer), None, 1.0, data_fp)
    table = advantage_table(cfg, needs_value=objective.needs_advantage)
    sampling = cfg.sampling or objective.default_sampling
    indices, weights = select_training_examples(table, objective.positive_advantage_only, sampling)
    examples = [
        SequenceExample(
            tokenize_record(tokenizer, records[i], cfg),
            index=int(i),
            reward=float(table.reward[i]),
            advantage=float(table.advantage[i]),
            ref_token_logps=table.token_logps(int(i)),
        )
        for i in indices
    ]
    fraction = float(np.mean(table.advantage > 0))
    return TrainingSet(
        ExampleDataset(examples), weights, fraction, fingerprint_of(data_fp, table.key, sampling)
    )


def _ranked_set(cfg: PipelineConfig, train_records: list, tokenizer) -> TrainingSet:
    ranked = to_ranked_records(train_records)
    examples = ranked_examples(ranked, _tokenizer_of(cfg, tokenizer))
    return TrainingSet(
        ExampleDataset(examples), None, 1.0, fingerprint_records(to_reward_records(ranked))
    )


def _pair_set(cfg: PipelineConfig, objective: Objective, train_records: list, tokenizer):
    pairs = to_preference_records(train_records)
    if not pairs:
        raise AlolError(
            f"{objective.name} needs preference pairs, but the training data yields none: give "
            "{prompt, chosen, rejected} records, ranked records, or several scored responses per prompt."
        )
    ref_logps = pair_reference_logps(cfg, pairs) if objective.needs_reference else None
    examples = pair_examples(pairs, _tokenizer_of(cfg, tokenizer), ref_logps)
    flat = [RewardRecord(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    return TrainingSet(ExampleDataset(examples), None, 1.0, fingerprint_records(flat))


def _unpaired_set(cfg: PipelineConfig, train_records: list, tokenizer) -> TrainingSet:
    """KTO's labelled rows (`alol.method.kto.kto_rows`), cut into blocks of one batch each whose
    completions make each other's mismatched pairs, with π_ref's log-probs of both."""
    if cfg.kto_label == "advantage_positive":
        records = pointwise_records(cfg, train_records)
        advantages = advantage_table(cfg).advantage
        rows = kto_rows(records, cfg.kto_label, advantages=advantages)
    else:
        rows = kto_rows(train_records, cfg.kto_label, cfg.kto_threshold)
    report_balance(
        np.array([label for *_, label in rows]), cfg.desirable_weight, cfg.undesirable_weight
    )
    blocks = kl_blocks(len(rows), cfg.batch_size, cfg.seed)
    sequences = [RewardRecord(prompt, response) for prompt, response in kto_sequences(rows, blocks)]
    ref_logps = reference_logps(cfg, sequences, "kto")
    examples = unpaired_examples(rows, blocks, _tokenizer_of(cfg, tokenizer), ref_logps)
    labels = [example.label for example in examples]
    return TrainingSet(
        ExampleDataset(examples, batch_size=cfg.batch_size),
        None,
        1.0,
        fingerprint_of(fingerprint_records(sequences), labels),
    )


def _tokenizer_of(cfg: PipelineConfig, tokenizer):
    return lambda prompt, response: tokenize_record(tokenizer, RewardRecord(prompt, response), cfg)
