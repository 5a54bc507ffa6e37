"""Evaluation reports: reward per component, distinct-n, length and win-rate of one model's
responses, as JSON, Markdown and a comparison table of several models.

Everything here is arithmetic on texts and scores; the caller decodes with `alol.models.generate`
and scores with `alol.rewards.score`, so each piece can be tested alone.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alol.atomic import write_atomic, write_json, write_text
from alol.reports.audit import REFERENCE
from alol.reports.collapse import collapse_of
from alol.reports.group_report import GroupSummary, Measures, group_summaries
from alol.reports.metrics import (
    distinct_n,
    formatted,
    mean_length,
    paired_change,
    win_rate,
    with_change,
)

logger = logging.getLogger(__name__)


EXAMPLES_IN_MARKDOWN = 5


@dataclass
class EvalExample:
    """One evaluated example: the rendered prompt, the response, its reward dict and, when
    known, each judge's score, whether decoding reached EOS and log π_θ(y|x) − log π_ref(y|x)."""

    prompt: str
    response: str
    scores: dict[str, float]
    judges: dict[str, float] = field(default_factory=dict)
    finished: bool | None = None
    log_ratio: float | None = None
    group: str | None = None


@dataclass
class EvalReport:
    """Summary of one run's responses on a prompt set, plus the per-example rows behind it."""

    n: int
    """Number of (prompt, response) examples."""
    reward_mean: dict[str, float]
    """Mean reward per component, and under "total" their sum."""
    reward_std: dict[str, float]
    """Population standard deviation (ddof=0) of each entry of `reward_mean`."""
    distinct_1: float
    distinct_2: float
    distinct_3: float
    mean_length_words: float
    mean_length_tokens: float | None = None
    """Only when a tokenizer was given."""
    win_rate: float | None = None
    """Share of prompts whose total reward beats the reference's response (ties count half)."""
    reward_change_se: float | None = None
    """Standard error of the per-prompt difference of the total reward from the reference's:
    a change within about two of it is noise."""
    empty_share: float | None = None
    """Share of responses that are empty (or only whitespace)."""
    cut_off_share: float | None = None
    """Share of responses cut at the generation budget before their EOS (when known)."""
    template_share: float | None = None
    """Share of responses equal to the most frequent one, case and spaces ignored."""
    judge_mean: dict[str, float] = field(default_factory=dict)
    """Mean score of each judge (a reward used only to evaluate)."""
    judge_std: dict[str, float] = field(default_factory=dict)
    judge_win_rate: dict[str, float] = field(default_factory=dict)
    """Per judge: share of prompts where it prefers this response to the reference's."""
    judge_change_se: dict[str, float] = field(default_factory=dict)
    """Per judge: standard error of the per-prompt difference from the reference's score."""
    log_ratio: float | None = None
    """Mean log π_θ(y|x) − log π_ref(y|x) over the model's own responses (when known)."""
    by_group: dict[str, GroupSummary] = field(default_factory=dict)
    """Each group's part, when every test prompt has a group."""
    examples: list[EvalExample] = field(default_factory=list)
    """The rows behind the summary, in prompt order."""

    def summary(self) -> dict:
        """Everything except the per-example rows: what `eval.json` holds."""
        return {key: value for key, value in asdict(self).items() if key != "examples"}


def evaluate_responses(
    prompts: list[str],
    responses: list[str],
    scores: list[dict[str, float]],
    reference_scores: list[dict[str, float]] | None = None,
    tokenizer=None,
    finished: list[bool] | None = None,
    judges: Mapping[str, list[float]] | None = None,
    reference_judges: Mapping[str, list[float]] | None = None,
    log_ratios: list[float] | None = None,
    groups: list[str] | None = None,
) -> EvalReport:
    """Summarise one response per prompt and its reward dict (components, optionally "total").

    A dict without "total" gets the sum of its components, as a dict reward does in `alol.data.records`.
    `finished` tells, per response, whether decoding reached EOS (see `generate_answers`);
    `judges` holds each judge's score per response, `reference_judges` the same for the
    reference's responses (for the judges' win-rates), `log_ratios` each response's
    log π_θ(y|x) − log π_ref(y|x), `groups` each prompt's group (for `by_group`).
    """
    if not prompts:
        raise ValueError("nothing to evaluate: no prompts were given")
    if not len(prompts) == len(responses) == len(scores):
        raise ValueError(
            f"need one response and one score dict per prompt, got {len(prompts)} prompts, "
            f"{len(responses)} responses and {len(scores)} score dicts"
        )
    judges = dict(judges or {})
    for name, values in judges.items():
        if len(values) != len(prompts):
            raise ValueError(
                f"judge {name!r} has {len(values)} scores for {len(prompts)} prompts; score "
                "every response"
            )
    if groups is not None and len(groups) != len(prompts):
        raise ValueError(f"{len(groups)} groups for {len(prompts)} prompts; give one per prompt")
    scores = _with_totals(scores, "scores")
    rewards = {key: [row[key] for row in scores] for key in scores[0]}
    reference_win_rate = change_se = reference_totals = None
    if reference_scores is not None:
        reference_totals = [
            row["total"] for row in _with_totals(reference_scores, "reference_scores")
        ]
        reference_win_rate = win_rate(rewards["total"], reference_totals)
        change_se = paired_change(rewards["total"], reference_totals)[1]
    return EvalReport(
        n=len(prompts),
        reward_mean={key: float(np.mean(values)) for key, values in rewards.items()},
        reward_std={key: float(np.std(values)) for key, values in rewards.items()},
        distinct_1=distinct_n(responses, 1),
        distinct_2=distinct_n(responses, 2),
        distinct_3=distinct_n(responses, 3),
        mean_length_words=mean_length(responses),
        mean_length_tokens=mean_length(responses, tokenizer) if tokenizer is not None else None,
        win_rate=reference_win_rate,
        reward_change_se=change_se,
        empty_share=float(np.mean([not response.strip() for response in responses])),
        cut_off_share=None if finished is None else float(np.mean([not f for f in finished])),
        template_share=collapse_of(responses, finished).template_share,
        judge_mean={name: float(np.mean(values)) for name, values in judges.items()},
        judge_std={name: float(np.std(values)) for name, values in judges.items()},
        judge_win_rate={
            name: win_rate(values, list(reference_judges[name]))
            for name, values in judges.items()
            if reference_judges is not None and name in reference_judges
        },
        judge_change_se={
            name: paired_change(values, list(reference_judges[name]))[1]
            for name, values in judges.items()
            if reference_judges is not None and name in reference_judges
        },
        log_ratio=None if log_ratios is None else float(np.mean(log_ratios)),
        by_group={}
        if groups is None
        else group_summaries(
            groups,
            Measures(rewards["total"], judges, responses, finished),
            reference_totals,
            reference_judges,
        ),
        examples=[
            EvalExample(
                prompt,
                response,
                row,
                judges={name: float(values[i]) for name, values in judges.items()},
                finished=None if finished is None else bool(finished[i]),
                log_ratio=None if log_ratios is None else float(log_ratios[i]),
                group=None if groups is None else groups[i],
            )
            for i, (prompt, response, row) in enumerate(
                zip(prompts, responses, scores, strict=True)
            )
        ],
    )


def changes_from_reference(
    reports: Mapping[str, EvalReport],
) -> dict[str, dict[str, tuple[float, float]]]:
    """Each trained model's change from π_ref's answers to the same prompts (mean, the standard
    error of the per-prompt differences) on the reward (under "reward") and on every judge: a
    reward gain that the judges, which no objective trained on, do not share is what reward
    hacking looks like."""
    reference = reports[REFERENCE]
    changes = {}
    for name, report in reports.items():
        if name == REFERENCE:
            continue
        if [e.prompt for e in report.examples] != [e.prompt for e in reference.examples]:
            raise ValueError(f"{name}'s report answers other prompts than π_ref's")
        total = report.reward_mean["total"] - reference.reward_mean["total"]
        changes[name] = {
            "reward": (total, report.reward_change_se),
            **{
                judge: (mean - reference.judge_mean[judge], report.judge_change_se[judge])
                for judge, mean in report.judge_mean.items()
            },
        }
    return changes


def _with_totals(scores: list[dict[str, float]], name: str) -> list[dict[str, float]]:
    """Copies of the score dicts with "total" filled in; all must share the same components."""
    components = [key for key in scores[0] if key != "total"]
    rows = []
    for i, row in enumerate(scores):
        if set(row) - {"total"} != set(components):
            raise ValueError(
                f"{name}[{i}] has components {sorted(row)} but {name}[0] has {sorted(scores[0])}; "
                "score every response with the same reward"
            )
        values = {key: float(row[key]) for key in components}
        rows.append({**values, "total": float(row.get("total", sum(values.values())))})
    return rows


def eval_metrics(report: EvalReport, prefix: str) -> dict[str, float]:
    """A report's headline figures under Trainer's metric names: `<prefix>_reward` (the total),
    `<prefix>_reward/<component>`, `<prefix>_judge/<judge>`, `<prefix>_distinct_2`,
    `<prefix>_length` (words), `<prefix>_template_share` and, when known,
    `<prefix>_cut_off_share`."""
    metrics = {
        f"{prefix}_{'reward' if name == 'total' else 'reward/' + name}": value
        for name, value in report.reward_mean.items()
    }
    metrics.update({f"{prefix}_judge/{name}": value for name, value in report.judge_mean.items()})
    metrics[f"{prefix}_distinct_2"] = report.distinct_2
    metrics[f"{prefix}_length"] = report.mean_length_words
    metrics[f"{prefix}_template_share"] = report.template_share
    if report.cut_off_share is not None:
        metrics[f"{prefix}_cut_off_share"] = report.cut_off_share
    return metrics


def write_report(report: EvalReport, directory: str | Path, title: str) -> Path:
    """Write `eval.json` (summary), `samples.jsonl` (every example) and a readable `report.md`."""
    directory = Path(directory)
    write_json(directory / "eval.json", report.summary())
    write_atomic(
        directory / "samples.jsonl",
        lambda tmp: _write_jsonl(tmp, [asdict(e) for e in report.examples]),
    )
    write_text(directory / "report.md", _markdown(report, title))
    return directory


def read_report(directory: str | Path) -> EvalReport:
    """Load a report written by `write_report`, e.g. to compare runs with `comparison_table`."""
    directory = Path(directory)
    summary = json.loads((directory / "eval.json").read_text(encoding="utf-8"))
    summary["by_group"] = {
        group: GroupSummary(**part) for group, part in summary.get("by_group", {}).items()
    }
    with open(directory / "samples.jsonl", encoding="utf-8") as handle:
        examples = [EvalExample(**json.loads(line)) for line in handle if line.strip()]
    return EvalReport(**summary, examples=examples)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _markdown(report: EvalReport, title: str) -> str:
    lines = [f"# {title}", "", f"{report.n} examples.", "", "| metric | value |", "|---|---|"]
    for key in report.reward_mean:
        label = "reward (total)" if key == "total" else f"reward/{key}"
        lines.append(f"| {label} | {report.reward_mean[key]:.4f} ± {report.reward_std[key]:.4f} |")
    lines += [
        f"| distinct-1 | {report.distinct_1:.4f} |",
        f"| distinct-2 | {report.distinct_2:.4f} |",
        f"| distinct-3 | {report.distinct_3:.4f} |",
        f"| mean length (words) | {report.mean_length_words:.1f} |",
    ]
    if report.mean_length_tokens is not None:
        lines.append(f"| mean length (tokens) | {report.mean_length_tokens:.1f} |")
    if report.win_rate is not None:
        lines.append(f"| win-rate vs reference | {report.win_rate:.4f} |")
    for name, mean in report.judge_mean.items():
        lines.append(f"| judge {name} | {mean:.4f} ± {report.judge_std[name]:.4f} |")
        if name in report.judge_win_rate:
            lines.append(
                f"| judge {name}: win-rate vs reference | {report.judge_win_rate[name]:.4f} |"
            )
    lines.append(f"| empty responses | {report.empty_share:.1%} |")
    if report.cut_off_share is not None:
        lines.append(f"| cut off at the generation budget | {report.cut_off_share:.1%} |")
    if report.template_share is not None:
        lines.append(f"| share of the most frequent response | {report.template_share:.1%} |")
    if report.log_ratio is not None:
        lines.append(f"| mean log π_θ(y\\|x) − log π_ref(y\\|x) (nats) | {report.log_ratio:.2f} |")
    lines += ["", f"## Example generations (first {min(EXAMPLES_IN_MARKDOWN, report.n)})", ""]
    for i, example in enumerate(report.examples[:EXAMPLES_IN_MARKDOWN], start=1):
        lines += [
            f"### Example {i} (total reward {example.scores['total']:.4f})",
            "",
            "Prompt:",
            "",
            fenced(example.prompt),
            "",
            "Response:",
            "",
            fenced(example.response),
            "",
        ]
    return "\n".join(lines)


def fenced(text: str) -> str:
    """A code block whose fence is longer than any run of backticks inside `text`."""
    longest_run = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest_run + 1)
    return f"{fence}text\n{text}\n{fence}"


def comparison_table(
    reports: dict[str, EvalReport], kept: Mapping[str, float] | None = None
) -> str:
    """Markdown table, one row per run: reward per component and total, each judge, the
    win-rates against π_ref (by the reward and by each judge), distinct-2, the share of the
    most frequent answer and length; with `kept`, also the share of the training data each
    run kept. With a "reference" report, the reward and judges of the other rows show their
    change against it, the reward's with the standard error of its per-prompt differences (a
    change within about two of them is noise). A reward of one component gets no column of
    its own: it would repeat the total."""
    components = list(
        dict.fromkeys(key for r in reports.values() for key in r.reward_mean if key != "total")
    )
    if len(components) == 1:
        components = []
    judges = list(dict.fromkeys(name for r in reports.values() for name in r.judge_mean))
    header = [
        "model",
        *components,
        "reward",
        *judges,
        "win-rate vs π_ref",
        *(f"{name} win-rate" for name in judges),
        "distinct-2",
        "one answer's share",
        "length (words)",
        *(["data kept"] if kept is not None else []),
    ]
    reference = reports.get(REFERENCE)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, report in reports.items():
        against = None if name == REFERENCE else reference
        cells = [
            "π_ref (reference)" if name == REFERENCE else name,
            *(formatted(report.reward_mean.get(c), ".3f") for c in components),
            with_change(
                report.reward_mean["total"],
                _change(
                    report.reward_mean["total"],
                    None if against is None else against.reward_mean["total"],
                ),
                bold=True,
                standard_error=report.reward_change_se,
            ),
            *(
                with_change(
                    report.judge_mean.get(j),
                    _change(
                        report.judge_mean.get(j),
                        None if against is None else against.judge_mean.get(j),
                    ),
                    standard_error=report.judge_change_se.get(j),
                )
                for j in judges
            ),
            formatted(report.win_rate, ".2f"),
            *(formatted(report.judge_win_rate.get(j), ".2f") for j in judges),
            formatted(report.distinct_2, ".3f"),
            formatted(report.template_share, ".0%"),
            formatted(report.mean_length_words, ".1f"),
        ]
        if kept is not None:
            cells.append(formatted(kept.get(name), ".0%"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _change(value: float | None, reference: float | None) -> float | None:
    """value − reference, when both are known."""
    return None if value is None or reference is None else value - reference


def warn_on_prompt_overlap(eval_prompts: list[str], other_prompts: list[str], what: str) -> int:
    """Count evaluation prompts that also occur in `other_prompts`, and warn when there are any.

    Prompts used to fit V or select checkpoints make an evaluation on them optimistic.
    Prompts are compared with whitespace collapsed, so re-wrapped copies still count.
    """
    seen = {_normalise(prompt) for prompt in other_prompts}
    overlap = sum(_normalise(prompt) in seen for prompt in eval_prompts)
    if overlap:
        logger.warning(
            "%d of %d evaluation prompts also appear in the %s; results on them are optimistic. "
            "Evaluate on prompts held out from the %s.",
            overlap,
            len(eval_prompts),
            what,
            what,
        )
    return overlap


def _normalise(prompt: str) -> str:
    return " ".join(prompt.split())
