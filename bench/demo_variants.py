"""Which A-LoL variant `alol demo --model smollm2` shows, decided on the demo's validation
prompts, never on the test prompts its table reports.

    python -m bench.demo_variants                     # seeds 0-2, ~20 min each on 2 cores
    python -m bench.demo_variants --seeds 0 --run-dir /tmp/v

Each seed runs the demo with the four A-LoL variants and NLL (stages a seed already finished
are read back), then decodes its 100 validation prompts (those V is fitted on; no objective
trains on them) with π_ref and every model, scores them with the demo's reward and judges and
audits them, in `RUN_DIR/seedS/validation/`. A variant qualifies when its mean validation reward
is above π_ref's and NLL's and the audit flags it on no seed; the demo shows the qualifying
variant with the highest mean validation reward, and keeps its default when none qualifies
(`chosen_variant`). The test prompts' figures (the demo's own evaluation) are reported beside,
after the choice.
Writes bench/results/demo_variants.{json,md} (`--results` names others).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import replace
from pathlib import Path

from alol.choices import DEMO_OBJECTIVES
from alol.demo import DemoConfig, run_demo
from alol.pipeline import run_eval
from bench.common import commit, mean_and_sd, plus_minus, write_results
from bench.demo_smollm2 import JUDGES, model_figures

VARIANTS = ("a_lol", "a_lol_seq", "a_lol_kl", "a_lol_ref_free")
BASELINE = "nll"
MODELS = ("reference", *VARIANTS, BASELINE)


def demo_config(seed: int, run_dir: Path) -> DemoConfig:
    return DemoConfig(
        model="smollm2", seed=seed, run_dir=str(run_dir), objectives=[*VARIANTS, BASELINE]
    )


def seed_run(seed: int, run_dir: Path) -> dict:
    """The seed's demo (trained if it is not yet), then every model on the validation prompts:
    each model's figures and the audit's flags there and on the test prompts."""
    cfg = run_demo(demo_config(seed, run_dir), print).cfg
    folder = run_dir / "validation"
    for name in (*VARIANTS, BASELINE):
        link = folder / "train" / name / "final"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((run_dir / "train" / name / "final").resolve())
    run_eval(replace(cfg, run_dir=str(folder), test_data=cfg.val_data))
    return {"validation": read_eval(folder / "eval"), "test": read_eval(run_dir / "eval")}


def read_eval(eval_dir: Path) -> dict:
    """Each model's reward, judges, diversity and length on the prompts `eval_dir` holds the
    answers to, and the audit's flag of each model (None: not flagged)."""
    audit = json.loads((eval_dir / "audit.json").read_text(encoding="utf-8"))
    models = {}
    for model in MODELS:
        report = json.loads((eval_dir / model / "eval.json").read_text(encoding="utf-8"))
        models[model] = {**model_figures(report), "flag": audit["models"][model].get("flag")}
    return {"models": models, "reward_flags": audit["reward_flags"]}


def chosen_variant(per_seed: dict) -> tuple[str, str]:
    """The variant the demo should show, decided on the validation prompts, and why: the
    qualifying one (`__doc__`) with the highest mean reward, else the demo's default. Being
    unflagged alone does not qualify: a variant that barely leaves π_ref is never flagged."""
    seeds = [run["validation"] for run in per_seed.values()]

    def mean_reward(model: str) -> float:
        return sum(s["models"][model]["reward"] for s in seeds) / len(seeds)

    bar = max(mean_reward("reference"), mean_reward(BASELINE))
    ahead = [v for v in VARIANTS if mean_reward(v) > bar]
    unflagged = [v for v in VARIANTS if not any(s["models"][v]["flag"] for s in seeds)]
    qualifying = [v for v in ahead if v in unflagged]
    if qualifying:
        best = max(qualifying, key=mean_reward)
        return best, (
            f"the highest mean validation reward ({mean_reward(best):.3f}) of the variants above "
            f"π_ref and NLL ({bar:.3f}) that the audit flags on no seed ({', '.join(qualifying)})"
        )
    return DEMO_OBJECTIVES["smollm2"][0], (
        f"its default, as no variant qualifies: above π_ref and NLL ({bar:.3f}) in the mean: "
        f"{', '.join(f'{v} {mean_reward(v):.3f}' for v in ahead) or 'none'}; flagged on no "
        f"seed: {', '.join(unflagged) or 'none'}"
    )


def markdown(result: dict) -> str:
    seeds = result["per_seed"]
    return (
        "\n".join(
            [
                f"# The SmolLM2 demo's A-LoL variant, chosen on validation: seeds "
                f"{', '.join(seeds)} (run at {result['commit']})",
                "",
                f"{result['machine']}. Greedy, 96 new tokens; mean ± sd over the seeds. *reward*: "
                "the demo's (the HH reward less the missing-EOS penalty).",
                "",
                "## The 100 validation prompts (V is fitted on them; they decide)",
                "",
                *split_table(seeds, "validation"),
                "",
                f"Shown by the demo: **{result['chosen']}**, {result['why']}.",
                "",
                "## The 79 test prompts (the demo's evaluation; after the choice)",
                "",
                *split_table(seeds, "test"),
            ]
        )
        + "\n"
    )


def split_table(seeds: dict, split: str) -> list[str]:
    """Mean ± sd of each model's figures on `split`, the seeds whose audit flags it, and each
    seed's rewards and flags."""
    lines = [
        "| model | reward | relevance | informativeness | safety | distinct-2 | words "
        "| flagged on seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = {seed: run[split] for seed, run in seeds.items()}
    for model in MODELS:
        rows = [run["models"][model] for run in runs.values()]
        flagged = [seed for seed, run in runs.items() if run["models"][model]["flag"]]
        figures = [
            plus_minus(*mean_and_sd([row[key] for row in rows]), ".3f")
            for key in ("reward", *JUDGES, "distinct_2")
        ]
        words = sum(row["words"] for row in rows) / len(rows)
        lines.append(
            f"| {model} | {' | '.join(figures)} | {words:.1f} | {', '.join(flagged) or '–'} |"
        )
    lines.append("")
    for seed, run in runs.items():
        flags = [m["flag"] for m in run["models"].values() if m["flag"]] + run["reward_flags"]
        rewards = ", ".join(f"{m} {run['models'][m]['reward']:.3f}" for m in MODELS)
        lines.append(f"- seed {seed}: reward {rewards}. Audit: {'; '.join(flags) or 'no flag'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench_demo_variants"))
    parser.add_argument("--results", default="demo_variants", help="name of the results files")
    args = parser.parse_args()
    per_seed = {str(s): seed_run(s, args.run_dir / f"seed{s}") for s in args.seeds}
    chosen, why = chosen_variant(per_seed)
    result = {
        "commit": commit(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "per_seed": per_seed,
        "chosen": chosen,
        "why": why,
    }
    write_results(args.results, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
