"""Recipe tries on the HH benchmark's first seed: one setting changed at a time, the same π_ref,
V(x) and advantages, so each row differs from the benchmark's own row by that setting alone.

    python bench/hh_tries.py        # after `python bench/hh_smollm2.py` has run seed 0

Also audits the reward the data carries: how often the stored reward-model logits prefer a
short evasive answer ("I'm sorry, I don't understand.") over the other candidate, which tells
whether a policy that turns evasive is gaming the learned reward model or following the data's.
Writes bench/results/hh_smollm2_tries.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
from hh_smollm2 import FULL, RESULTS, base_config, measure_rows, seed_config, split_data

from alol.atomic import write_json, write_text
from alol.config import PipelineConfig
from alol.console import configure_console
from alol.demo.smollm2 import convert_smollm2
from alol.formats import load_records
from alol.pipeline import run_advantage, run_eval, run_train, run_value

TRIES = {
    "seq_uniform": ("a_lol_seq", {"sampling": "uniform"}),
    "seq_clip02": ("a_lol_seq", {"clip": 0.2}),
    "seq_lr5e5": ("a_lol_seq", {"learning_rate": 5e-5}),
    "seq_half_steps": ("a_lol_seq", {"max_steps": 50}),
    "seq_lora_r4": ("a_lol_seq", {"lora_r": 4, "lora_alpha": 8}),
    "seq_lora_attention": ("a_lol_seq", {"lora_target_modules": "q_proj,k_proj,v_proj,o_proj"}),
}
"""Name → (objective, the settings it changes from the benchmark's recipe)."""
SHARED_STAGES = ("sft", "value", "advantage", "eval/reference")
EVASIVE = re.compile(
    r"sorry|not sure what you mean|i don.t understand|what do you mean|i.m not sure", re.I
)
EVASIVE_MAX_WORDS = 15


def run_try(cfg: PipelineConfig, out: Path, name: str, objective: str, overrides: dict) -> dict:
    """Train and evaluate one try in `out/tries/<name>`, on hard links to seed 0's shared
    stages. alol writes every file by rename, so even a stage that reran here would replace
    the links, never edit seed 0's files: the benchmark's own run stays as it was."""
    seed0 = out / "seed0"
    try_dir = out / "tries" / name
    for part in SHARED_STAGES:
        if not (try_dir / part).exists():
            (try_dir / part).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(seed0 / part), str(try_dir / part)], check=True)
    try_cfg = replace(seed_config(cfg, 0, (objective,), out), run_dir=str(try_dir), **overrides)
    run_value(try_cfg)
    run_advantage(try_cfg)
    run_train(try_cfg, objective)
    run_eval(try_cfg)
    return measure_rows(try_cfg, [objective])[objective]


def stored_reward_audit(train_file: Path) -> dict:
    """In the pairs where exactly one candidate is a short evasive answer, how often the stored
    logits prefer it and how often the human did (HH lists the human's choice first); and the
    mean stored logit of such answers against the rest."""
    evasive_logits, other_logits, preferred, chosen, pairs = [], [], 0, 0, 0
    for record in load_records(train_file).records:
        flags = [_is_evasive(response) for response in record.responses]
        for flag, logit in zip(flags, record.reward_logits, strict=True):
            (evasive_logits if flag else other_logits).append(logit)
        if sum(flags) == 1:
            pairs += 1
            mine = flags.index(True)
            preferred += record.reward_logits[mine] > record.reward_logits[1 - mine]
            chosen += mine == 0
    return {
        "pairs_with_one_evasive_answer": pairs,
        "stored_prefers_evasive": preferred / pairs,
        "human_chose_evasive": chosen / pairs,
        "mean_stored_logit_evasive": statistics.fmean(evasive_logits),
        "mean_stored_logit_other": statistics.fmean(other_logits),
        "evasive_answers": len(evasive_logits),
        "answers": len(evasive_logits) + len(other_logits),
    }


def _is_evasive(response: str) -> bool:
    return bool(EVASIVE.search(response)) and len(response.split()) < EVASIVE_MAX_WORDS


def markdown(result: dict) -> str:
    columns = ("reward", "safety", "relevance", "distinct_2", "length_words", "cut_off_share")
    lines = [
        "| try | objective | changed | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 3),
    ]
    for name, row in result["rows"].items():
        cells = [
            f"{row[key]:.1f}" if key == "length_words" else f"{row[key]:.3f}" for key in columns
        ]
        changed = json.dumps(row["changed"]) if row["changed"] else "nothing (the benchmark's row)"
        lines.append(f"| {name} | {row['objective']} | {changed} | " + " | ".join(cells) + " |")
    audit = result["stored_reward_audit"]
    return "\n".join(
        [
            "# Recipe tries on the HH benchmark, seed 0",
            "",
            "`python bench/hh_tries.py`: each try changes the settings it names from the "
            "benchmark's recipe and reuses seed 0's π_ref, V(x) and advantages; test prompts, "
            "greedy decoding, measured as in `hh_smollm2.md`.",
            "",
            *lines,
            "",
            f"The data's own reward: in the {audit['pairs_with_one_evasive_answer']} training "
            "pairs where exactly one candidate is a short evasive answer (an apology or "
            f'"I don\'t understand", under {EVASIVE_MAX_WORDS} words), the stored reward-model '
            f"logits prefer it {audit['stored_prefers_evasive']:.1%} of the time and the human "
            f"chose it {audit['human_chose_evasive']:.1%} of the time; such answers "
            f"({audit['evasive_answers']} of {audit['answers']}) average a stored logit of "
            f"{audit['mean_stored_logit_evasive']:+.2f} against {audit['mean_stored_logit_other']:+.2f} "
            "for the rest.",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_console()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / "full"
    missing = [part for part in SHARED_STAGES if not (out / "seed0" / part).exists()]
    if missing:
        sys.exit(f"{out / 'seed0'} lacks {missing}: run `python bench/hh_smollm2.py` first")
    paths = split_data(out, FULL, False)
    cfg = base_config(out, convert_smollm2(out.parent / "smollm2"), paths, FULL)
    objectives = tuple(dict.fromkeys(objective for objective, _ in TRIES.values()))
    baseline = measure_rows(seed_config(cfg, 0, objectives, out), list(objectives))
    rows = {
        f"{objective} (benchmark)": {**baseline[objective], "objective": objective, "changed": {}}
        for objective in objectives
    }
    for name, (objective, overrides) in TRIES.items():
        row = run_try(cfg, out, name, objective, overrides)
        rows[name] = {**row, "objective": objective, "changed": overrides}
    result = {
        "rows": rows,
        "stored_reward_audit": stored_reward_audit(paths["train_all"]),
    }
    write_json(RESULTS / "hh_smollm2_tries.json", result)
    write_text(RESULTS / "hh_smollm2_tries.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
