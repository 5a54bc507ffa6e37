"""How V(x) is estimated, on the demo task: the paper's value head against per-prompt values
(`value_estimate: per_prompt`), several seeds, mean ± std.

    python -m bench.value_estimates      # 5 seeds → bench/results/value_estimates.{json,md}
    python -m bench.value_estimates --seeds 0 --run-dir /tmp/v

Per seed the demo task, π_ref and its value head are built as `alol demo` builds them and
A-LoL and A-LoL seq train on the head's advantages; then the same π_ref answers every training
prompt (greedily, then with 4 sampled answers), V(x) becomes the mean reward of its answers
there, and both train again on those advantages. The data, reward, π_ref and budgets are the same; only V(x) differs. Also
reported: how much of the per-prompt values the head explains on the training prompts (it is
fitted on the validation prompts' answers), and the share of answers with A > 0 under each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from alol.demo import TINY_THREADS, DemoConfig, cpu_threads, run_stages
from alol.demo.tiny import prepare_tiny
from alol.pipeline import run_advantage
from alol.reports.metrics import explained_variance
from bench.common import commit, plus_minus, write_results
from bench.quality import aggregate, machine, seed_metrics, versions

OBJECTIVES = ("a_lol", "a_lol_seq")
ESTIMATES = {
    "head": {},
    "per_prompt": {"value_estimate": "per_prompt"},
    "per_prompt_4": {"value_estimate": "per_prompt", "value_samples": 4},
}
"""Name → the settings it changes: the head (the paper), per-prompt values from π_ref's greedy
answer (its mode), and from 4 sampled answers (an estimate of its mean reward)."""
SHOWN = ("reward", "good_answers", "distinct_2", "template_share", "length")


def run_seed(seed: int, run_dir: Path) -> dict:
    """Both estimates' trainings from one π_ref: per estimate, each model's test metrics, the
    share of positive advantages and the audit's flags; and the head's fit to the per-prompt
    values on the training prompts."""
    head_cfg = prepare_tiny(
        DemoConfig(run_dir=str(run_dir / f"seed-{seed}"), seed=seed, objectives=list(OBJECTIVES)),
        print,
    )
    found: dict = {}
    values = {}
    for estimate, settings in ESTIMATES.items():
        cfg = head_cfg
        if settings:
            cfg = replace(
                head_cfg,
                run_dir=str(head_cfg.root / estimate),
                reference=str(head_cfg.root / "sft" / "model"),
                **settings,
            )
        evaluation, _ = run_stages(cfg, print)
        table = run_advantage(cfg)  # the run's own table, read back from its cache
        values[estimate] = table.value
        found[estimate] = {
            "models": {n: seed_metrics(r) for n, r in evaluation.reports.items()},
            "fraction_positive": float(np.mean(table.advantage > 0)),
            "flags": evaluation.audit.flags,
        }
    found["head_fit"] = {
        estimate: {
            "explained_variance": explained_variance(values["head"], values[estimate]),
            "mean_offset": float(np.mean(values["head"] - values[estimate])),
        }
        for estimate in ESTIMATES
        if estimate != "head"
    }
    return found


def summary(runs: dict[int, dict]) -> dict:
    """estimate → model → metric → [mean, std] across seeds, and the per-seed differences."""
    table = {
        estimate: aggregate(
            [
                {m: {k: row[k] for k in SHOWN} for m, row in run[estimate]["models"].items()}
                for run in runs.values()
            ]
        )
        for estimate in ESTIMATES
    }
    gains = {
        estimate: {
            objective: {
                metric: [
                    run[estimate]["models"][objective][metric]
                    - run["head"]["models"][objective][metric]
                    for run in runs.values()
                ]
                for metric in ("reward", "good_answers")
            }
            for objective in OBJECTIVES
        }
        for estimate in ESTIMATES
        if estimate != "head"
    }
    return {"table": table, "minus_head": gains}


def markdown(result: dict) -> str:
    """The table of every estimate's models, then each per-prompt estimate against the head
    seed by seed (a mean alone hides that the seeds disagree), then the audit's flags."""
    runs, seeds = result["per_seed"], result["seeds"]
    header = ["V(x)", "model", "test reward", "good answers (judge)", "distinct-2"]
    header += ["one answer's share", "length (words)"]
    lines = [
        "# V(x) from a value head or per prompt, on the demo task",
        "",
        f"`python -m bench.value_estimates` at commit {result['commit']}: {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}), mean ± sample std across seeds; "
        f"{result['minutes']:.0f} min on {result['machine']}. Per seed one π_ref; A-LoL and "
        "A-LoL seq train on the value head's advantages (the paper) and on per-prompt values "
        "(`value_estimate: per_prompt`): the reward of π_ref's own greedy answer to each "
        "training prompt (per_prompt), or the mean reward of 4 sampled answers (per_prompt_4). "
        "*good answers*: the demo's judge, which no objective trains on.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for estimate in ESTIMATES:
        for model in ("reference", *OBJECTIVES):
            metrics = result["table"][estimate][model]
            name = "π_ref" if model == "reference" else model
            cells = [estimate, name, plus_minus(*metrics["reward"], ".3f")]
            cells += [
                plus_minus(*metrics["good_answers"], ".0%"),
                plus_minus(*metrics["distinct_2"], ".3f"),
            ]
            cells += [
                plus_minus(*metrics["template_share"], ".0%"),
                plus_minus(*metrics["length"], ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    positive = {e: [run[e]["fraction_positive"] for run in runs.values()] for e in ESTIMATES}
    lines += [
        "",
        f"A > 0 for {_per_seed(positive['head'], '.0%')} of the training answers with the head.",
    ]
    for estimate, by_objective in result["minus_head"].items():
        fit = [run["head_fit"][estimate] for run in runs.values()]
        lines += [
            "",
            f"{estimate} minus the head, per seed: A > 0 for "
            f"{_per_seed(positive[estimate], '.0%')} of the training answers; on the training "
            "prompts the head explains "
            f"{_per_seed([f['explained_variance'] for f in fit], '.2f')} of these values' "
            f"variance and sits {_per_seed([f['mean_offset'] for f in fit], '+.3f')} above them.",
            "",
        ]
        lines += [
            f"- {objective}: reward {_per_seed(gains['reward'], '+.3f')}; good answers "
            f"{_per_seed(gains['good_answers'], '+.0%')}"
            for objective, gains in by_objective.items()
        ]
    lines += [
        "",
        "Audit flags (each run's `eval/audit.md`):",
        "",
    ]
    flags = [
        f"- seed {seed}, {estimate}: {flag}"
        for seed, run in runs.items()
        for estimate in ESTIMATES
        for flag in run[estimate]["flags"]
    ]
    return "\n".join(lines + (flags or ["- none"])) + "\n"


def _per_seed(values: list[float], spec: str) -> str:
    """Each seed's figure, then their mean."""
    shown = ", ".join(format(v, spec) for v in values)
    return f"{shown} (mean {format(statistics.fmean(values), spec)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--run-dir", default="runs/bench-value-estimates")
    parser.add_argument("--results", default="value_estimates")
    args = parser.parse_args()
    started = time.perf_counter()
    with cpu_threads(TINY_THREADS):
        runs = {seed: run_seed(seed, Path(args.run_dir)) for seed in args.seeds}
    result = {
        "commit": commit(),
        "seeds": args.seeds,
        "machine": machine(),
        "versions": versions(),
        "minutes": (time.perf_counter() - started) / 60,
        **summary(runs),
        "per_seed": runs,
    }
    write_results(args.results, result, markdown(result))


if __name__ == "__main__":
    main()
