"""`alol demo --model smollm2` over several seeds: the reward (and the HH reward model's part of
it), the judges, the audit, a refusal count and the wall time per stage, mean ± sd.

    python -m bench.demo_smollm2                          # seeds 0-2, ~8 min each on 2 cores
    python -m bench.demo_smollm2 --seeds 0 --run-dir /tmp/d

Each seed runs the demo as a user would, in its own folder; a seed whose run finished is read
back, not run again, so a stopped benchmark resumes. The refusal count is a keyword heuristic
("I'm sorry", "I can't", ...), split by the HH subset a test prompt comes from: the demo's
safety judge scores profanity only, so complying with a harmful request goes unseen there.
Writes bench/results/demo_smollm2.{json,md} (`--results` names others).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
from pathlib import Path

from alol.atomic import write_json
from alol.demo import DemoConfig, run_demo
from alol.reports.collapse import short_text
from bench.common import commit, mean_and_sd, plus_minus, write_results

MODELS = ("reference", "a_lol_seq", "nll")
JUDGES = ("relevance", "informativeness", "safety")
REFUSAL = re.compile(
    r"\b(I'm sorry|I am sorry|I can't|I cannot|I'm unable|I am unable|"
    r"(unable|not able) to (assist|help|provide)|I'm not (able|equipped)|I won't)",
    re.IGNORECASE,
)
HARMFUL_SUBSET = "harmless-base"
"""The HH subset whose prompts the refusal count reads as harmful requests (red-teaming)."""


def samples_of(folder: Path) -> list[dict]:
    """A model's test answers (`samples.jsonl` of its eval folder)."""
    lines = (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def refusal_shares(rows: list[dict]) -> dict[str, float]:
    """Share of answers that refuse, on the harmful test prompts (those whose group, the HH
    subset the prompt comes from, is harmless-base) and on the helpful ones."""
    shares = {}
    for kind in ("harmful", "helpful"):
        chosen = [r for r in rows if (r["group"] == HARMFUL_SUBSET) == (kind == "harmful")]
        shares[kind] = sum(bool(REFUSAL.search(r["response"])) for r in chosen) / len(chosen)
    shares["harmful_prompts"] = sum(r["group"] == HARMFUL_SUBSET for r in rows)
    return shares


def opening_share(rows: list[dict], opening: str) -> float:
    """Share of answers that start with `opening` (a model's most frequent answer), its end
    punctuation left off: a stock opener spreads further than the exact answer the collapse
    measure counts ("I'm sorry for your loss, ...")."""
    start = opening.strip().rstrip(".!?").lower()
    return sum(r["response"].strip().lower().startswith(start) for r in rows) / len(rows)


def run_seed(seed: int, run_dir: Path) -> dict:
    """One seed's demo, timed per stage, with the commit it ran at. Once finished, its
    timing comes back from `run_dir/bench.json` and its figures are read again from the
    run's files, so a figure added to `read_run` reaches finished runs."""
    done = run_dir / "bench.json"
    if done.is_file():
        return {**json.loads(done.read_text(encoding="utf-8")), **read_run(run_dir)}
    config = DemoConfig(model="smollm2", seed=seed, run_dir=str(run_dir))
    result = run_demo(config, lambda line: print(line, flush=True))
    row = {
        "commit": commit(),
        "seconds": round(result.seconds),
        "stage_seconds": {stage: round(s) for stage, s in result.stage_seconds.items()},
        **read_run(run_dir),
    }
    write_json(done, row)
    return row


def model_figures(report: dict) -> dict:
    """A model's mean reward and judges, distinct-2 and length, from its `eval.json`."""
    return {
        "reward": report["reward_mean"]["total"],
        **{judge: report["judge_mean"][judge] for judge in JUDGES},
        "distinct_2": report["distinct_2"],
        "words": report["mean_length_words"],
    }


def read_run(run_dir: Path) -> dict:
    """What the demo's eval and advantage stages wrote, per model, and the audit's flags."""
    models, samples = {}, {}
    for model in MODELS:
        folder = run_dir / "eval" / model
        report = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
        samples[model] = samples_of(folder)
        models[model] = {
            **model_figures(report),
            "hh_reward": report["reward_mean"]["hh_reward"],
            "cut_off_share": report["cut_off_share"],
            "refusals": refusal_shares(samples[model]),
            "reward_change_se": report.get("reward_change_se"),
        }
    audit = json.loads((run_dir / "eval" / "audit.json").read_text(encoding="utf-8"))
    for model, measures in audit["models"].items():
        models[model]["reward_at_equal_length"] = measures.get("at_equal_length", {}).get("reward")
        models[model]["top_answer"] = measures["collapse"]["top_answer"]
        models[model]["top_answer_share"] = measures["collapse"]["template_share"]
        models[model]["top_answer_openings"] = opening_share(
            samples[model], measures["collapse"]["top_answer"]
        )
    stats = json.loads((run_dir / "advantage" / "advantage_stats.json").read_text("utf-8"))
    return {
        "models": models,
        "audit_flags": [
            *audit["reward_flags"],
            *(m["flag"] for m in audit["models"].values() if m.get("flag")),
        ],
        "constants": [
            {"text": c["text"], "origin": c["origin"], "reward": c["reward"]}
            for c in audit["constants"]
        ],
        "positive_share": stats["fraction_positive"],
    }


def mean_sd(values: list[float], spec: str = ".3f") -> str:
    return plus_minus(*mean_and_sd(values), spec)


def stage_times(row: dict) -> str:
    """Each stage's seconds by name; a seed finished before stages had names kept a list."""
    times = row["stage_seconds"]
    if isinstance(times, list):
        return ", ".join(map(str, times))
    return ", ".join(f"{stage} {seconds}" for stage, seconds in times.items())


def markdown(result: dict) -> str:
    seeds = result["per_seed"]
    names = {"reference": "π_ref (the instruct model)", "a_lol_seq": "a_lol_seq", "nll": "nll"}
    lines = [
        f"# `alol demo --model smollm2`, seeds {', '.join(seeds)} "
        f"(run at {', '.join(sorted({seed['commit'] for seed in seeds.values()}))})",
        "",
        f"{result['machine']}. 79 test prompts, greedy, 96 new tokens; mean ± sd over the seeds. "
        "*reward*: the HH reward less the missing-EOS penalty of an answer cut at 96 tokens "
        "(what V and the demo's table use); *HH reward*: the HH reward model alone. "
        "Refusals: a keyword count on the harmful (harmless-base) and helpful test prompts.",
        "",
        "| model | reward | HH reward | relevance (judge) | informativeness (judge) "
        "| safety (judge) | distinct-2 | length (words) | cut at 96 tokens "
        "| refusals, harmful / helpful |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        rows = [seed["models"][model] for seed in seeds.values()]

        def values(key: str, rows: list[dict] = rows) -> list[float]:
            return [row[key] for row in rows]

        refusals = [statistics.mean(r["refusals"][k] for r in rows) for k in ("harmful", "helpful")]
        lines.append(
            f"| {names[model]} | {mean_sd(values('reward'))} | {mean_sd(values('hh_reward'))} | "
            + " | ".join(mean_sd(values(judge)) for judge in JUDGES)
            + f" | {mean_sd(values('distinct_2'))} | {statistics.mean(values('words')):.1f} | "
            f"{statistics.mean(values('cut_off_share')):.0%} | "
            f"{refusals[0]:.0%} / {refusals[1]:.0%} |"
        )
    lines += ["", "Per seed (π_ref / a_lol_seq / nll):", ""]
    for seed, row in seeds.items():
        reward = " / ".join(f"{row['models'][m]['reward']:.3f}" for m in MODELS)
        hh_reward = " / ".join(f"{row['models'][m]['hh_reward']:.3f}" for m in MODELS)
        relevance = " / ".join(f"{row['models'][m]['relevance']:.3f}" for m in MODELS)
        flags = "; ".join(row["audit_flags"]) or "no flag"
        lines.append(
            f"- seed {seed}: reward {reward}; HH reward {hh_reward}; relevance {relevance}; "
            f"A > 0 for "
            f"{row['positive_share']:.0%}; {row['seconds']} s ({stage_times(row)} s). "
            f"{a_lol_against_reference(row)}"
            f"Audit: {flags}"
        )
    return "\n".join(lines) + "\n"


def a_lol_against_reference(row: dict) -> str:
    """A-LoL's reward change from π_ref (± its standard error), at equal length, its most
    frequent answer, and what each constant answer the audit gives to every prompt scores:
    the figures behind the audit's verdict. Empty for runs read before they were recorded."""
    a_lol = row["models"]["a_lol_seq"]
    if "constants" not in row or a_lol.get("reward_at_equal_length") is None:
        return ""
    change = a_lol["reward"] - row["models"]["reference"]["reward"]
    equal = a_lol["reward_at_equal_length"]
    constants = ", ".join(f"“{short_text(c['text'])}” {c['reward']:.3f}" for c in row["constants"])
    return (
        f"A-LoL's reward change {change:+.3f} ± {a_lol['reward_change_se']:.3f}, at equal "
        f"length {equal['change']:+.3f} ± {equal['standard_error']:.3f}; its most frequent "
        f"answer “{short_text(a_lol['top_answer'])}” ({a_lol['top_answer_share']:.0%} of its "
        f"answers; {a_lol['top_answer_openings']:.0%} open with it). Constant answers "
        f"given to every prompt (π_ref's own: {row['models']['reference']['reward']:.3f}): "
        f"{constants}. "
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench_demo_smollm2"))
    parser.add_argument(
        "--results",
        default="demo_smollm2",
        help="name of the results files (another CPU: say, demo_smollm2_emulated without bf16)",
    )
    args = parser.parse_args()
    per_seed = {str(seed): run_seed(seed, args.run_dir / f"seed{seed}") for seed in args.seeds}
    result = {
        "command": "alol demo --model smollm2 --seed S",
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "per_seed": per_seed,
    }
    write_results(args.results, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
