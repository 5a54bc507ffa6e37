"""One seed's π_ref and trained models of the judged HH benchmark on its test prompts, decoded
by sampling (temperature 1, top-p 0.9) instead of greedily, with the share of evasive templates
and clarifying questions among their answers: whether a drift seen under greedy decoding is
the models' or the decoding's (greedy decoding returns the single likeliest answer, and a
template that many prompts share can be that whenever a model is unsure of the content).

    python -m bench.hh_sampled --seed 1 --model nll=seed1/train/nll/final \\
        --model a_lol_seq=tries_seed1/seq_off_prompt_rm/train/a_lol_seq/final --harmless-term 0

Model folders are relative to the benchmark's run folder (`--out`, as `bench.hh_smollm2`'s);
they and the seed's π_ref are linked into `sampled_seed<S>/` there and evaluated by
`alol.pipeline.run_eval` with the benchmark's judges. Writes bench/results/<results>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from alol.console import configure_console
from alol.pipeline import run_eval
from bench.answer_kinds import is_clarifying_question, is_evasive
from bench.common import commit, write_results
from bench.hh_smollm2 import (
    FULL,
    HARMLESS_TERM_FIT,
    base_config,
    fitted_model,
    judge_models,
    judge_specs,
    seed_config,
    split_data,
    training_reward,
)

SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.9}


def linked(source: Path, target: Path) -> None:
    """`source` hard-linked at `target` once, so the evaluation reads the finished models as
    they are without copying their weights."""
    if not target.exists():
        shutil.copytree(source, target, copy_function=os.link)


def answer_kinds(answers_file: Path) -> dict:
    texts = [json.loads(line)["response"] for line in answers_file.open()]
    return {
        "evasive_template_share": sum(map(is_evasive, texts)) / len(texts),
        "clarifying_question_share": sum(map(is_clarifying_question, texts)) / len(texts),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Seed {result['seed']}'s models on the HH test prompts, decoded by sampling",
        "",
        f"`python -m bench.hh_sampled {' '.join(result['arguments'])}` at commit "
        f"{result['commit']}; decoding {json.dumps(SAMPLING)}; training reward's harmlessness "
        f"term at weight {result['harmless_term']} (the reward column).",
        "",
        "| model | evasive templates | clarifying questions |",
        "|---|---|---|",
        *(
            f"| {name} | {kinds['evasive_template_share']:.1%} | "
            f"{kinds['clarifying_question_share']:.1%} |"
            for name, kinds in result["answer_kinds"].items()
        ),
        "",
        result["comparison"],
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=FOLDER",
        help="a trained model's final folder, relative to the run folder",
    )
    parser.add_argument(
        "--harmless-term",
        type=float,
        default=1.0,
        help="weight of the harmlessness term in the reward column (0: the reward model alone)",
    )
    parser.add_argument("--results", help="default hh_sampled_seed<S>")
    args = parser.parse_args()
    configure_console()
    out = Path(args.out) / "judged"
    run = out / f"sampled_seed{args.seed}"
    models = dict(pair.split("=", 1) for pair in args.model)
    linked(out / f"seed{args.seed}" / "sft", run / "sft")
    for name, folder in models.items():
        linked(out / folder, run / "train" / name / "final")
    paths = split_data(out, FULL, quick=False)
    cfg = base_config(out, Path(args.out) / "smollm2", paths, quick=False)
    judges = judge_specs(judge_models(cfg, out, paths, FULL))
    seed_cfg = seed_config(cfg, args.seed, tuple(models), out, judges)
    term = fitted_model(out / HARMLESS_TERM_FIT.data)
    reward = training_reward(fitted_model(Path(cfg.run_dir)), term, args.harmless_term)
    run_eval(replace(seed_cfg, run_dir=str(run), reward=reward, **SAMPLING))
    result = {
        "commit": commit(),
        "seed": args.seed,
        "arguments": sys.argv[1:],
        "harmless_term": args.harmless_term,
        "models": models,
        "answer_kinds": {
            name: answer_kinds(run / "eval" / name / "answers.jsonl")
            for name in ("reference", *models)
        },
        "comparison": (run / "eval" / "comparison.md").read_text(encoding="utf-8"),
    }
    write_results(args.results or f"hh_sampled_seed{args.seed}", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
