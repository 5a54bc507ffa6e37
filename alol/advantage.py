"""The A-LoL method around the losses: A = R − V(x), the leftover lunch, its step budget, its audit.

`compute_advantages` scores every training pair once: R from the reward (or the data), and
π_ref's log-probs and V(x) from one reference pass (`alol.reference`); A = R − V(x). The
examples with A > 0 are the *leftover lunch* that A-LoL trains on, drawn with probability ∝ A
(`alol.sampling.PrioritySampler`) for `fraction_positive × the NLL step budget` steps. The
distribution of A is a data-quality audit on its own (`write_advantage_report`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alol.atomic import write_json
from alol.errors import AlolError, DataError
from alol.plots import plot_advantage_histogram
from alol.records import RewardRecord
from alol.reference import (
    ReferenceConfig,
    gather_by_prompt_group,
    prepare_reference,
    reference_pass,
)
from alol.rewards import score
from alol.sampling import Sampling
from alol.table import AdvantageTable
from alol.tokenize import render_prompt

if TYPE_CHECKING:
    import torch

    from alol.rewards import Reward
    from alol.value import ValueHead

logger = logging.getLogger(__name__)


class NoPositiveAdvantageError(AlolError):
    """No training example has A > 0, or every reward is the same (so no response is better
    than another and the advantages hold nothing but V(x)'s errors): A-LoL has nothing to learn."""


@dataclass
class AdvantageConfig(ReferenceConfig):
    """The reference pass's settings plus how rewards are computed."""

    reward_timeout: float | None = None
    """Seconds one reward batch may take before the pass stops with an error (None: no limit)."""
    string_prompts: str = "chat"
    """How plain-string prompts are rendered (`alol.tokenize.render_prompt`); in the cache key."""

    def key_fields(self) -> dict[str, Any]:
        return {**super().key_fields(), "string_prompts": self.string_prompts}


def compute_advantages(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[RewardRecord],
    config: AdvantageConfig,
    value_head: ValueHead | None = None,
    reward: Reward | None = None,
) -> AdvantageTable:
    """One pass of the frozen reference model over the training pairs: log-probs, V(x), R, A.

    Rewards come from `reward` (all components kept) when given, else from each record's
    stored reward. Without a value head V(x) = 0, which is what objectives that use the reward
    alone (`wbc`, `r_lol`, …) need; with one, V(x) is read off the same forward pass that
    scores the response (`alol.reference`). Under several processes (`accelerate launch`),
    each process scores whole prompt groups (`gather_by_prompt_group`) and every process
    returns the whole table, in record order.
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
        token_logps, values = reference_pass(
            model, tokenizer, part_prompts, part_responses, value_head, config
        )
        return list(zip(scores, values, token_logps, strict=True))

    results = gather_by_prompt_group(prompts, config.share_prompts, compute)
    scores = [s for s, _, _ in results]
    return AdvantageTable.from_examples(
        reward=[s["total"] for s in scores],
        value=[v for _, v, _ in results],
        token_logps=[t for _, _, t in results],
        components=_shared_components(scores),
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


_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def advantage_stats(table: AdvantageTable) -> dict[str, Any]:
    """Count, fraction with A > 0, and mean/std (population)/percentiles of R, V(x) and A.

    Percentiles interpolate linearly between order statistics (numpy's default).
    """
    if len(table) == 0:
        raise ValueError("the advantage table is empty; there is nothing to summarise")
    return {
        "count": len(table),
        "fraction_positive": float(np.mean(table.advantage > 0)),
        "reward": _summary(table.reward),
        "value": _summary(table.value),
        "advantage": _summary(table.advantage),
        "components": {name: _summary(values) for name, values in sorted(table.components.items())},
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    summary = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    for percentile, quantile in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True):
        summary[f"p{percentile}"] = float(quantile)
    return summary


def write_advantage_report(table: AdvantageTable, directory: str | Path) -> dict[str, Any]:
    """Write `advantage_stats.json` and `advantage_hist.png` (R, V(x), A) into `directory`.

    This is a data-quality audit on its own: the fraction of pairs with A > 0 is the share
    of the data A-LoL will learn from.
    """
    directory = Path(directory)
    stats = advantage_stats(table)
    write_json(directory / "advantage_stats.json", stats)
    plot_advantage_histogram(table, stats["fraction_positive"], directory / "advantage_hist.png")
    return stats


def select_training_examples(
    table: AdvantageTable, positive_only: bool, sampling: Sampling
) -> tuple[np.ndarray, np.ndarray | None]:
    """The table's indices to train on and their sampling weights (see `select_examples`)."""
    return select_examples(table.reward, table.advantage, positive_only, sampling, table.value)


def select_examples(
    reward: np.ndarray,
    advantage: np.ndarray | None,
    positive_only: bool,
    sampling: Sampling,
    value: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The indices to train on and their sampling weights (None: uniform).

    `positive_only` keeps the leftover lunch, A > 0, and refuses rewards that are all equal.
    "advantage" weights each kept example by A (A-LoL's priority sampling), "reward" by R
    (rewards must be ≥ 0; they are not shifted, since a shift would change which examples
    matter). `value` only makes the no-positive-advantage error more telling.
    """
    indices = np.arange(len(reward), dtype=np.int64)
    if positive_only:
        if len(reward) > 1 and np.all(reward == reward[0]):
            raise NoPositiveAdvantageError(
                f"every reward equals {reward[0]:g} across the {len(reward)} training "
                "examples, so no response is better than another and A = R − V(x) only "
                "reflects the errors of V(x). Check that the reward function scores these "
                "responses differently (or that the data's 'reward' field varies)."
            )
        indices = indices[advantage > 0]
        if len(indices) == 0:
            raise NoPositiveAdvantageError(_no_positive_message(reward, advantage, value))
    if sampling == "uniform":
        return indices, None
    if sampling == "advantage":
        if not positive_only:
            raise ValueError(
                "sampling='advantage' needs positive_only=True: only A > 0 can be a probability"
            )
        return indices, advantage[indices]
    if sampling == "reward":
        weights = reward[indices]
        if np.any(weights < 0) or not np.any(weights > 0):
            raise ValueError(
                f"sampling='reward' needs rewards ≥ 0 with at least one > 0, but they range over "
                f"[{weights.min():g}, {weights.max():g}]; use a non-negative reward (e.g. the "
                "sigmoid of a logit) or sampling='uniform'"
            )
        return indices, weights
    raise ValueError(f"unknown sampling {sampling!r}; choose 'uniform', 'advantage' or 'reward'")


def _no_positive_message(
    reward: np.ndarray, advantage: np.ndarray, value: np.ndarray | None
) -> str:
    values = "" if value is None else f", mean V(x) = {value.mean():.4g}"
    return (
        f"none of the {len(reward)} training examples has a positive advantage A = R − V(x) "
        f"(largest A = {advantage.max():.4g}, mean R = {reward.mean():.4g}{values}). Check "
        "that the value head was fitted with the same reward and on prompts like these, or "
        "train with an objective that needs no value ('wbc', 'r_lol', 'nll')."
    )


def budget_steps(nll_steps: int, fraction_positive: float) -> int:
    """A-LoL's step budget: `fraction_positive × nll_steps`, rounded up, at least 1."""
    if nll_steps < 1 or not 0.0 <= fraction_positive <= 1.0:
        raise ValueError(
            f"need nll_steps ≥ 1 and 0 ≤ fraction_positive ≤ 1, got {nll_steps}, {fraction_positive}"
        )
    # round() first so float noise (9000 × 0.3 = 2700.0000000000005) does not add a step
    return max(1, math.ceil(round(nll_steps * fraction_positive, 9)))
