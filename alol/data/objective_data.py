"""What an objective trains on, from records: the examples of its family, their sampling
weights, the share of the data kept, and a fingerprint of it all. One builder serves the
pipeline's train stage and `AlolTrainer` given records.

Pointwise objectives train on reward records (selected and weighted by R or A), DPO on
preference pairs with π_ref's log-probs, PRO on ranked candidates, KTO on labelled responses
and their mismatched pairs with π_ref's log-probs of both. What lies beside the records (R,
V(x), A, π_ref's log-probs) comes from `Sources`: the pipeline reads its cached tables, the
trainer the rows and the model at hand. All but the tokenized examples is decided up front
(`TrainingSet.build` tokenizes), so a finished stage loads no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from alol.data.conversions import (
    split_source,
    to_preference_records,
    to_ranked_records,
    to_reward_records,
)
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
from alol.errors import AlolError, DataError
from alol.fingerprint import fingerprint_of, fingerprint_records
from alol.method.kto import kto_rows, report_balance
from alol.method.leftover import (
    balanced_by_group,
    length_neutral,
    response_words,
    select_examples,
)
from alol.method.objectives import Objective


@dataclass(frozen=True)
class PointwiseScores:
    """What the pointwise objectives read beside each reward record, in the records' order."""

    reward: np.ndarray
    """R (NaN where a record has none)."""
    advantage: np.ndarray | None
    value: np.ndarray | None
    """V(x), which only makes the no-positive-advantage error more telling."""
    token_logps: Callable[[int], np.ndarray] | None
    """π_ref's log-probs of record `i`'s response tokens."""
    key: str = ""
    """Names what the numbers were computed from (the advantage table's cache key)."""


@dataclass(frozen=True)
class Sources:
    """Where the numbers beside the records come from."""

    scores: Callable[[list[RewardRecord], Objective], PointwiseScores]
    """The `PointwiseScores` of the reward records, as far as the objective reads them."""
    advantages: Callable[[list[RewardRecord]], np.ndarray]
    """A = R − V(x) of each reward record (KTO's 'advantage_positive' labels)."""
    reference: Callable[[list[RewardRecord], str], np.ndarray]
    """π_ref's summed log-probs of each (prompt, response) of a list ("pairs", "kto")."""


class Settings(Protocol):
    """The settings the builder reads, which `PipelineConfig` and `AlolConfig` share."""

    sampling: str | None
    balance_groups: bool
    length_neutral_advantage: bool
    kto_label: str
    kto_threshold: float | None
    desirable_weight: float
    undesirable_weight: float
    seed: int


@dataclass(frozen=True)
class TrainingSet:
    """An objective's training data as far as it is known before a tokenizer is at hand."""

    build: Callable[[Tokenize], ExampleDataset]
    """The examples, tokenized by the function given; π_ref's log-probs of DPO's and KTO's
    sequences are read (or computed) here, when the examples are wanted."""
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


def training_set(
    objective: Objective,
    records: list,
    pointwise: list[RewardRecord],
    settings: Settings,
    batch_size: int,
    sources: Sources,
) -> TrainingSet:
    """The `TrainingSet` of `objective` from the training records (`pointwise`: them as the
    reward records the pointwise objectives train on); KTO forms blocks of `batch_size`."""
    if objective.data == "pair":
        return _pair_set(objective, records, sources)
    if objective.data == "ranked":
        return _ranked_set(records)
    if objective.data == "unpaired":
        return _unpaired_set(records, pointwise, settings, batch_size, sources)
    return _pointwise_set(objective, pointwise, settings, sources)


def _pointwise_set(
    objective: Objective, records: list[RewardRecord], settings: Settings, sources: Sources
) -> TrainingSet:
    data_fp = fingerprint_records(records)
    sampling = settings.sampling or objective.default_sampling
    if objective.name == "nll" and sampling == "uniform":
        # every answer once per pass: each group already at its share, balanced or not
        return TrainingSet(lambda tokenize: nll_dataset(records, tokenize), None, 1.0, data_fp)
    scores = sources.scores(records, objective)
    if objective.needs_reward and np.isnan(scores.reward).any():
        raise DataError(f"{objective.name} needs a 'reward' on every record", field="reward")
    neutral = settings.length_neutral_advantage and scores.advantage is not None
    advantage = scores.advantage
    if neutral:
        advantage = length_neutral(advantage, response_words([r.response for r in records]))
    indices, weights = select_examples(
        scores.reward, advantage, objective.positive_advantage_only, sampling, scores.value
    )
    groups = record_groups(records) if settings.balance_groups else None
    if groups is not None:
        weights = balanced_by_group(weights, indices, groups)

    def build(tokenize: Tokenize) -> ExampleDataset:
        return ExampleDataset(
            [
                SequenceExample(
                    tokenize(records[i].prompt, records[i].response),
                    index=i,
                    reward=None if np.isnan(scores.reward[i]) else float(scores.reward[i]),
                    advantage=None if advantage is None else float(advantage[i]),
                    ref_token_logps=None if scores.token_logps is None else scores.token_logps(i),
                )
                for i in indices.tolist()
            ]
        )

    fraction = 1.0 if advantage is None else float(np.mean(advantage > 0))
    how = (sampling,) if groups is None else (sampling, "balanced by group", groups.tolist())
    how += ("length-neutral A",) if neutral else ()
    return TrainingSet(build, weights, fraction, fingerprint_of(data_fp, scores.key, *how))


def record_groups(records: list[RewardRecord]) -> np.ndarray:
    """Each record's `group`, for `balance_groups`, which needs one on every record."""
    missing = next((record for record in records if record.group is None), None)
    if missing is not None:
        raise DataError(
            "no 'group': balance_groups needs the group (the source in a mix) of every "
            "training record; add a 'group' field to each, or set balance_groups: false",
            field="group",
        ).at(*split_source(missing.source))
    return np.array([record.group for record in records])


def _ranked_set(records: list) -> TrainingSet:
    ranked = to_ranked_records(records)
    return TrainingSet(
        lambda tokenize: ExampleDataset(ranked_examples(ranked, tokenize)),
        None,
        1.0,
        fingerprint_records(to_reward_records(ranked)),
    )


def _pair_set(objective: Objective, records: list, sources: Sources) -> TrainingSet:
    pairs = to_preference_records(records)
    if not pairs:
        raise AlolError(
            f"{objective.name} needs preference pairs, but the training data yields none: give "
            "{prompt, chosen, rejected} records, ranked records, or several scored responses per prompt."
        )
    flat = [RewardRecord(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]

    def build(tokenize: Tokenize) -> ExampleDataset:
        ref_logps = sources.reference(flat, "pairs") if objective.needs_reference else None
        return ExampleDataset(pair_examples(pairs, tokenize, ref_logps))

    return TrainingSet(build, None, 1.0, fingerprint_records(flat))


def _unpaired_set(
    records: list,
    pointwise: list[RewardRecord],
    settings: Settings,
    batch_size: int,
    sources: Sources,
) -> TrainingSet:
    """KTO's labelled rows (`alol.method.kto.kto_rows`), cut into blocks of one batch each whose
    completions make each other's mismatched pairs, with π_ref's log-probs of both."""
    if settings.kto_label == "advantage_positive":
        advantages = sources.advantages(pointwise)
        rows = kto_rows(pointwise, settings.kto_label, advantages=advantages)
    else:
        rows = kto_rows(records, settings.kto_label, settings.kto_threshold)
    labels = [label for *_, label in rows]
    report_balance(np.array(labels), settings.desirable_weight, settings.undesirable_weight)
    blocks = kl_blocks(len(rows), batch_size, settings.seed)
    sequences = [RewardRecord(prompt, response) for prompt, response in kto_sequences(rows, blocks)]

    def build(tokenize: Tokenize) -> ExampleDataset:
        ref_logps = sources.reference(sequences, "kto")
        examples = unpaired_examples(rows, blocks, tokenize, ref_logps)
        return ExampleDataset(examples, batch_size=batch_size)

    block_labels = [labels[i] for block in blocks for i in block]
    return TrainingSet(
        build, None, 1.0, fingerprint_of(fingerprint_records(sequences), block_labels)
    )
