"""Answers side by side (`run_dir/eval/samples.md`): a table says that a reward rose, the
answers say why. For each trained model, the test prompts where its reward rose above π_ref's
answer while the judges fell, then every model's answer to the first test prompts."""

from __future__ import annotations

import numpy as np

from alol.reports.audit import REFERENCE
from alol.reports.eval_report import EvalExample, EvalReport, fenced
from alol.reports.metrics import with_change

FIRST_PROMPTS = 5
DISPUTED_PER_MODEL = 3
NO_DISPUTE = "No prompt where the reward rose and the judges fell."


def disputed_prompts(model: EvalReport, reference: EvalReport, count: int) -> list[int]:
    """The prompts (indices) where the model's reward rose above π_ref's answer while its
    judges fell on the mean, most disputed first: by the reward's change minus the judges' mean
    change, each in units of π_ref's spread over the prompts, so that no measure's scale
    decides."""
    reward_change = _standardised_change(model, reference, lambda e: e.scores["total"])
    judges = list(model.judge_mean)
    if not judges:
        return []
    judge_change = np.mean(
        [_standardised_change(model, reference, lambda e, j=j: e.judges[j]) for j in judges],
        axis=0,
    )
    dispute = reward_change - judge_change
    order = np.argsort(-dispute, kind="stable")
    chosen = [int(i) for i in order if reward_change[i] > 0 and judge_change[i] < 0]
    return chosen[:count]


def _standardised_change(model: EvalReport, reference: EvalReport, measure) -> np.ndarray:
    """Per prompt, the model's change from π_ref's answer on `measure`, over π_ref's spread."""
    before = np.array([measure(e) for e in reference.examples], dtype=float)
    after = np.array([measure(e) for e in model.examples], dtype=float)
    spread = before.std() or 1.0
    return (after - before) / spread


def samples_markdown(
    reports: dict[str, EvalReport],
    first: int = FIRST_PROMPTS,
    disputed: int = DISPUTED_PER_MODEL,
) -> str:
    """`samples.md`: each trained model's most disputed prompts (with judges), then the first
    prompts with every model's answer."""
    reference = reports[REFERENCE]
    lines = ["# Answers side by side", ""]
    trained = {name: r for name, r in reports.items() if name != REFERENCE}
    if any(r.judge_mean for r in trained.values()):
        lines += [
            "## Where the reward and the judges disagree most",
            "",
            "For each trained model, the test prompts where its reward rose above π_ref's "
            "answer while the judges, which no objective trained on, fell on the mean; most "
            "disputed first (the reward's change minus the judges' mean change, each in units "
            "of π_ref's spread over the prompts). Read them before believing a reward gain.",
            "",
        ]
        for name, report in trained.items():
            indices = disputed_prompts(report, reference, disputed)
            if not indices:
                lines += [f"### {name}", "", NO_DISPUTE, ""]
            for i in indices:
                lines += side_by_side({REFERENCE: reference, name: report}, i, f"{name}: prompt")
    lines += [f"## The first {min(first, reference.n)} test prompts", ""]
    for i in range(min(first, reference.n)):
        lines += side_by_side(reports, i, "Prompt")
    return "\n".join(lines) + "\n"


def side_by_side(reports: dict[str, EvalReport], index: int, title: str) -> list[str]:
    """Markdown lines: one prompt and each model's answer to it with its reward and judges
    (a trained model's change from π_ref's answer in brackets)."""
    reference = reports.get(REFERENCE)
    prompt = next(iter(reports.values())).examples[index].prompt
    lines = [f"### {title} {index + 1}", "", fenced(prompt), ""]
    for name, report in reports.items():
        example = report.examples[index]
        before = None if reference is None or name == REFERENCE else reference.examples[index]
        scores = [f"reward {_with_change(example.scores['total'], before, 'total')}"]
        scores += [
            f"{judge} {_with_change(value, before, judge)}"
            for judge, value in example.judges.items()
        ]
        label = "π_ref" if name == REFERENCE else name
        lines += [f"**{label}** ({'; '.join(scores)})", "", fenced(example.response), ""]
    return lines


def _with_change(value: float, before: EvalExample | None, measure: str) -> str:
    """The figure, and its change from π_ref's answer to the same prompt when `before` is it."""
    if before is None:
        return with_change(value, None)
    reference = before.scores["total"] if measure == "total" else before.judges[measure]
    return with_change(value, value - reference)
