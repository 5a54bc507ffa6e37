"""Validation during training, and which validated checkpoint a run keeps.

Each validation pass decodes held-out prompts and scores the answers; the checkpoint kept at
the end is the one with the highest selection score (`select_by`: the reward, a judge, or a
weighted mix of them). A reward can be gamed, and the checkpoint that games it best would
win, so a checkpoint whose answers collapsed onto one text (`collapse_share`) is never kept
while a healthy one exists; when every one collapsed, the earliest, the fewest steps from
π_ref, is kept and the run says so.
"""

from __future__ import annotations

import math

from alol.distributed import gather_in_order
from alol.errors import AlolError
from alol.models.generate import GenerationConfig, generate_answers
from alol.reports.eval_report import EvalReport, eval_metrics, evaluate_responses
from alol.rewards import Reward, score, with_missing_eos_penalty

REWARD = "reward"
"""The name `select_by` gives the training reward."""


def selection_weights(select_by: str) -> dict[str, float]:
    """'reward', a judge's name, or name=weight pairs separated by commas, as weights."""
    weights: dict[str, float] = {}
    for part in select_by.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if not name:
            raise AlolError(
                f"select_by {select_by!r}: give 'reward', a judge's name, or name=weight pairs "
                "separated by commas ('reward=0.5,helpfulness=0.5')"
            )
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise AlolError(
                f"select_by {select_by!r}: the weight of {name!r} must be a number, got {weight!r}"
            ) from None
        if not math.isfinite(value):
            raise AlolError(f"select_by {select_by!r}: the weight of {name!r} must be finite")
        weights[name] = value
    return weights


def judges_selected_by(select_by: str) -> list[str]:
    """The judges `select_by` names (everything but the reward)."""
    return [name for name in selection_weights(select_by) if name != REWARD]


def metric_name(name: str, prefix: str = "eval") -> str:
    """The logged metric of the reward or of a judge."""
    return f"{prefix}_reward" if name == REWARD else f"{prefix}_judge/{name}"


def selection_score(metrics: dict[str, float], weights: dict[str, float], prefix: str) -> float:
    """The weighted sum of the named metrics of one validation pass."""
    return sum(weight * metrics[metric_name(name, prefix)] for name, weight in weights.items())


def is_better(
    value: float, collapsed: bool, best_value: float | None, best_collapsed: bool
) -> bool:
    """Whether a validated checkpoint replaces the best so far: a healthy one beats a
    collapsed one whatever their scores, a collapsed one never replaces another, and among
    healthy ones the higher score wins (ties keep the earlier)."""
    if best_value is None:
        return True
    if collapsed:
        return False
    return best_collapsed or value > best_value


def validation_report(
    model,
    tokenizer,
    prompts: list[str],
    rewards: dict[str, Reward],
    generation: GenerationConfig,
    timeout: float | None,
    missing_eos_penalty: float | None = None,
) -> EvalReport:
    """Decode the rendered validation `prompts` (each process its share) and score the answers
    with every reward of `rewards`: the training reward under `REWARD`, the judges under their
    names."""

    def decode_and_score(indices: list[int]) -> list[tuple]:
        shard = [prompts[i] for i in indices]
        answers = [a[0] for a in generate_answers(model, tokenizer, shard, generation, False)]
        texts = [a.text for a in answers]
        scored = {
            name: score(
                reward, shard, texts, show_progress=False, timeout=timeout, record_numbers=indices
            )
            for name, reward in rewards.items()
        }
        return [
            (a, {name: rows[i] for name, rows in scored.items()}) for i, a in enumerate(answers)
        ]

    gathered = gather_in_order(len(prompts), decode_and_score)
    finished = [a.finished for a, _ in gathered]
    return evaluate_responses(
        prompts,
        [a.text for a, _ in gathered],
        with_missing_eos_penalty([s[REWARD] for _, s in gathered], finished, missing_eos_penalty),
        finished=finished,
        judges={
            name: [s[name]["total"] for _, s in gathered] for name in rewards if name != REWARD
        },
    )


def validation_metrics(
    report: EvalReport, select_by: str, collapse_share: float | None, prefix: str
) -> dict[str, float]:
    """The logged figures of a validation pass, its selection score (`<prefix>_selection`) and
    whether its answers collapsed (`<prefix>_collapsed`, 0 or 1)."""
    metrics = eval_metrics(report, prefix)
    metrics[f"{prefix}_selection"] = selection_score(metrics, selection_weights(select_by), prefix)
    metrics[f"{prefix}_collapsed"] = float(
        collapse_share is not None and report.template_share >= collapse_share
    )
    return metrics
