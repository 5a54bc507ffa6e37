"""The A-LoL paper's Helpful-Harmless experiment, scaled to a 2-core CPU: SmolLM2-135M-Instruct
with LoRA, the real HH records, a reward model learned from their stored scores.

    python bench/hh_smollm2.py                 # every seed and objective (hours on 2 cores)
    python bench/hh_smollm2.py --quick         # the plumbing in minutes, not the result

- Data: `../shared/data/hh` helpful_base + harmless_base, without the prompts that
  sampled_dev.json repeats and the few records with an empty candidate, split by prompt
  (seed 0, fixed) into train / validation / test.
- Reward: `alol reward-model` on the train split's stored reward-model logits (MiniLM
  backbone); R = sigmoid(output), the paper's reward. Its held-out pairwise accuracy and
  correlations are reported, and its agreement with the stored scores on the test split.
  Second opinions the policy never trained on: alol's offline safety and relevance scorers.
- π_ref: SFT of the instruct model on the preferred responses (the paper's recipe); the
  instruct model itself is a second row. V(x): π_ref's greedy answers to the validation
  prompts, scored by the reward model.
- Objectives: nll, wbc, dpo and the A-LoL variants over 3 seeds; r_gold, r_lol and pro on the
  first seed. Measures on the test prompts: reward, second opinions, distinct-1/2, length,
  win-rate vs π_ref, empty and cut-off shares, training wall time.

Each stage is an `alol.pipeline` stage, so a stopped run resumes where it was (finished stages
are skipped by their fingerprints). Writes bench/results/hh_smollm2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from alol import __version__
from alol.atomic import write_json, write_text
from alol.config import PipelineConfig
from alol.console import configure_console
from alol.demo.smollm2 import convert_smollm2
from alol.eval_report import read_report
from alol.formats import load_records, save_records
from alol.pipeline import (
    run_advantage,
    run_eval,
    run_online,
    run_reward_model,
    run_sft,
    run_train,
    run_value,
)
from alol.records import PromptRecord
from alol.rewards import load_reward, score
from alol.train.checkpoints import newest_checkpoint

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh"
RESULTS = Path(__file__).resolve().parent / "results"
THREE_SEEDS = ("a_lol", "nll", "wbc", "a_lol_ref_free", "a_lol_seq", "dpo", "a_lol_kl")
"""A-LoL and NLL first: the partial results after each objective answer the main question early."""
ONE_SEED = ("r_gold", "r_lol", "pro")
ONLINE = ("grpo", "rloo")
"""Online baselines on the first seed, at about the wall time of one A-LoL run."""
SECOND_OPINIONS = ("safety", "relevance")
CONSTANT_ANSWER = "I’m sorry, I’m not sure what you mean."
"""An evasive answer that the HH data rewards often: given to every test prompt, it checks how
far the learned reward can be raised without answering anything."""


@dataclass(frozen=True)
class Sizes:
    """How much of the data and compute one seed uses."""

    test_prompts: int = 150
    val_prompts: int = 200
    train_prompts: int = 1200
    """Prompts the policy trains on (the reward model sees the whole train split)."""
    max_prompt_length: int = 256
    max_response_length: int = 64
    sft_steps: int = 150
    nll_steps: int = 100
    """The NLL budget; A-LoL trains fraction_positive × this."""
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_r: int = 16
    reward_model_epochs: int = 1
    online_steps: int = 25
    num_generations: int = 4


FULL = Sizes()
QUICK = Sizes(
    test_prompts=8, val_prompts=12, train_prompts=24, sft_steps=2, nll_steps=2, batch_size=2,
    reward_model_epochs=1, online_steps=2, num_generations=2,
)  # fmt: skip


def prompt_key(record) -> str:
    return json.dumps(record.prompt, sort_keys=True)


def split_data(out: Path, sizes: Sizes, quick: bool) -> dict[str, Path]:
    """train_all (reward model), train (policy), val and test files, split by prompt, seed 0."""
    records = load_records(HH / "helpful_base.json").records
    records += load_records(HH / "harmless_base.json").records
    dev = {prompt_key(r) for r in load_records(HH / "sampled_dev.json").records}
    records = [r for r in records if prompt_key(r) not in dev]
    # A few published candidates are empty; the split files hold answers to learn from.
    records = [r for r in records if all(response.strip() for response in r.responses)]
    random.Random(0).shuffle(records)
    test = records[: sizes.test_prompts]
    val = records[sizes.test_prompts : sizes.test_prompts + sizes.val_prompts]
    train_all = records[sizes.test_prompts + sizes.val_prompts :]
    if quick:
        train_all = train_all[: 4 * sizes.train_prompts]
    files = {
        "train_all": train_all,
        "train": train_all[: sizes.train_prompts],
        "val": val,
        "test": [PromptRecord(r.prompt, r.id) for r in test],
        "test_scored": test,
    }
    paths = {}
    for name, chunk in files.items():
        paths[name] = out / "data" / f"{name}.jsonl"
        if not paths[name].exists():
            save_records(chunk, paths[name])
    return paths


def base_config(out: Path, model: Path, paths: dict[str, Path], sizes: Sizes) -> PipelineConfig:
    return PipelineConfig(
        model=str(model),
        train_data=str(paths["train"]),
        val_data=str(paths["val"]),
        test_data=str(paths["test"]),
        run_dir=str(out / "rm"),
        reward_model="minilm",
        reward_model_epochs=sizes.reward_model_epochs,
        reward_model_batch_size=32,
        reward_model_max_length=256,
        max_prompt_length=sizes.max_prompt_length,
        max_response_length=sizes.max_response_length,
        max_steps=sizes.nll_steps,
        sft_max_steps=sizes.sft_steps,
        batch_size=sizes.batch_size,
        learning_rate=sizes.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=0.3 / 4,  # the authors' 0.3 on gradients summed over 4 micro-batches
        lora=True,
        lora_r=sizes.lora_r,
        lora_alpha=2 * sizes.lora_r,
        bf16=True,
        logging_steps=10,
        save_steps=50,
        generation_batch_size=32,
        precompute_batch_size=32,
        value_epochs=10,
        objectives=[],
    )


def fit_reward(cfg: PipelineConfig, paths: dict[str, Path]) -> dict:
    """The reward model on the whole train split; its metrics, and its agreement with the
    stored scores on the test split's pairs."""
    model = run_reward_model(replace(cfg, train_data=str(paths["train_all"])))
    metrics = json.loads((model.parent / "metrics.json").read_text())
    reward = load_reward({"type": "classifier", "path": str(model), "activation": "none"})
    test = load_records(paths["test_scored"]).records
    tokenizer = _policy_tokenizer(cfg)
    from alol.tokenize import render_prompt

    prompts = [render_prompt(r.prompt, tokenizer) for r in test for _ in r.responses]
    responses = [response for r in test for response in r.responses]
    outputs = [s["total"] for s in score(reward, prompts, responses, show_progress=False)]
    stored = [logit for r in test for logit in r.reward_logits]
    agree = [
        (outputs[2 * i] > outputs[2 * i + 1]) == (stored[2 * i] > stored[2 * i + 1])
        for i in range(len(test))
        if stored[2 * i] != stored[2 * i + 1]
    ]
    human = [outputs[2 * i] > outputs[2 * i + 1] for i in range(len(test))]
    return {
        "heldout": {k: v for k, v in metrics.items() if not isinstance(v, list | dict)},
        "test_pairwise_accuracy_vs_stored": sum(agree) / len(agree),
        "test_prefers_human_choice": sum(human) / len(human),
        "test_pairs": len(test),
    }


def _policy_tokenizer(cfg: PipelineConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model)


def seed_config(
    cfg: PipelineConfig, seed: int, objectives: tuple[str, ...], out: Path
) -> PipelineConfig:
    """One seed's stages in `out/seed<seed>`, scored by the fitted reward model."""
    rm = Path(cfg.run_dir) / "reward_model" / "model"
    return replace(
        cfg,
        run_dir=str(out / f"seed{seed}"),
        seed=seed,
        reward={"type": "classifier", "path": str(rm), "name": "reward"},
        reward_model=None,
        objectives=list(objectives),
    )


def run_seed(
    cfg: PipelineConfig, seed: int, objectives: tuple[str, ...], out: Path, sizes: Sizes
) -> dict:
    """Every stage of one seed; the evaluation of π_ref and each objective (online methods
    included), with wall times and, for the online methods, their cost."""
    seed_cfg = seed_config(cfg, seed, objectives, out)
    run_dir = Path(seed_cfg.run_dir)
    times = run_dir / "bench_times.json"
    for name, stage in (("sft", run_sft), ("value", run_value), ("advantage", run_advantage)):
        timed(times, name, run_dir / name, lambda stage=stage: stage(seed_cfg))
    online_cfg = replace(
        seed_cfg, max_steps=sizes.online_steps, num_generations=sizes.num_generations
    )
    for done, objective in enumerate(objectives, start=1):
        folder = run_dir / "train" / objective
        if objective in ONLINE:
            timed(times, objective, folder, lambda o=objective: run_online(online_cfg, o))
        else:
            timed(times, objective, folder, lambda o=objective: run_train(seed_cfg, o))
        # Each model's evaluation is cached, so evaluating as we go costs nothing at the end
        # and shows the first rows while the rest still train.
        trained = replace(seed_cfg, objectives=list(objectives[:done]))
        run_eval(trained)
        write_json(
            run_dir / "partial_rows.json",
            measure_rows(trained, ["reference", *objectives[:done]]),
        )
    rows = measure_rows(seed_cfg, ["reference", *objectives])
    for method in set(objectives) & set(ONLINE):
        cost = json.loads((run_dir / "train" / method / "cost.json").read_text())
        rows[method].update(
            reward_calls=cost["reward_calls"], generated_tokens=cost["generated_tokens"]
        )
    return {"times": json.loads(times.read_text()), "rows": rows}


def timed(times_file: Path, name: str, folder: Path, stage) -> None:
    """Run a stage; its wall time is kept in `times_file` from the run that did the work, so a
    resumed benchmark reports that run's time, not the skip's. A stage that picks up the
    checkpoint of a stopped run (the one the pipeline resumes from) is kept as None, not
    timed: only its last part ran here."""
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    resumed = newest_checkpoint(folder / "checkpoints") is not None
    started = time.perf_counter()
    stage()
    if name not in times:
        times[name] = None if resumed else time.perf_counter() - started
        write_json(times_file, times)


def measure_rows(cfg: PipelineConfig, names: list[str]) -> dict[str, dict]:
    """Each named model's test measures: its evaluation report's, and the second opinions,
    which score the last user turn (the scorers read a question, not a chat)."""
    rows = {}
    opinions = {name: load_reward(name) for name in SECOND_OPINIONS}
    test = load_records(cfg.test_data).records
    questions = [_last_user_turn(r.prompt) for r in test]
    for name in names:
        report = read_report(Path(cfg.run_dir) / "eval" / name)
        responses = [e.response for e in report.examples]
        row = {
            "reward": report.reward_mean["total"],
            "distinct_1": report.distinct_1,
            "distinct_2": report.distinct_2,
            "length_words": report.mean_length_words,
            "win_rate": report.win_rate,
            "empty_share": report.empty_share,
            "cut_off_share": report.cut_off_share,
        }
        for opinion, reward in opinions.items():
            scores = score(reward, questions, responses, show_progress=False)
            row[opinion] = statistics.fmean(s["total"] for s in scores)
        rows[name] = row
    return rows


def _last_user_turn(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def instruct_row(cfg: PipelineConfig, out: Path) -> dict:
    """The instruct model as it ships, with no SFT: evaluated like π_ref."""
    base_cfg = replace(
        cfg,
        run_dir=str(out / "instruct"),
        reference=cfg.model,
        reward={"type": "classifier", "path": str(Path(cfg.run_dir) / "reward_model" / "model")},
        reward_model=None,
        objectives=[],
    )
    run_eval(base_cfg)
    return measure_rows(base_cfg, ["reference"])["reference"]


def constant_answer_row(seed_cfg_dir: Path, cfg: PipelineConfig) -> dict:
    """The reward and second opinions of `CONSTANT_ANSWER` on the test prompts, as rendered for
    the first seed's evaluation."""
    examples = read_report(seed_cfg_dir / "eval" / "reference").examples
    reward = load_reward(
        {"type": "classifier", "path": str(Path(cfg.run_dir) / "reward_model" / "model")}
    )
    answers = [CONSTANT_ANSWER] * len(examples)
    row = {"answer": CONSTANT_ANSWER}
    row["reward"] = statistics.fmean(
        s["total"]
        for s in score(reward, [e.prompt for e in examples], answers, show_progress=False)
    )
    questions = [_last_user_turn(r.prompt) for r in load_records(cfg.test_data).records]
    for opinion in SECOND_OPINIONS:
        scores = score(load_reward(opinion), questions, answers, show_progress=False)
        row[opinion] = statistics.fmean(s["total"] for s in scores)
    return row


def aggregate(seeds: dict[int, dict]) -> dict[str, dict]:
    """Per model: each measure's mean, sample sd across seeds (0 for one seed), and values."""
    names = list(dict.fromkeys(name for run in seeds.values() for name in run["rows"]))
    table = {}
    for name in names:
        runs = [run["rows"][name] for run in seeds.values() if name in run["rows"]]
        measures = {}
        for key in runs[0]:
            values = [run[key] for run in runs if run[key] is not None]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                measures[key] = {"mean": statistics.fmean(values), "sd": sd, "values": values}
        times = [run["times"][name] for run in seeds.values() if run["times"].get(name)]
        if times:
            sd = statistics.stdev(times) if len(times) > 1 else 0.0
            measures["train_seconds"] = {"mean": statistics.fmean(times), "sd": sd, "values": times}
        table[name] = measures
    return table


def markdown(result: dict) -> str:
    columns = [
        ("reward", ".3f"), ("safety", ".3f"), ("relevance", ".3f"), ("distinct_2", ".3f"),
        ("length_words", ".1f"), ("win_rate", ".2f"), ("empty_share", ".0%"),
        ("cut_off_share", ".0%"), ("train_seconds", ".0f"), ("reward_calls", ".0f"),
        ("generated_tokens", ".0f"),
    ]  # fmt: skip
    header = ["model", "seeds", *(name for name, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, measures in result["table"].items():
        cells = [
            name if name != "reference" else "π_ref (SFT)",
            str(len(measures["reward"]["values"])),
        ]
        for key, spec in columns:
            m = measures.get(key)
            if m is None:
                cells.append("–")
            elif len(m["values"]) > 1:
                cells.append(f"{m['mean']:{spec}} ± {m['sd']:{spec}}")
            else:
                cells.append(format(m["mean"], spec))
        lines.append("| " + " | ".join(cells) + " |")
    rm = result["reward_model"]
    return "\n".join(
        [
            "# HH on SmolLM2-135M-Instruct (CPU scale)",
            "",
            f"`python bench/hh_smollm2.py` — {result['machine']}; torch {result['versions']['torch']}, "
            f"transformers {result['versions']['transformers']}, alol {result['versions']['alol']}; "
            f"{result['stage_hours']:.1f} h of stage compute in all (each stage timed by the run that "
            f"did it; this run {result['hours']:.1f} h). Sizes: {json.dumps(result['sizes'])}.",
            "",
            "Reward model (MiniLM, regression on the train split's stored logits): held-out "
            f"pairwise accuracy {rm['heldout'].get('pairwise_accuracy', float('nan')):.3f}, "
            f"Pearson {rm['heldout'].get('pearson', float('nan')):.3f}; on the test split it orders "
            f"{rm['test_pairwise_accuracy_vs_stored']:.1%} of the pairs as the stored reward model "
            f"does and prefers the human-chosen answer {rm['test_prefers_human_choice']:.1%} of the time.",
            "",
            "Test prompts, greedy decoding; mean ± sample sd over seeds. reward: sigmoid of the "
            "learned reward model (the policy's reward); safety and relevance: alol's offline "
            "scorers, a second opinion no objective trained on; win-rate against that seed's π_ref."
            + _not_timed_note(result["not_timed"]),
            "",
            *lines,
            "",
            f"Instruct model without SFT: {json.dumps({k: round(v, 3) for k, v in result['instruct'].items() if isinstance(v, float)})}",
            "",
            f"The same answer to every test prompt ({result['constant_answer']['answer']!r}): "
            + json.dumps(
                {
                    k: round(v, 3)
                    for k, v in result["constant_answer"].items()
                    if isinstance(v, float)
                }
            ),
            "",
        ]
    )


def _not_timed_note(not_timed: dict) -> str:
    if not not_timed:
        return ""
    runs = "; ".join(f"seed {seed}: {', '.join(names)}" for seed, names in not_timed.items())
    return (
        " train_seconds leaves out the runs that resumed a stopped run's checkpoint, "
        f"which were timed only in part ({runs})."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_console()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    out = Path(args.out) / ("quick" if args.quick else "full")
    model = convert_smollm2(out.parent / "smollm2")
    paths = split_data(out, sizes, args.quick)
    cfg = base_config(out, model, paths, sizes)
    rm = fit_reward(cfg, paths)
    seeds = {}
    for number, seed in enumerate(args.seeds):
        objectives = THREE_SEEDS + (ONE_SEED + ONLINE if number == 0 else ())
        seeds[seed] = run_seed(cfg, seed, objectives, out, sizes)
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} torch threads",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "alol": __version__,
            "python": sys.version.split()[0],
        },
        "sizes": asdict(sizes),
        "seeds": args.seeds,
        "hours": (time.perf_counter() - started) / 3600,
        "stage_hours": sum(sum(filter(None, run["times"].values())) for run in seeds.values())
        / 3600,
        "not_timed": {
            seed: sorted(name for name, took in run["times"].items() if took is None)
            for seed, run in seeds.items()
            if None in run["times"].values()
        },
        "reward_model": rm,
        "instruct": instruct_row(cfg, out),
        "constant_answer": constant_answer_row(out / f"seed{args.seeds[0]}", cfg),
        "table": aggregate(seeds),
        "per_seed": seeds,
    }
    name = "hh_smollm2_quick" if args.quick else "hh_smollm2"
    write_json(RESULTS / f"{name}.json", result)
    write_text(RESULTS / f"{name}.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
