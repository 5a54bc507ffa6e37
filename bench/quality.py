"""Quality benchmark: every objective on the demo task, several seeds, mean ± std.

    python bench/quality.py                      # 5 seeds, writes bench/results/quality.{md,json}
    python bench/quality.py --seeds 0 --run-dir /tmp/q

Per seed, the demo task, tokenizer, tiny model, reference, value head and advantages are built
once (exactly as `alol demo` builds them) and every objective trains from that same reference.
DPO trains on pairs built from the same data: per prompt, the best-rewarded answer against each
worse one. The claim checked (A-LoL paper): advantage-based objectives reach a higher test
reward than NLL and wBC from noisy data while keeping diversity.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

from alol.atomic import write_json, write_text
from alol.demo import TINY_THREADS, DemoConfig, cpu_threads, kept_fractions, run_stages
from alol.demo import task as demo_task
from alol.demo.tiny import TINY, prepare_tiny
from alol.eval_report import EvalReport

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
)
METRICS = ("reward", "distinct_2", "length", "good_answers")


def seed_metrics(report: EvalReport) -> dict[str, float]:
    """The numbers the table averages, for one model on one seed's test prompts."""
    kinds = Counter(demo_task.classify(e.prompt, e.response) for e in report.examples)
    return {
        "reward": report.reward_mean["total"],
        **{f"reward/{c}": report.reward_mean[c] for c in demo_task.COMPONENTS},
        "distinct_2": report.distinct_2,
        "length": report.mean_length_words,
        "good_answers": kinds["good"] / report.n,
    }


def run_seed(seed: int, run_dir: Path) -> dict[str, dict[str, float]]:
    """Train and evaluate every objective from one shared reference; metrics per model."""
    config = DemoConfig(
        run_dir=str(run_dir / f"seed-{seed}"), seed=seed, objectives=list(OBJECTIVES)
    )
    cfg = prepare_tiny(config, print)
    reports = run_stages(cfg, print)
    kept = kept_fractions(cfg)
    return {
        name: {**seed_metrics(report), "data_kept": kept.get(name, 1.0)}
        for name, report in reports.items()
    }


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """model → metric → [mean, sample std] across seeds (std 0 for a single seed)."""
    summary: dict[str, dict[str, list[float]]] = {}
    for model in per_seed[0]:
        summary[model] = {}
        for metric in per_seed[0][model]:
            values = [seed[model][metric] for seed in per_seed]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[model][metric] = [statistics.fmean(values), spread]
    return summary


def markdown(summary: dict[str, dict[str, list[float]]], seeds: list[int], minutes: float) -> str:
    header = [
        "objective",
        "test reward",
        "politeness",
        "relevance",
        "informativeness",
        "good answers",
        "distinct-2",
        "length (words)",
        "data kept",
    ]
    lines = [
        "# Quality on the demo task",
        "",
        f"`python bench/quality.py`: {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± "
        f"sample std across seeds; {minutes:.0f} min on {_machine()}. Every model answers the "
        "same held-out test prompts of its seed with greedy decoding. *good answers*: share of "
        "test answers that are kind, on topic and informative (`alol.demo.task.classify`); "
        "*data kept*: share of training answers the objective learns from.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for model, metrics in summary.items():
        name = "π_ref (reference)" if model == "reference" else model
        cells = [
            name,
            _pm(metrics["reward"], ".3f"),
            *(_pm(metrics[f"reward/{c}"], ".2f") for c in demo_task.COMPONENTS),
            _pm(metrics["good_answers"], ".0%"),
            _pm(metrics["distinct_2"], ".3f"),
            _pm(metrics["length"], ".1f"),
            "–" if model == "reference" else f"{metrics['data_kept'][0]:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(mean_std: list[float], spec: str) -> str:
    mean, std = mean_std
    return f"{format(mean, spec)} ± {format(std, spec)}"


def _machine() -> str:
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
        per_seed = [run_seed(seed, Path(args.run_dir)) for seed in args.seeds]
    minutes = (time.perf_counter() - start) / 60
    summary = aggregate(per_seed)
    table = markdown(summary, args.seeds, minutes)
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
            "settings": asdict(TINY),
            "machine": _machine(),
            "versions": versions(),
            "minutes": minutes,
        },
    )


if __name__ == "__main__":
    main()
