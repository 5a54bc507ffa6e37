"""The A-LoL paper's Helpful-Harmless experiment at CPU scale, judged by models the policy never
trained on: SmolLM2-135M-Instruct with LoRA, the real HH records, a learned reward.

    python -m bench.hh_smollm2                 # every seed and objective (hours on 2 cores)
    python -m bench.hh_smollm2 --prepare       # reward model, judges, π_ref, V, advantages only
    python -m bench.hh_smollm2 --quick         # the plumbing in minutes, not the result
    python -m bench.hh_smollm2 --seeds 0 --objectives a_lol nll   # some rows now, the rest later

Every run writes the results of every finished model of every seed, so a benchmark can be
run in parts.

- Data: `../shared/data/hh` helpful_base + harmless_base + helpful_online, without the prompts
  that sampled_dev.json repeats and the few records with an empty candidate, split by prompt
  (seed 0, fixed) into train / validation / test. The policy trains on `train_prompts` of the
  train split, `online_share` of them helpful-online (the paper's data is about half
  helpful-online and rejection-sampled, whose preferred answers are long and helpful).
- Reward (training, V and checkpoint selection): `alol reward-model` on the train split's
  stored reward-model logits (MiniLM, with the off-prompt loss), as the paper trains on its
  reward model alone. `HARMLESS_TERM` × a Bradley–Terry model of the human choices on half of
  harmless-base's training prompts can be added (`bench.hh_tries` tries it, gated or not);
  refitted without dropout, the sum pays every stock evasion above π_ref's answers.
- Judges, fitted on the train split only and never trained on: helpfulness (Bradley–Terry on
  the human choices of the helpful subsets' pairs), harmlessness (the same on the other half
  of harmless-base's prompts, which the training reward never saw), relevance of the answer to
  the user's last question and safety (alol's offline scorers). Each learned model's held-out
  and test pairwise accuracy against the human choice is reported.
- π_ref: SFT of the instruct model on the preferred responses; V(x): π_ref's greedy answers to
  the validation prompts. Each objective validates every quarter of its steps on the
  validation prompts and keeps the best checkpoint by the reward, never a degenerate one
  (collapsed, or rambling or looping more than π_ref's validation answers).
  The recipe (lengths, steps, learning rate, LoRA, clip, the A-LoL variants' length-neutral A)
  is `examples/hh_smollm2.yaml`.
- Rows: π_ref, nll, wbc, dpo, kto and the four A-LoL variants on 3 seeds; r_gold, r_lol, pro,
  grpo and rloo on the first. Every evaluation is audited (`eval/audit.md` per seed).

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
import yaml

from alol import __version__
from alol.atomic import write_json
from alol.config import PipelineConfig
from alol.console import configure_console
from alol.data.formats import load_records, save_records
from alol.data.records import PreferenceRecord, PromptRecord, RewardRecord
from alol.data.splits import prompt_key, shuffled_prompt_groups
from alol.data.tokenize import render_prompt
from alol.demo.smollm2 import convert_smollm2
from alol.models.memory import release_memory
from alol.pipeline import (
    run_advantage,
    run_eval,
    run_online,
    run_reward_model,
    run_sft,
    run_train,
    run_value,
)
from alol.pipeline.inputs import (
    load_splits,
    load_tokenizer,
    pointwise_records,
    render,
    stage_inputs,
    without_cut_responses,
)
from alol.pipeline.judges import configured_judges
from alol.reports.eval_report import read_report
from alol.reports.metrics import distinct_n
from alol.rewards import load_reward, score
from alol.train.checkpoints import newest_checkpoint
from bench.common import RESULTS, commit, training_precision, write_results
from bench.hh_results import (
    markdown,
    merge_results,
    plot,
    read_results,
    refuse_another_setup,
    summary,
)

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh"
SUBSETS = ("helpful_base", "harmless_base", "helpful_online")
HELPFUL_SUBSETS = ("helpful_base", "helpful_online")
THREE_SEEDS = ("a_lol", "nll", "a_lol_seq", "a_lol_ref_free", "a_lol_kl", "wbc", "dpo", "kto")
"""A-LoL and NLL first: the partial results after each objective answer the main question early."""
ONE_SEED = ("r_gold", "r_lol", "pro")
ONLINE = ("grpo", "rloo")
"""Online baselines on the first seed, at about the wall time of one A-LoL run."""


@dataclass(frozen=True)
class PreferenceFit:
    """A Bradley–Terry model of human choices (a judge, or the training reward's harmlessness
    term): the file of its pairs (a name of `split_data`'s files, and of the folder it is
    fitted in) and the subsets they come from."""

    data: str
    subsets: tuple[str, ...]


LEARNED_JUDGES = {
    "helpfulness": PreferenceFit("judge_helpfulness", HELPFUL_SUBSETS),
    "harmlessness": PreferenceFit("judge_harmlessness_heldout", ("harmless_base",)),
}
"""Harmlessness learns from the half of harmless-base's prompts that the harmlessness term of
the training reward does not."""
HARMLESS_TERM_FIT = PreferenceFit("harmless_term", ("harmless_base",))
"""The training reward's harmlessness term, on the other half (`harmless_halves`)."""
REQUEST_GATE = "request_gate"
"""A classifier of the prompt (red-team request or not) that can gate the harmlessness term:
the name of its data file (`split_data`) and of the folder it is fitted in."""
HARMLESS_TERM = 0.0
"""Weight of the harmlessness term in the training reward, decided on the validation prompts of
seeds 0 and 1 (`bench.hh_tries`, results hh_tries_dropout_off_s*): at weight 1 the term makes
the sum pay every stock evasion above π_ref's answers (the value stage's check); gated to
red-team requests it cost seed 1 twice the relevance the reward model alone did (−0.197
against −0.103), and the reward model alone gained on seed 0 (relevance +0.073, helpfulness
+0.048)."""
HARMLESS_HALVES_SEED = 1
"""Halves harmless-base's training prompts apart from the benchmark's split (seed 0)."""


RECIPE = Path(__file__).resolve().parents[1] / "examples" / "hh_smollm2.yaml"
"""The training recipe (lengths, steps, learning rate, LoRA, validation), a YAML of its own."""
QUICK_RECIPE = dict(sft_max_steps=2, max_steps=4, batch_size=2, eval_steps=2, save_steps=2)


@dataclass(frozen=True)
class Sizes:
    """How much of the data one seed uses, and the judges' and online methods' budgets."""

    test_prompts: int = 150
    val_prompts: int = 200
    train_prompts: int = 1200
    """Prompts the policy trains on (the reward model and the judges see the whole train split)."""
    online_share: float = 0.5
    """Share of the policy's training prompts taken from helpful-online."""
    judge_epochs: int = 2
    online_steps: int = 25
    num_generations: int = 4


FULL = Sizes()
QUICK = Sizes(
    test_prompts=8, val_prompts=12, train_prompts=24, judge_epochs=1, online_steps=2,
    num_generations=2,
)  # fmt: skip


def subset_of(record) -> str:
    """Records carry their subset in their id, as `split_data` writes them."""
    return record.id.rsplit("-", 1)[0]


def split_data(out: Path, sizes: Sizes, quick: bool) -> dict[str, Path]:
    """train_all (reward model, judges), train (policy), val and test files, split by prompt
    (seed 0, `alol.data.splits`); each record's id names its subset, and so does its group."""
    dev = {prompt_key(r) for r in load_records(HH / "sampled_dev.json").records}
    records = []
    for subset in SUBSETS:
        for i, record in enumerate(load_records(HH / f"{subset}.json").records):
            # A few published candidates are empty; the split files hold answers to learn from.
            if prompt_key(record) not in dev and all(r.strip() for r in record.responses):
                records.append(replace(record, id=f"{subset}-{i}", group=subset))
    groups = shuffled_prompt_groups([prompt_key(r) for r in records], seed=0)
    test_end = sizes.test_prompts
    val_end = test_end + sizes.val_prompts
    test, val, train_all = (
        [records[i] for group in part for i in group]
        for part in (groups[:test_end], groups[test_end:val_end], groups[val_end:])
    )
    if quick:
        train_all = train_all[: 4 * sizes.train_prompts]
    online = [r for r in train_all if subset_of(r) == "helpful_online"]
    base = [r for r in train_all if subset_of(r) != "helpful_online"]
    n_online = min(len(online), round(sizes.online_share * sizes.train_prompts))
    train = online[:n_online] + base[: sizes.train_prompts - n_online]
    random.Random(0).shuffle(train)
    files = {
        "train_all": train_all,
        "train": train,
        "val": val,
        "test": [PromptRecord(r.prompt, r.id, group=r.group) for r in test],
        "test_scored": test,
        LEARNED_JUDGES["helpfulness"].data: human_choices(
            r for r in train_all if subset_of(r) in LEARNED_JUDGES["helpfulness"].subsets
        ),
        **harmless_halves(
            human_choices(r for r in train_all if subset_of(r) in HARMLESS_TERM_FIT.subsets)
        ),
        REQUEST_GATE: request_kinds(train_all),
    }
    paths = {}
    for name, chunk in files.items():
        paths[name] = out / "data" / f"{name}.jsonl"
        if not paths[name].exists():
            save_records(chunk, paths[name])
    return paths


def trained_records(cfg: PipelineConfig) -> list:
    """The records the stages trained on and computed advantages for, in their order: with
    `cut_responses: drop`, those without an answer cut at max_response_length (counted with the
    base model's tokenizer, which π_ref's SFT keeps)."""
    splits = without_cut_responses(cfg, load_splits(cfg), cfg.model)
    return pointwise_records(cfg, splits.train)


def human_choices(records) -> list[PreferenceRecord]:
    """HH's pairs as the human chose: the first candidate (`sft_index` 0) over the second."""
    return [PreferenceRecord(r.prompt, r.responses[0], r.responses[1], r.id) for r in records]


def request_kinds(records) -> list[RewardRecord]:
    """Each training prompt labelled by its subset: 1 for harmless-base's red-team requests, 0
    for the helpful subsets' questions (the first candidate rides along; the gate reads the
    prompt alone)."""
    return [
        RewardRecord(
            r.prompt, r.responses[0], float(subset_of(r) in HARMLESS_TERM_FIT.subsets), r.id
        )
        for r in records
    ]


def harmless_halves(pairs: list[PreferenceRecord]) -> dict[str, list[PreferenceRecord]]:
    """Harmless-base's training pairs halved by prompt: the harmlessness term of the training
    reward learns from one half, the harmlessness judge from the other, so that judge stays one
    no policy was trained against."""
    groups = shuffled_prompt_groups([prompt_key(r) for r in pairs], seed=HARMLESS_HALVES_SEED)
    middle = len(groups) // 2
    halves = {
        HARMLESS_TERM_FIT.data: groups[:middle],
        LEARNED_JUDGES["harmlessness"].data: groups[middle:],
    }
    return {
        name: [pairs[i] for i in sorted(i for g in part for i in g)]
        for name, part in halves.items()
    }


def base_config(out: Path, model: Path, paths: dict[str, Path], quick: bool) -> PipelineConfig:
    """The recipe of `RECIPE` (cut short with `quick`) on this benchmark's data and model."""
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    return PipelineConfig(
        **{**recipe, **(QUICK_RECIPE if quick else {})},
        model=str(model),
        train_data=str(paths["train"]),
        val_data=str(paths["val"]),
        test_data=str(paths["test"]),
        run_dir=str(out / "rm"),
        objectives=[],
    )


def fit_reward(cfg: PipelineConfig, paths: dict[str, Path]) -> dict:
    """The reward model on the whole train split; its metrics, and its agreement with the
    stored scores and with the human choices on the test split's pairs."""
    model = run_reward_model(replace(cfg, train_data=str(paths["train_all"])))
    test = load_records(paths["test_scored"]).records
    outputs = pair_scores(
        cfg, {"type": "classifier", "path": str(model), "activation": "none"}, test
    )
    stored = [r.reward_logits for r in test]
    agree = [
        (a > b) == (s[0] > s[1]) for (a, b), s in zip(outputs, stored, strict=True) if s[0] != s[1]
    ]
    return {
        "heldout": fitted_metrics(model),
        "test_pairwise_accuracy_vs_stored": statistics.fmean(agree),
        "test_prefers_human_choice": statistics.fmean(a > b for a, b in outputs),
        "test_pairs": len(test),
    }


def fit_judges(cfg: PipelineConfig, out: Path, paths: dict[str, Path], sizes: Sizes) -> dict:
    """Each learned judge, Bradley–Terry on the human choices of its subsets' training pairs;
    its held-out accuracy and its accuracy on the test split's pairs of those subsets."""
    report = {}
    for name, judge in LEARNED_JUDGES.items():
        model, fitted = fit_on_human_choices(cfg, out, paths, sizes, judge)
        report[name] = {"path": str(model), "subsets": list(judge.subsets), **fitted}
    return report


def judge_models(cfg: PipelineConfig, out: Path, paths: dict[str, Path], sizes: Sizes) -> dict:
    """Each learned judge's model (fitted on first use, read back after), for the scripts that
    score with the judges but do not report their accuracy, which takes a pass over the test pairs."""
    return {
        name: fit_preferences(cfg, out / judge.data, paths[judge.data], sizes)
        for name, judge in LEARNED_JUDGES.items()
    }


def fit_harmless_term(cfg: PipelineConfig, out: Path, paths: dict[str, Path], sizes: Sizes) -> dict:
    """The harmlessness term, Bradley–Terry on its half of harmless-base's training pairs at a
    judge's budget; its held-out metrics and its accuracy on the test split's harmless-base
    pairs (reported beside the reward model's: not a path, which a part's folder changes)."""
    _, fitted = fit_on_human_choices(cfg, out, paths, sizes, HARMLESS_TERM_FIT)
    return {"weight": HARMLESS_TERM, **fitted}


def fit_request_gate(cfg: PipelineConfig, out: Path, paths: dict[str, Path], sizes: Sizes) -> Path:
    """The red-team-request classifier of the prompt alone, on the whole train split's prompts
    at a judge's budget (`request_kinds`)."""
    return run_reward_model(
        replace(
            cfg,
            run_dir=str(out / REQUEST_GATE),
            train_data=str(paths[REQUEST_GATE]),
            reward_model_targets="labels",
            reward_model_inputs="prompt",
            reward_model_epochs=sizes.judge_epochs,
            reward_model_off_prompt_weight=0.0,
        )
    )


def fit_on_human_choices(
    cfg: PipelineConfig, out: Path, paths: dict[str, Path], sizes: Sizes, fit: PreferenceFit
) -> tuple[Path, dict]:
    """`fit`'s model, with how many pairs it learned from, its held-out metrics and how often
    it prefers the human's choice on the test split's pairs of its subsets."""
    model = fit_preferences(cfg, out / fit.data, paths[fit.data], sizes)
    test = [r for r in load_records(paths["test_scored"]).records if subset_of(r) in fit.subsets]
    return model, {
        "pairs": len(load_records(paths[fit.data]).records),
        "heldout": fitted_metrics(model),
        "test_prefers_human_choice": prefers_human_choice(cfg, model, test),
        "test_pairs": len(test),
    }


def fit_preferences(cfg: PipelineConfig, run_dir: Path, data: Path, sizes: Sizes) -> Path:
    """A Bradley–Terry model of the human choices in `data`, at a judge's budget. It learns
    from those choices alone, whatever loss the recipe fits its reward model with, so that the
    judges stay the same models when the reward's recipe changes."""
    return run_reward_model(
        replace(
            cfg,
            run_dir=str(run_dir),
            train_data=str(data),
            reward_model_targets="preferences",
            reward_model_epochs=sizes.judge_epochs,
            reward_model_off_prompt_weight=0.0,
        )
    )


def prefers_human_choice(cfg: PipelineConfig, model: Path, records: list) -> float:
    """How often a preference model scores the human's choice above the other candidate."""
    outputs = pair_scores(cfg, {"type": "classifier", "path": str(model)}, records)
    return statistics.fmean(a > b for a, b in outputs)


def pair_scores(cfg: PipelineConfig, spec: dict, records: list) -> list[tuple[float, float]]:
    """A reward's scores of each record's two candidates, prompts rendered as the policy sees them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    prompts = [render_prompt(r.prompt, tokenizer) for r in records for _ in r.responses]
    responses = [response for r in records for response in r.responses]
    totals = [s["total"] for s in score(load_reward(spec), prompts, responses, show_progress=False)]
    return [(totals[2 * i], totals[2 * i + 1]) for i in range(len(records))]


def fitted_metrics(model: Path) -> dict:
    """A fitted reward model's held-out single figures (its metrics file less the per-example
    lists)."""
    metrics = json.loads((model.parent / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}


def judge_specs(models: dict) -> list:
    """The evaluation's judges: the learned ones (name → model), relevance to the user's question
    (not to the rendered chat, whose system prompt is the same for every answer), safety."""
    return [
        *(classifier_spec(model, name) for name, model in models.items()),
        {"type": "relevance", "last_user_turn": True},
        "safety",
    ]


def fitted_judge_specs(judges: dict) -> list:
    """`judge_specs` of `fit_judges`'s report (name → its model's path and accuracies)."""
    return judge_specs({name: judge["path"] for name, judge in judges.items()})


def classifier_spec(model: Path | str, name: str) -> dict:
    """The reward spec of a fitted model's raw score, logged under `name`: the training reward
    (`reward`), its terms, and the learned judges."""
    return {"type": "classifier", "path": str(model), "name": name}


def training_reward(
    model: Path, term: Path, weight: float = HARMLESS_TERM, gate: Path | None = None
) -> dict:
    """The training reward's spec: the fitted reward model plus `weight` × the harmlessness
    term (a probability, as the fitted reward is), each in the logs as its own component. With
    a `gate`, the term counts in proportion to the gate's probability that the prompt is a
    red-team request (logged as `red_team_request`, at weight 0)."""
    if not weight:
        return classifier_spec(model, "reward")
    harmless = classifier_spec(term, "harmless_term")
    if gate is not None:
        red_team = classifier_spec(gate, "red_team_request")
        harmless = {"type": "gated", "term": harmless, "gate": red_team, "name": "gated_harmless"}
    return {
        "type": "sum",
        "components": [
            {"spec": classifier_spec(model, "reward"), "weight": 1.0, "name": "reward"},
            {"spec": harmless, "weight": weight},
        ],
    }


def fitted_model(run_dir: Path) -> Path:
    """Where `alol reward-model` run in `run_dir` keeps its model."""
    return run_dir / "reward_model" / "model"


def seed_config(
    cfg: PipelineConfig, seed: int, objectives: tuple[str, ...], out: Path, judges: list
) -> PipelineConfig:
    """One seed's stages in `out/seed<seed>`, scored by the training reward and judged."""
    return replace(
        cfg,
        run_dir=str(out / f"seed{seed}"),
        seed=seed,
        reward=training_reward(
            fitted_model(Path(cfg.run_dir)), fitted_model(out / HARMLESS_TERM_FIT.data)
        ),
        reward_model=None,
        objectives=list(objectives),
        judges=judges,
    )


def rows_of(seed: int) -> tuple[str, ...]:
    """The objectives of a seed's rows: every one on the first seed, THREE_SEEDS on the others."""
    return THREE_SEEDS + (ONE_SEED + ONLINE if seed == 0 else ())


def prepare_seed(seed_cfg: PipelineConfig) -> None:
    """π_ref, V(x) and the advantages of one seed, each timed."""
    run_dir = Path(seed_cfg.run_dir)
    for name, stage in (("sft", run_sft), ("value", run_value), ("advantage", run_advantage)):
        timed(run_dir / "bench_times.json", name, run_dir / name, lambda s=stage: s(seed_cfg))


def run_seed(seed_cfg: PipelineConfig, sizes: Sizes, objectives: list[str]) -> None:
    """Train `objectives` on one seed (its π_ref, V and advantages first), evaluating every
    finished model of the seed after each, so the rows appear while the rest still train."""
    run_dir = Path(seed_cfg.run_dir)
    times = run_dir / "bench_times.json"
    prepare_seed(seed_cfg)
    online_cfg = replace(
        seed_cfg, max_steps=sizes.online_steps, num_generations=sizes.num_generations
    )
    for objective in objectives:
        folder = run_dir / "train" / objective
        if objective in ONLINE:
            timed(times, objective, folder, lambda o=objective: run_online(online_cfg, o))
        else:
            timed(times, objective, folder, lambda o=objective: run_train(seed_cfg, o))
        evaluate_finished(seed_cfg)


def finished(seed_cfg: PipelineConfig) -> PipelineConfig:
    """The seed's config restricted to the objectives whose model is trained."""
    run_dir = Path(seed_cfg.run_dir)
    done = [o for o in seed_cfg.objectives if (run_dir / "train" / o / "final").exists()]
    return replace(seed_cfg, objectives=done)


def evaluate_finished(seed_cfg: PipelineConfig) -> dict:
    """Evaluate (each model's evaluation is kept, so only new ones cost anything) and measure
    every finished model of the seed: its rows, times and online costs."""
    done = finished(seed_cfg)
    run_eval(done)
    release_memory()
    run_dir = Path(done.run_dir)
    rows = measure_rows(done)
    for method in set(done.objectives) & set(ONLINE):
        cost = json.loads((run_dir / "train" / method / "cost.json").read_text())
        rows[method].update(
            reward_calls=cost["reward_calls"], generated_tokens=cost["generated_tokens"]
        )
    times = run_dir / "bench_times.json"
    commits = run_dir / "bench_commits.json"
    trained_at = json.loads(commits.read_text()) if commits.exists() else {}
    for name, row in rows.items():
        row["commit"] = trained_at.get("sft" if name == "reference" else name)
    audit = json.loads((run_dir / "eval" / "audit.json").read_text())
    return {
        "times": json.loads(times.read_text()) if times.exists() else {},
        "rows": rows,
        "judge_warnings": audit.get("judge_warnings", []),
        "reward_flags": audit.get("reward_flags", []),
    }


def timed(times_file: Path, name: str, folder: Path, stage) -> None:
    """Run a stage; when it did work (it was not up to date), its wall time is kept in
    `times_file` and the commit that ran it in `bench_commits.json` beside it, so a resumed
    benchmark reports the run that did the work, not the skip's, and a stage trained again on
    changed inputs replaces the old figures. A stage that picked up the checkpoint of a stopped
    run of the same inputs is kept as None, not timed: only its last part ran here."""
    before = _stage_state(folder)
    resumed = newest_checkpoint(folder / "checkpoints") is not None
    started = time.perf_counter()
    stage()
    release_memory()
    after = _stage_state(folder)
    if before == after:
        return
    same_inputs = before.get("fingerprint") == after.get("fingerprint")
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    times[name] = None if resumed and same_inputs else time.perf_counter() - started
    write_json(times_file, times)
    commits_file = times_file.with_name("bench_commits.json")
    commits = json.loads(commits_file.read_text()) if commits_file.exists() else {}
    write_json(commits_file, {**commits, name: commit()})


def _stage_state(folder: Path) -> dict:
    """A stage's fingerprint and status from its stage.json (empty before it first ran)."""
    marker = folder / "stage.json"
    state = json.loads(marker.read_text()) if marker.exists() else {}
    return {key: state.get(key) for key in ("fingerprint", "status")}


def measure_rows(cfg: PipelineConfig) -> dict[str, dict]:
    """π_ref's and each objective's test measures, from their evaluation reports and the
    seed's audit."""
    run_dir = Path(cfg.run_dir)
    audit = json.loads((run_dir / "eval" / "audit.json").read_text())
    rows = {}
    for name in ["reference", *cfg.objectives]:
        report = read_report(run_dir / "eval" / name)
        stage = (
            json.loads((run_dir / "train" / name / "stage.json").read_text())
            if name != "reference"
            else {}
        )
        rows[name] = {
            "reward": report.reward_mean["total"],
            **report.judge_mean,
            "distinct_1": report.distinct_1,
            "distinct_2": report.distinct_2,
            "length_words": report.mean_length_words,
            "win_rate": report.win_rate,
            **{f"{j}_win_rate": v for j, v in report.judge_win_rate.items()},
            "template_share": report.template_share,
            "empty_share": report.empty_share,
            "cut_off_share": report.cut_off_share,
            "log_ratio": report.log_ratio,
            "flag": audit["models"][name]["flag"],
            "kept_step": stage.get("selection", {}).get("step"),
            "validation_reward": _validation_reward(stage.get("selection", {})),
            "kept_degenerate": stage.get("selection", {}).get("degenerate"),
            "start_validation_reward": _validation_reward(
                stage.get("selection", {}), "start_score"
            ),
            "steps": stage.get("steps"),
        }
    return rows


def _validation_reward(selection: dict, key: str = "score") -> float | None:
    """The kept checkpoint's reward on the validation prompts (or, with "start_score", π_ref's
    before the first step), when the reward selected it."""
    return selection.get(key) if selection.get("select_by") == "reward" else None


def instruct_row(cfg: PipelineConfig, out: Path, judges: list) -> dict:
    """The instruct model as it ships, with no SFT: evaluated like π_ref."""
    seed_cfg = seed_config(cfg, 0, (), out, judges)
    base_cfg = replace(seed_cfg, run_dir=str(out / "instruct"), reference=cfg.model)
    run_eval(base_cfg)
    return measure_rows(base_cfg)["reference"]


def data_row(seed_cfg: PipelineConfig, test_scored: Path) -> dict:
    """The data's own human-chosen answers to the test prompts (`human_choices`), scored by the
    training reward and every judge: where an objective that imitated the data would land, so a
    target above it asks for more than the data holds. Reward and judges are every seed's;
    `seed_cfg` is one whose π_ref exists (the judges' inputs are read from its run folder), the
    first seed run when a table starts from seed 2."""
    records = load_records(test_scored).records
    tokenizer = load_tokenizer(seed_cfg.model)
    prompts = [render(seed_cfg, r.prompt, tokenizer) for r in records]
    answers = [r.responses[0] for r in records]
    rewards = {"reward": load_reward(seed_cfg.reward)}
    rewards.update(
        (judge.name, judge.load()) for judge in configured_judges(stage_inputs(seed_cfg))
    )
    row = {
        name: statistics.fmean(s["total"] for s in score(reward, prompts, answers))
        for name, reward in rewards.items()
    }
    return {
        **row,
        "distinct_2": distinct_n(answers, 2),
        "length_words": statistics.fmean(len(a.split()) for a in answers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--objectives",
        nargs="+",
        help="train only these (default: the seed's rows); the results hold every finished one",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--prepare", action="store_true", help="only the reward model, judges, π_ref, V, A"
    )
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--results",
        help="name of the results files in bench/results (default hh_smollm2, or "
        "hh_smollm2_quick with --quick): a run folder with another reward model fit writes "
        "a table of its own",
    )
    parser.add_argument(
        "--merge-with",
        metavar="JSON",
        help="keep this earlier results file's models that this run's folder lacks (a part run "
        "elsewhere); refused, as soon as the reward model and judges are fitted, unless it "
        "ran the same commit, sizes, reward model and judges",
    )
    args = parser.parse_args()
    configure_console()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    out = Path(args.out) / ("quick" if args.quick else "judged")
    model = convert_smollm2(Path(args.out) / "smollm2")
    paths = split_data(out, sizes, args.quick)
    cfg = base_config(out, model, paths, args.quick)
    rm = {**fit_reward(cfg, paths), "harmless_term": fit_harmless_term(cfg, out, paths, sizes)}
    judges = fit_judges(cfg, out, paths, sizes)
    setup = {"commit": commit(), "sizes": asdict(sizes), "reward_model": rm, "judges": judges}
    previous = Path(args.merge_with) if args.merge_with else None
    earlier = read_results(previous) if previous else None
    if earlier:
        refuse_another_setup(earlier, setup, previous)
    specs = fitted_judge_specs(judges)
    for seed in args.seeds:
        if args.prepare:
            prepare_seed(seed_config(cfg, seed, rows_of(seed), out, specs))
            continue
        seed_cfg = seed_config(cfg, seed, rows_of(seed), out, specs)
        run_seed(seed_cfg, sizes, args.objectives or list(rows_of(seed)))
    if args.prepare:
        return 0
    evaluated = [seed for seed in (0, 1, 2) if (out / f"seed{seed}" / "eval").exists()]
    seeds = {
        seed: evaluate_finished(seed_config(cfg, seed, rows_of(seed), out, specs))
        for seed in evaluated
    }
    data = data_row(seed_config(cfg, evaluated[0], (), out, specs), paths["test_scored"])
    result = {
        **setup,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} torch threads, "
        f"{training_precision(cfg.bf16)}",
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "alol": __version__,
            "python": sys.version.split()[0],
        },
        "hours": (time.perf_counter() - started) / 3600,
        "instruct": instruct_row(cfg, out, specs),
        "data": data,
        **summary(seeds, data),
    }
    if earlier:
        result = merge_results(earlier, result, previous)
    name = args.results or ("hh_smollm2_quick" if args.quick else "hh_smollm2")
    write_results(name, result, markdown(result))
    plot(result, RESULTS / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
