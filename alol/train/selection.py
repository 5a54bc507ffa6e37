"""Validation during training, and which validated checkpoint a run keeps.

Each validation pass decodes held-out prompts and scores the answers; the checkpoint kept at
the end is the one with the highest selection score (`select_by`: the reward, a judge, or a
weighted mix of them). A reward can be gamed, and the checkpoint that games it best would
win, so a checkpoint whose answers are degenerate by the audit's own measures is never kept
while a healthy one exists: answers collapsed onto one text (`collapse_share`), or, against
the validation pass before the first step (π_ref's answers), answers that run to the token
budget (`cut_off_share`) or loop (`loop_share`) more often beyond noise. When every one is
degenerate, the earliest, the fewest steps from π_ref, is kept and the run says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from alol.distributed import gather_in_order
from alol.errors import AlolError
from alol.models.generate import GenerationConfig, generate_answers
from alol.reports.audit_thresholds import SIGNIFICANT_STANDARD_ERRORS
from alol.reports.collapse import loops
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
    value: float, degenerate: bool, best_value: float | None, best_degenerate: bool
) -> bool:
    """Whether a validated checkpoint replaces the best so far: a healthy one beats a
    degenerate one whatever their scores, a degenerate one never replaces another, and among
    healthy ones the higher score wins (ties keep the earlier)."""
    if best_value is None:
        return True
    if degenerate:
        return False
    return best_degenerate or value > best_value


@dataclass(frozen=True)
class DegenerationLimits:
    """The audit's thresholds, as validation applies them to a checkpoint's answers (None:
    that measure is not checked)."""

    collapse_share: float | None
    cut_off_share: float | None
    loop_share: float | None


def share_rose(share: float, start: float, prompts: int) -> bool:
    """Whether a share of the validation answers rose from the start's beyond noise: by
    `SIGNIFICANT_STANDARD_ERRORS` standard errors of the difference of two shares of
    `prompts` answers each."""
    spread = math.sqrt((share * (1 - share) + start * (1 - start)) / prompts)
    return share > start and share - start >= SIGNIFICANT_STANDARD_ERRORS * spread


def degenerate_findings(
    metrics: dict[str, float],
    start: dict[str, float] | None,
    limits: DegenerationLimits,
    prompts: int,
    prefix: str,
) -> list[str]:
    """Why a validation pass's answers are not worth keeping, the audit's way: collapsed onto
    one answer, or, against the pass before the first step (`start`, π_ref's answers; None
    before it exists), cut at the token budget or looping this often and more often beyond
    noise. A π_ref that rambles already leaves its trained models free to."""
    findings = []
    template = metrics[f"{prefix}_template_share"]
    if limits.collapse_share is not None and template >= limits.collapse_share:
        findings.append(f"{template:.0%} of answers are one answer")
    if start is None:
        return findings
    for key, limit, what in (
        ("cut_off_share", limits.cut_off_share, "run to the token budget"),
        ("loop_share", limits.loop_share, "loop"),
    ):
        share, before = metrics.get(f"{prefix}_{key}"), start.get(f"{prefix}_{key}")
        if limit is None or share is None or before is None or share < limit:
            continue
        if share_rose(share, before, prompts):
            findings.append(f"{share:.0%} of answers {what} against {before:.0%} before training")
    return findings


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
    report: EvalReport,
    select_by: str,
    limits: DegenerationLimits,
    start: dict[str, float] | None,
    prefix: str,
) -> tuple[dict[str, float], list[str]]:
    """The logged figures of a validation pass (with its share of looping answers), its
    selection score (`<prefix>_selection`) and whether its answers are degenerate
    (`<prefix>_degenerate`, 0 or 1), with the findings that make them so."""
    metrics = eval_metrics(report, prefix)
    metrics[f"{prefix}_loop_share"] = statistics.fmean(loops(e.response) for e in report.examples)
    metrics[f"{prefix}_selection"] = selection_score(metrics, selection_weights(select_by), prefix)
    findings = degenerate_findings(metrics, start, limits, report.n, prefix)
    metrics[f"{prefix}_degenerate"] = float(bool(findings))
    return metrics, findings
