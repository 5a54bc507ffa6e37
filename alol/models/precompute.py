"""The precompute: one pass of the frozen reference over the training pairs, R from the reward
(or the data), π_ref's log-probs and V(x) from the reference pass (`alol.models.reference`), and
A = R − V(x) (`alol.method.leftover`), kept in an `AdvantageTable`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alol.data.records import RewardRecord
from alol.data.settings import RecordSettings
from alol.data.table import AdvantageTable
from alol.data.tokenize import render_prompt
from alol.errors import DataError
from alol.fingerprint import record_hashes
from alol.models.reference import (
    ReferenceConfig,
    gather_by_prompt_group,
    prepare_reference,
    reference_pass,
)
from alol.rewards import score
from alol.setting_checks import same_as
from alol.training_settings import TrainingSettings

if TYPE_CHECKING:
    import torch

    from alol.method.value_head import ValueHead
    from alol.rewards import Reward


logger = logging.getLogger(__name__)


@dataclass
class AdvantageConfig(ReferenceConfig):
    """The reference pass's settings plus how rewards are computed."""

    reward_timeout: float | None = same_as(TrainingSettings, "reward_timeout")
    string_prompts: str = same_as(RecordSettings, "string_prompts")

    def key_fields(self) -> dict[str, Any]:
        return {**super().key_fields(), "string_prompts": self.string_prompts}


def compute_advantages(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[RewardRecord],
    config: AdvantageConfig,
    value_head: ValueHead | None = None,
    reward: Reward | None = None,
    values: Sequence[float] | None = None,
) -> AdvantageTable:
    """One pass of the frozen reference model over the training pairs: log-probs, V(x), R, A.

    Rewards come from `reward` (all components kept) when given, else from each record's
    stored reward. V(x) is taken from `values`, one per record, when given (per-prompt values
    of `value_estimate: per_prompt`); else, with a value head, it is read off the same forward
    pass that scores the response (`alol.models.reference`); without either V(x) = 0, which is
    what objectives that use the reward alone (`wbc`, `r_lol`, …) need. Under several
    processes (`accelerate launch`), each process scores whole prompt groups
    (`gather_by_prompt_group`) and every process returns the whole table, in record order.
    """
    if not records:
        raise ValueError("no training records to compute advantages for")
    prepare_reference(model, config)
    if reward is None:
        _check_stored_rewards(records)
    prompts = [render_prompt(r.prompt, tokenizer, config.string_prompts) for r in records]
    responses = [record.response for record in records]

    def compute(indices: list[int]) -> list[tuple[dict[str, float], float, np.ndarray]]:
        part_prompts = [prompts[i] for i in indices]
        part_responses = [responses[i] for i in indices]
        if reward is None:
            scores = [_stored_scores(records[i]) for i in indices]
        else:
            scores = _score(
                reward, [records[i] for i in indices], part_prompts, part_responses, config
            )
        token_logps, head_values = reference_pass(
            model, tokenizer, part_prompts, part_responses, value_head, config
        )
        read = head_values if values is None else [values[i] for i in indices]
        return list(zip(scores, read, token_logps, strict=True))

    results = gather_by_prompt_group(prompts, config.share_prompts, compute)
    scores = [s for s, _, _ in results]
    return AdvantageTable.from_examples(
        reward=[s["total"] for s in scores],
        value=[v for _, v, _ in results],
        token_logps=[t for _, _, t in results],
        components=_shared_components(scores),
        record_hashes=record_hashes(records),
    )


def _check_stored_rewards(records: Sequence[RewardRecord]) -> None:
    for number, record in enumerate(records, start=1):
        if record.total_reward is None:
            raise DataError(
                ("no reward" if record.source else f"training record {number} has no reward")
                + "; give every record a reward, or pass a reward function to score them (--reward)",
                file=record.source or None,
                field="reward",
            )


def _stored_scores(record: RewardRecord) -> dict[str, float]:
    """The record's reward as score() returns one: its components, if any, and "total"."""
    components = record.reward if isinstance(record.reward, dict) else {}
    return {**{k: float(v) for k, v in components.items()}, "total": float(record.total_reward)}


def _shared_components(scores: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-component rewards, kept only when every record has the same components."""
    names = {tuple(sorted(name for name in s if name != "total")) for s in scores}
    if len(names) != 1:
        return {}
    return {name: [s[name] for s in scores] for name in next(iter(names))}


def _score(
    reward: Reward,
    records: Sequence[RewardRecord],
    prompts: list[str],
    responses: list[str],
    config: AdvantageConfig,
) -> list[dict[str, float]]:
    """The reward of each record; a failing record is named by its file and line."""
    return score(
        reward,
        prompts,
        responses,
        batch_size=config.batch_size,
        show_progress=config.show_progress,
        timeout=config.reward_timeout,
        record_sources=[r.source or f"{i} (no source)" for i, r in enumerate(records)],
    )
