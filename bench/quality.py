"""Quality benchmark: every objective on the demo task, several seeds, mean ± std.

    python -m bench.quality                      # 5 seeds, writes bench/results/quality.{md,json}
    python -m bench.quality --seeds 0 --run-dir /tmp/q

Per seed, the demo task, tokenizer, tiny model, reference, value head and advantages are built
once (exactly as `alol demo` builds them) and every objective trains from that same reference.
DPO trains on pairs built from the same data: per prompt, the best-rewarded answer against each
worse one. The claim checked (A-LoL paper): advantage-based objectives reach a higher test
reward than NLL and wBC from noisy data while keeping diversity.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from alol.atomic import write_json, write_text
from alol.demo import TINY_THREADS, DemoConfig, cpu_threads, kept_fractions, run_stages
from alol.demo import task as demo_task
from alol.demo.tiny import TINY, prepare_tiny
from alol.reports.eval_report import EvalReport
from bench.common import commit, mean_and_sd, plus_minus

OBJECTIVES = (
    "nll",
    "wbc",
    "r_gold",
    "r_lol",
    "a_lol",
    "a_lol_ref_free",
    "a_lol_seq",
    "a_lol_kl",
    "dpo",
    "kto",
)
SHARED_STAGES = ("value", "advantage", "eval")


def seed_metrics(report: EvalReport) -> dict[str, float]:
    """The numbers the table averages, for one model on one seed's test prompts; `good_answers`
    is the demo's judge (`alol.demo.task.good_answer`)."""
    return {
        "reward": report.reward_mean["total"],
        **{f"reward/{c}": report.reward_mean[c] for c in demo_task.COMPONENTS},
        "good_answers": report.judge_mean["good_answer"],
        "distinct_2": report.distinct_2,
        "template_share": report.template_share,
        "length": report.mean_length_words,
    }


@dataclass
class SeedRun:
    """One seed's results, kept in its folder's `bench.json` once the seed is done."""

    metrics: dict[str, dict[str, float]]
    """Model → metric; a model's `seconds` is the stage that trained it (π_ref's: its SFT)."""
    flags: list[str]
    """The audit's flags."""
    stage_seconds: dict[str, float]
    """Each stage's wall time by its name."""


def run_seed(seed: int, run_dir: Path) -> SeedRun:
    """Train and evaluate every objective from one shared reference: metrics per model, the
    audit's flags and each stage's wall time. A finished seed is read back; a seed stopped
    part-way is refused, as its finished stages would be timed as the skips they now are."""
    folder = run_dir / f"seed-{seed}"
    done = folder / "bench.json"
    if done.is_file():
        return SeedRun(**json.loads(done.read_text(encoding="utf-8")))
    if folder.exists():
        raise SystemExit(
            f"{folder} holds seed {seed} stopped part-way; its finished stages would be timed "
            "as skips: delete the folder or give another --run-dir"
        )
    config = DemoConfig(run_dir=str(folder), seed=seed, objectives=list(OBJECTIVES))
    cfg = prepare_tiny(config, print)
    evaluation, seconds = run_stages(cfg, print)
    kept = kept_fractions(cfg)
    metrics = {
        name: {
            **seed_metrics(report),
            "data_kept": kept.get(name, 1.0),
            "seconds": seconds["sft" if name == "reference" else name],
        }
        for name, report in evaluation.reports.items()
    }
    run = SeedRun(metrics, evaluation.audit.flags, seconds)
    write_json(done, asdict(run))
    return run


def shared_stage_seconds(runs: list[SeedRun]) -> dict[str, list[float | None]]:
    """The stages every model shares (value, advantage, eval): mean and sd over the seeds."""
    return {
        stage: list(mean_and_sd(run.stage_seconds[stage] for run in runs))
        for stage in SHARED_STAGES
    }


def aggregate(
    per_seed: list[dict[str, dict[str, float]]],
) -> dict[str, dict[str, list[float | None]]]:
    """model → metric → [mean, sample sd] across seeds (sd None for a single seed), a list as
    JSON stores it."""
    summary: dict[str, dict[str, list[float]]] = {}
    for model in per_seed[0]:
        summary[model] = {}
        for metric in per_seed[0][model]:
            summary[model][metric] = list(mean_and_sd(seed[model][metric] for seed in per_seed))
    return summary


def markdown(
    summary: dict[str, dict[str, list[float]]],
    seeds: list[int],
    flags: dict[int, list[str]],
    minutes: float,
    shared_seconds: dict[str, list[float | None]],
) -> str:
    header = [
        "objective",
        "test reward",
        "politeness",
        "relevance",
        "informativeness",
        "good answers (judge)",
        "distinct-2",
        "one answer's share",
        "length (words)",
        "data kept",
        "seconds",
    ]
    lines = [
        "# Quality on the demo task",
        "",
        f"`python -m bench.quality`: {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± "
        f"sample std across seeds; {minutes:.0f} min on {machine()}. Every model answers the "
        "same held-out test prompts of its seed with greedy decoding. *good answers*: the demo's "
        "judge, the share of test answers that are kind, on topic, informative and not "
        "repetitive (`alol.demo.task.good_answer`), which no objective trains on; *data kept*: "
        "share of training answers the objective learns from; *seconds*: the stage that "
        "trained it (π_ref's: its SFT).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for model, metrics in summary.items():
        name = "π_ref (reference)" if model == "reference" else model
        cells = [
            name,
            plus_minus(*metrics["reward"], ".3f"),
            *(plus_minus(*metrics[f"reward/{c}"], ".2f") for c in demo_task.COMPONENTS),
            plus_minus(*metrics["good_answers"], ".0%"),
            plus_minus(*metrics["distinct_2"], ".3f"),
            plus_minus(*metrics["template_share"], ".0%"),
            plus_minus(*metrics["length"], ".1f"),
            "–" if model == "reference" else f"{metrics['data_kept'][0]:.0%}",
            plus_minus(*metrics["seconds"], ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    shared = ", ".join(f"{stage} {plus_minus(*t, '.0f')} s" for stage, t in shared_seconds.items())
    lines += ["", f"The stages every model shares, a seed: {shared}."]
    lines += ["", "Audit flags (each seed's `eval/audit.md`):", ""]
    lines += [f"- seed {seed}: {flag}" for seed, found in flags.items() for flag in found] or [
        "- none"
    ]
    return "\n".join(lines) + "\n"


def machine() -> str:
    return (
        f"{platform.machine()} CPU ({os.cpu_count()} cores, {TINY_THREADS} torch thread), "
        f"torch {torch.__version__}"
    )


def versions() -> dict[str, str]:
    packages = ("torch", "transformers", "peft", "accelerate", "numpy")
    return {
        "python": platform.python_version(),
        **{p: importlib.metadata.version(p) for p in packages},
        "alol": importlib.metadata.version("alol"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="Seeds to run."
    )
    parser.add_argument(
        "--run-dir", default="runs/bench-quality", help="Folder for the runs' artifacts."
    )
    parser.add_argument(
        "--out", default="bench/results", help="Folder for quality.md and quality.json."
    )
    args = parser.parse_args()
    start = time.perf_counter()
    with cpu_threads(TINY_THREADS):
        runs = {seed: run_seed(seed, Path(args.run_dir)) for seed in args.seeds}
    minutes = (time.perf_counter() - start) / 60
    per_seed = [run.metrics for run in runs.values()]
    flags = {seed: run.flags for seed, run in runs.items()}
    summary = aggregate(per_seed)
    shared_seconds = shared_stage_seconds(list(runs.values()))
    table = markdown(summary, args.seeds, flags, minutes, shared_seconds)
    print(table)
    out = Path(args.out)
    write_text(out / "quality.md", table)
    write_json(
        out / "quality.json",
        {
            "seeds": args.seeds,
            "objectives": list(OBJECTIVES),
            "summary": summary,
            "per_seed": dict(zip(map(str, args.seeds), per_seed, strict=True)),
            "flags": flags,
            "stage_seconds": {str(seed): run.stage_seconds for seed, run in runs.items()},
            "commit": commit(),
            "settings": asdict(TINY),
            "machine": machine(),
            "versions": versions(),
            "minutes": minutes,
        },
    )


if __name__ == "__main__":
    main()
