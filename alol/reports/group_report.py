"""Each group's part of an evaluation (the test records' `group`: an HH subset, one of several
datasets): a reward gained on one kind of prompt and a judge lost on another average out in
the overall table, and show here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from alol.reports.audit import REFERENCE
from alol.reports.metrics import formatted, mean_length, paired_change, with_change

if TYPE_CHECKING:
    from alol.reports.eval_report import EvalReport


@dataclass
class GroupSummary:
    """One group's part of a report (the test records' `group`, e.g. an HH subset): a gain on
    the reward can come from one kind of prompt while a judge falls on another."""

    n: int
    reward: float
    """Mean total reward."""
    judges: dict[str, float]
    """Mean score of each judge."""
    length_words: float
    cut_off_share: float | None = None
    reward_change: float | None = None
    """Mean per-prompt change of the total reward from π_ref's answers to the same prompts."""
    reward_change_se: float | None = None
    judge_change: dict[str, float] = field(default_factory=dict)
    """Each judge's mean change from π_ref's answers to the same prompts."""
    judge_change_se: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Measures:
    """Per-answer figures of one model, in prompt order: what a group's summary averages."""

    totals: list[float]
    judges: Mapping[str, list[float]]
    responses: list[str]
    finished: list[bool] | None


def group_summaries(
    groups: list[str],
    model: Measures,
    reference_totals: list[float] | None = None,
    reference_judges: Mapping[str, list[float]] | None = None,
) -> dict[str, GroupSummary]:
    """Each group's means and, against π_ref's answers to the same prompts (its reward totals
    and judges' scores), their changes, in the order the groups first appear."""
    summaries = {}
    for group in dict.fromkeys(groups):
        rows = [i for i, g in enumerate(groups) if g == group]
        totals = [model.totals[i] for i in rows]
        judges = {name: float(np.mean([v[i] for i in rows])) for name, v in model.judges.items()}
        summary = GroupSummary(
            n=len(rows),
            reward=float(np.mean(totals)),
            judges=judges,
            length_words=mean_length([model.responses[i] for i in rows]),
            cut_off_share=None
            if model.finished is None
            else float(np.mean([not model.finished[i] for i in rows])),
        )
        if reference_totals is not None:
            summary.reward_change, summary.reward_change_se = paired_change(
                totals, [reference_totals[i] for i in rows]
            )
            judge_changes = {
                name: paired_change(
                    [model.judges[name][i] for i in rows], [reference_judges[name][i] for i in rows]
                )
                for name in judges
                if reference_judges is not None and name in reference_judges
            }
            summary.judge_change = {name: c[0] for name, c in judge_changes.items()}
            summary.judge_change_se = {name: c[1] for name, c in judge_changes.items()}
        summaries[group] = summary
    return summaries


def group_table(reports: dict[str, EvalReport]) -> str:
    """Markdown table of each group's part of every report, when the test prompts come in two
    groups or more ("" otherwise): one row per group and model, the reward and each judge with
    their change from π_ref's answers to the same prompts. It shows where a change comes from,
    such as a reward gained on helpful prompts and a harmlessness judge lost on harmful ones."""
    groups = list(dict.fromkeys(g for r in reports.values() for g in r.by_group))
    if len(groups) < 2:
        return ""
    judges = list(dict.fromkeys(name for r in reports.values() for name in r.judge_mean))
    header = ["group", "prompts", "model", "reward", *judges, "cut at the budget", "words"]
    lines = [
        "By group (the test records' `group`): each model on that group's prompts, its change "
        "from π_ref's answers to the same prompts in brackets.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for group in groups:
        for name, report in reports.items():
            part = report.by_group.get(group)
            if part is None:
                continue
            cells = [
                group,
                str(part.n),
                "π_ref (reference)" if name == REFERENCE else name,
                with_change(
                    part.reward, part.reward_change, bold=True, standard_error=part.reward_change_se
                ),
                *(
                    with_change(
                        part.judges.get(j),
                        part.judge_change.get(j),
                        standard_error=part.judge_change_se.get(j),
                    )
                    for j in judges
                ),
                formatted(part.cut_off_share, ".0%"),
                formatted(part.length_words, ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
