"""The demo's report: `run_dir/report/README.md` with the comparison table, the advantage
audit, the stages' plots and sample answers."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

from alol.atomic import write_atomic, write_text
from alol.config import PipelineConfig
from alol.demo import task as demo_task
from alol.demo.config import DemoConfig
from alol.pipeline import Evaluation
from alol.reports.audit_report import audit_markdown
from alol.reports.eval_report import EvalReport
from alol.reports.metrics import formatted
from alol.reports.plots import plot_reward_by_objective
from alol.reports.samples_report import side_by_side

SAMPLE_PROMPTS = 3


def answer_kinds_table(reports: dict[str, EvalReport]) -> str:
    """Markdown: which kinds of answer each model gives on the test prompts (tiny task only)."""
    header = ["model", *demo_task.KINDS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, report in reports.items():
        counts = Counter(demo_task.classify(e.prompt, e.response) for e in report.examples)
        lines.append(
            "| "
            + " | ".join([name, *(f"{counts[k] / report.n:.0%}" for k in demo_task.KINDS)])
            + " |"
        )
    return "\n".join(lines)


def write_demo_report(
    config: DemoConfig,
    cfg: PipelineConfig,
    evaluation: Evaluation,
    kept: dict[str, float],
    kinds: bool,
    seconds: float,
) -> Path:
    """run_dir/report/: README.md with the tables, the audit, samples and the plots it shows."""
    reports = evaluation.reports
    out = cfg.root / "report"
    figures = _collect_figures(cfg, reports, out)
    advantage = json.loads((cfg.root / "advantage" / "advantage_stats.json").read_text())
    value = json.loads((cfg.root / "value" / "value_metrics.json").read_text())
    command = f"alol demo --model {config.model} --seed {config.seed}" + (
        " --quick" if config.quick else ""
    )
    lines = [
        f"# alol demo ({config.model})",
        "",
        f"`{command}` finished in {seconds:.0f} s (torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}, {'bf16' if cfg.bf16 else 'float32'}).",
        "",
        "## Test results",
        "",
        f"{reports['reference'].n} held-out test prompts, greedy decoding. *data kept*: the share "
        "of training answers an objective learns from (A-LoL: those with A = R − V(x) > 0, the "
        "leftover lunch).",
        "",
        *_penalty_note(cfg),
        evaluation.results_tables(kept),
        "",
    ]
    if kinds:
        lines += ["Kinds of answer on the test prompts:", "", answer_kinds_table(reports), ""]
    lines += [audit_markdown(evaluation.audit, level=2), ""]
    lines += [
        "## Advantage audit",
        "",
        f"{advantage['fraction_positive']:.1%} of {advantage['count']} training answers have "
        f"A > 0. Mean reward {advantage['reward']['mean']:.3f}, mean V(x) "
        f"{advantage['value']['mean']:.3f}. Value head on held-out validation prompts: MSE "
        f"{formatted(value['heldout_mse'], '.4f')}, explained variance "
        f"{formatted(value['explained_variance'], '.3f')}. The answers with the highest A, "
        "which A-LoL learns most from, are in "
        "[advantage/top_advantages.md](../advantage/top_advantages.md).",
        "",
    ]
    lines += [f"![{title}]({name})\n" for title, name in figures]
    lines += [
        "## Sample answers",
        "",
        "The first test prompts; [eval/samples.md](../eval/samples.md) also has, for each trained "
        "model, the prompts where its reward and the judges disagree most.",
        "",
    ]
    for index in range(min(SAMPLE_PROMPTS, reports["reference"].n)):
        lines += side_by_side(reports, index, "Prompt")
    lines += ["## Settings", "", "```json", json.dumps(asdict(cfg), indent=2, default=str), "```"]
    write_text(out / "README.md", "\n".join(lines) + "\n")
    return out


def _penalty_note(cfg: PipelineConfig) -> list[str]:
    """What the reward's `missing_eos` column is, when the run charges it."""
    if not cfg.missing_eos_penalty:
        return []
    budget = cfg.new_token_budget
    return [
        f"*missing_eos*: −{cfg.missing_eos_penalty:g} for an answer cut at the {budget}-token "
        "budget without ending (`missing_eos_penalty`), part of the reward; the columns before "
        "it are the reward's own.",
        "",
    ]


def _collect_figures(
    cfg: PipelineConfig, reports: dict[str, EvalReport], out: Path
) -> list[tuple[str, str]]:
    """Copy the stages' plots into the report and draw reward per objective."""
    figures = [("reward per objective", "reward_by_objective.png")]
    plot_reward_by_objective(
        {name: (r.reward_mean["total"], r.reward_std["total"]) for name, r in reports.items()},
        out / "reward_by_objective.png",
    )
    sources = [("reward change against the judges'", cfg.root / "eval" / "reward_vs_judges.png")]
    sources += [("advantage histogram", cfg.root / "advantage" / "advantage_hist.png")]
    sources += [("value fit", cfg.root / "value" / "value_fit.png")]
    sources += [
        (f"training curves: {name}", cfg.root / "train" / name / "train_curves.png")
        for name in cfg.objectives
    ]
    for title, source in sources:
        if source.exists():
            name = (
                source.name
                if "train" not in source.parts
                else f"train_curves_{source.parent.name}.png"
            )
            write_atomic(out / name, lambda tmp, source=source: shutil.copyfile(source, tmp))
            figures.append((title, name))
    return figures
