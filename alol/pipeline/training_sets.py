"""What each objective trains on in the pipeline: `alol.data.objective_data`'s builder over
the stage's records, with the numbers beside them from the cached tables (the advantage
table, π_ref's log-probs of DPO's pairs and KTO's sequences), each checked against the
records it is joined with."""

from __future__ import annotations

from alol.data.objective_data import PointwiseScores, Sources, TrainingSet
from alol.data.objective_data import training_set as objective_training_set
from alol.data.records import RewardRecord
from alol.method.objectives import Objective
from alol.pipeline.inputs import StageInputs
from alol.pipeline.tables import advantage_table, joined, reference_logps


def training_set(inputs: StageInputs, objective: Objective) -> TrainingSet:
    """The `TrainingSet` of `objective` from the stage's training records."""
    return objective_training_set(
        objective,
        inputs.splits.train,
        inputs.train_pairs,
        inputs.cfg,
        inputs.cfg.batch_size,
        table_sources(inputs),
    )


def table_sources(inputs: StageInputs) -> Sources:
    """R, V(x), A and π_ref's log-probs from the tables the precompute caches."""

    def scores(records: list[RewardRecord], objective: Objective) -> PointwiseScores:
        table = joined(records, advantage_table(inputs, records, objective.needs_advantage))
        return PointwiseScores(
            table.reward, table.advantage, table.value, table.token_logps, table.key
        )

    return Sources(
        scores=scores,
        advantages=lambda records: joined(records, advantage_table(inputs, records)).advantage,
        reference=lambda sequences, folder: reference_logps(inputs, sequences, folder),
    )
