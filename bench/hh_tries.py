"""Recipe tries on one seed of the judged HH benchmark (the first, unless `--seed` names
another), decided on the validation prompts: each try changes the settings it names and reuses
the seed's π_ref, V(x) and advantages, so it differs from the recipe by those settings alone.
The test prompts are never looked at here.

    python -m bench.hh_tries                      # after `python -m bench.hh_smollm2 --prepare`
    python -m bench.hh_tries --tries recipe uniform
    python -m bench.hh_tries --seed 1 --tries seq_recipe seq_harmless_half --results hh_tries_s1

Each try trains its objectives in `<out>/judged/tries/<name>/` (seed 0) or
`<out>/judged/tries_seed<S>/<name>/` on hard links to the seed's stages (alol writes every
file by rename, so a stage that reran there would replace the links, never edit the seed's
files) and is evaluated, judged and audited on the validation prompts.
- A try that changes what π_ref is trained on (`max_response_length`) trains its own π_ref, V
  and advantages there and is compared with that π_ref, whose row it shows. A try of how its
  objectives draw their examples, or of their LoRA (`OBJECTIVES_ONLY`), keeps the seed's π_ref.
- A try that changes how the reward model is fitted (a setting of the reward-model stage
  alone) fits its own in `tries/<name>/rm` on the same train split (or links another try's fit
  with the same settings), refits V and the advantages under it, and reports the reward column
  in its own reward's units (the judges are the same for every try).
- A try that weighs the training reward's harmlessness term otherwise (0: none) refits V and
  the advantages under its sum.
- A try that changes how V(x) is estimated (`value_estimate`, `value_samples`) makes its own
  V and advantages on the seed's π_ref.
- A try that changes nothing evaluates the seed's own training of its objectives.

Every try is judged by the benchmark's judges, whose harmlessness judge learned from the half
of harmless-base's prompts that the harmlessness term did not. Writes
bench/results/hh_tries.{json,md}, or the files `--results` names (tries on another run folder,
whose reward model differs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from alol.config import PipelineConfig
from alol.console import configure_console
from alol.data.formats import load_records, save_records
from alol.models.memory import release_memory
from alol.pipeline import run_eval, run_reward_model, run_train
from bench.common import RESULTS, commit, training_precision, write_results
from bench.hh_smollm2 import (
    FULL,
    HARMLESS_TERM,
    HARMLESS_TERM_FIT,
    QUICK,
    base_config,
    fit_harmless_term,
    fit_judges,
    fit_request_gate,
    fitted_judge_specs,
    fitted_metrics,
    fitted_model,
    prepare_seed,
    rows_of,
    seed_config,
    split_data,
    subset_of,
    training_reward,
)
from bench.hh_tries_report import markdown


@dataclass(frozen=True)
class Try:
    """A try's objectives and what it changes from the benchmark's recipe."""

    objectives: tuple[str, ...]
    overrides: dict = field(default_factory=dict)
    """Settings it changes (`PipelineConfig` fields)."""
    harmless_term: float = HARMLESS_TERM
    """Weight of the training reward's harmlessness term (`bench.hh_smollm2`); 0: none."""
    gated: bool = False
    """Whether the harmlessness term counts only on red-team requests (`fit_request_gate`)."""


TRIES = {
    "recipe": Try(("a_lol",)),
    "seq_recipe": Try(("a_lol_seq",)),
    "uniform": Try(("a_lol",), {"sampling": "uniform"}),
    "seq_uniform": Try(("a_lol_seq",), {"sampling": "uniform"}),
    "passes": Try(("a_lol",), {"sample_in_passes": True}),
    "seq_passes": Try(("a_lol_seq",), {"sample_in_passes": True}),
    "long": Try(("a_lol_seq", "nll"), {"max_response_length": 128}),
    "seq_balanced": Try(("a_lol_seq",), {"balance_groups": True}),
    "seq_length_neutral": Try(("a_lol_seq",), {"length_neutral_advantage": True}),
    "seq_off_prompt_rm": Try(
        ("a_lol_seq",), {"reward_model_off_prompt_weight": 1.0}, harmless_term=0.0
    ),
    "seq_off_prompt_rm_harmless": Try(
        ("a_lol_seq",), {"reward_model_off_prompt_weight": 1.0}, harmless_term=1.0
    ),
    "seq_harmless_half": Try(("a_lol_seq",), harmless_term=0.5),
    "seq_harmless_gated": Try(("a_lol_seq",), harmless_term=1.0, gated=True),
    "seq_harmless_gated_balanced": Try(
        ("a_lol_seq",), {"balance_groups": True}, harmless_term=1.0, gated=True
    ),
    "seq_per_prompt_value": Try(
        ("a_lol_seq",), {"value_estimate": "per_prompt"}, harmless_term=1.0, gated=True
    ),
    "seq_per_prompt_value_4": Try(
        ("a_lol_seq",),
        {"value_estimate": "per_prompt", "value_samples": 4},
        harmless_term=1.0,
        gated=True,
    ),
    "seq_value_samples_4": Try(("a_lol_seq",), {"value_samples": 4}),
    "seq_per_prompt_value_rm": Try(("a_lol_seq",), {"value_estimate": "per_prompt"}),
    "seq_lora_r64": Try(("a_lol_seq",), {"lora_r": 64, "lora_alpha": 128}),
    "seq_lora_authors": Try(("a_lol_seq",), {"lora_r": 64, "lora_alpha": 16}),
    "nll_recipe": Try(("nll",)),
    "lora_r64": Try(("nll", "a_lol"), {"lora_r": 64, "lora_alpha": 128}),
}
"""Name → the try. "long" trains on responses of up to 128 tokens, the paper's length, where
the recipe's 64 cut 45% of the training responses before their EOS. "seq_balanced" draws each
HH subset at its share of the training answers (∝ A within it), where ∝ A alone gives
helpful-online 83% of the gradient weight for half of the answers (`bench.hh_breakdown`).
"seq_length_neutral" takes out of A the part that answer length explains, where A correlates
with length at 0.33 and its A² weighting trains on answers of 69 tokens on average for data of
48. "seq_off_prompt_rm" fits the reward model with the off-prompt loss, where the recipe's ranks
an answer to its own prompt above another prompt's answer only 53% of the time and pays "I'm
sorry, I'm sorry." given to every prompt more than π_ref's answers (seed 1's a_lol_seq learned
to say it). "seq_off_prompt_rm_harmless" adds the harmlessness term to that reward, where the
off-prompt reward alone lowered harmlessness by 0.057 on validation: the stored reward-model
scores it learns from agree with the human's choice on harmless-base pairs only 60% of the time
and pay answering a harmful request as much as declining it. The off-prompt loss is the
recipe since; so was the term at weight 1, until refitted without dropout it paid every stock
evasion, and "seq_off_prompt_rm" (the reward model alone) became the recipe again (each row's
commit says which recipe).
"seq_harmless_half" halves the term's weight: on seed 0's validation prompts the term pays
constant answers 0.03 more than π_ref's answers and the reward model 0.03 less, so at weight 1
the sum pays "You're welcome!" given to every prompt as much as π_ref's answers, and at 0.5 it
pays every constant of the audit at least 0.015 less.
"seq_harmless_gated" multiplies the term by a classifier's probability that the prompt is a
red-team request: on seed 1 the term, fitted on red-team requests alone, paid "I'm sorry, I'm
not sure what you mean. Can you please explain what you mean?" given to every validation prompt
0.035 above π_ref's answers, and every try of how A-LoL draws learned such clarifying
questions for helpful-base's ordinary prompts too. "seq_harmless_gated_balanced" also draws
each subset at its share: under the gated reward harmless-base still holds 48% of the gradient
weight for 32% of the answers (82% of them with A > 0, V(x) missing part of the step the gate
puts between the two kinds of prompt). "seq_per_prompt_value" takes V(x) under the gated
reward from π_ref's own answer to each training prompt (`value_estimate: per_prompt`) instead
of a head fitted on 180 validation prompts, whose held-out MSE the gate's step raised from
0.020 to 0.051: A then says whether the human's answer beats π_ref's on that very prompt.
"seq_per_prompt_value_4" averages 4 sampled answers per prompt instead of the greedy one: on
the demo task greedy per-prompt values trained worse than the head and 4 samples as well as it
(`bench.value_estimates`). Under the reward model alone (the recipe since), seed 1's value head
explains 0.18 of π_ref's reward variance on its 20 held-out prompts (95% interval −0.45 to
0.63) against seed 0's 0.46: "seq_value_samples_4" fits the head on 4 sampled answers per
validation prompt (their mean is what V(x) estimates, where one greedy answer is a single noisy
draw), "seq_per_prompt_value_rm" takes V(x) from π_ref's own answer to each training prompt.
"seq_lora_r64" trains a rank-64 LoRA (α/r kept at 2) instead of rank 16: whether a policy
with more room learns each prompt's content rather than a way of answering that many prompts
share (asking back), which it could learn in fewer steps. "seq_lora_authors" is the authors'
adapter (LoL-RL's HH script: r 64, α 16), a scale α/r of 0.25 instead of 2: how much of
"seq_lora_r64"'s change is the rank and how much the larger update. "lora_r64" trains NLL and
a_lol with the same adapter, beside "nll_recipe" (the seed's own NLL): a recipe's LoRA is every
objective's, so rank 64 is for the recipe only if NLL and the other variants keep up with it."""
SHARED_STAGES = ("sft", "value", "advantage")
OBJECTIVES_ONLY = ("sampling", "sample_in_passes", "balance_groups", "lora_r", "lora_alpha")
"""Settings that a try changes for its objectives alone. alol applies them to the SFT stage
too (`sample_in_passes` draws its examples in passes, the LoRA settings shape its adapter),
which would give the try a π_ref of its own; the try keeps its seed's π_ref, V and advantages
instead."""


def reward_model_settings(overrides: dict, base_cfg: PipelineConfig) -> dict:
    """The overrides that only the reward-model stage reads and that the recipe does not set
    already (a try from before the recipe took its setting fits no reward model of its own)."""
    stages = {f.name: f.metadata["stages"] for f in fields(PipelineConfig)}
    return {
        k: v
        for k, v in overrides.items()
        if stages[k] == ("reward-model",) and getattr(base_cfg, k) != v
    }


def own_reward_model(base_cfg, out: Path, name: str, settings: dict, train_all: Path) -> Path:
    """A reward model fitted with `settings` on the whole train split, as the benchmark fits
    its own. A try whose settings another try's reward model was fitted with starts from links
    to that fit."""
    rm_dir = tries_folder(out, 0) / name / "rm"
    for other, found in TRIES.items():
        fitted = tries_folder(out, 0) / other / "rm"
        same = reward_model_settings(found.overrides, base_cfg) == settings
        if same and fitted.exists() and not rm_dir.exists():
            rm_dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(fitted), str(rm_dir)], check=True)
    rm_cfg = replace(base_cfg, run_dir=str(rm_dir), train_data=str(train_all), **settings)
    return run_reward_model(rm_cfg)


def tries_folder(out: Path, seed: int) -> Path:
    """Where one seed's tries train: each seed has its own π_ref, whose validation answers
    the tries of that seed share. Reward models are fitted on the train split, whatever the
    seed, and live in seed 0's folder."""
    return out / ("tries" if seed == 0 else f"tries_seed{seed}")


def run_try(
    cfg, base_cfg, out: Path, paths: dict, name: str, one: Try, gate: Path | None = None
) -> dict:
    """Train one try on the shared stages of `cfg`'s seed and evaluate it on the validation
    prompts; `gate`: the red-team-request classifier, for a gated try."""
    seed_dir = Path(cfg.run_dir)
    tries = tries_folder(out, cfg.seed)
    try_dir = tries / name
    missing = [stage for stage in SHARED_STAGES if not (seed_dir / stage).exists()]
    if missing:
        raise SystemExit(
            f"{seed_dir} has no {', '.join(missing)}: a try reuses its seed's stages, so run "
            f"`python -m bench.hh_smollm2 --prepare --seeds {cfg.seed}` (with the same --out) "
            "first"
        )
    rm_settings = reward_model_settings(one.overrides, base_cfg)
    model = fitted_model(Path(base_cfg.run_dir))
    fitted = {}
    if rm_settings:
        model = own_reward_model(base_cfg, out, name, rm_settings, paths["train_all"])
        fitted["reward_model"] = fitted_metrics(model)
    term = fitted_model(out / HARMLESS_TERM_FIT.data)
    if one.gated:
        if gate is None:
            raise SystemExit(f"try {name} gates the harmlessness term: fit the gate first")
        fitted["request_gate"] = fitted_metrics(gate)
    reward = training_reward(model, term, one.harmless_term, gate if one.gated else None)
    cfg = replace(cfg, reward=reward)
    # a try that changes nothing is the recipe: the seed's own trainings of its objectives
    changes = one.overrides or one.harmless_term != HARMLESS_TERM or one.gated
    parts = SHARED_STAGES + (() if changes else tuple(f"train/{o}" for o in one.objectives))
    for part in parts:
        # the seed has every shared stage, but may not have trained the try's objectives
        if (seed_dir / part).exists() and not (try_dir / part).exists():
            (try_dir / part).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(seed_dir / part), str(try_dir / part)], check=True)
    evaluated = next(tries.glob("*/eval/reference/answers.jsonl"), None)
    if evaluated is not None and not (try_dir / "eval" / "reference").exists():
        # π_ref's validation answers, decoded once for every try (kept under their fingerprint)
        (try_dir / "eval").mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(evaluated.parent), str(try_dir / "eval")], check=True)
    try_cfg = replace(
        cfg,
        run_dir=str(try_dir),
        train_data=str(grouped(Path(cfg.train_data), try_dir / "data")),
        objectives=list(one.objectives),
        **{k: v for k, v in one.overrides.items() if k not in rm_settings},
    )
    prepare_seed(shared_stages_config(try_cfg, cfg))  # up to date on the links, unless the
    # try changes π_ref's training
    for objective in one.objectives:
        run_train(try_cfg, objective)
        release_memory()
    evaluation = run_eval(replace(try_cfg, test_data=try_cfg.val_data))
    rows = {}
    for model, report in evaluation.reports.items():
        audit = evaluation.audit.models[model]
        rows[model] = {
            "reward": report.reward_mean["total"],
            # the reward model's own part: a gain made of the term or of answers that end
            # leaves it level or lower
            "reward_model_part": report.reward_mean.get("reward"),
            **report.judge_mean,
            "distinct_2": report.distinct_2,
            "template_share": report.template_share,
            "length_words": report.mean_length_words,
            "flag": audit.flag,
        }
    constants = [
        {"text": c.text, "origin": c.origin, "reward": c.reward} for c in evaluation.audit.constants
    ]
    return {
        "objectives": list(one.objectives),
        "overrides": one.overrides,
        "harmless_term": one.harmless_term,
        "recipe_harmless_term": HARMLESS_TERM,
        "gated": one.gated,
        "rows": rows,
        "constants": constants,
        **fitted,
    }


def shared_stages_config(try_cfg: PipelineConfig, seed_cfg: PipelineConfig) -> PipelineConfig:
    """The try's settings for π_ref, V and the advantages: those it changes for its objectives
    alone (`OBJECTIVES_ONLY`: how they draw their examples, their LoRA) stay the seed's."""
    return replace(try_cfg, **{name: getattr(seed_cfg, name) for name in OBJECTIVES_ONLY})


def earlier_tries(results_file: Path, seed: int) -> dict:
    """The tries a results file holds already, which this run's join: refused when they ran on
    another seed's π_ref (files from before tries took a seed are seed 0's)."""
    if not results_file.exists():
        return {}
    earlier = json.loads(results_file.read_text(encoding="utf-8"))
    if earlier.get("seed", 0) != seed:
        raise SystemExit(
            f"{results_file} holds seed {earlier.get('seed', 0)}'s tries, not seed {seed}'s: "
            "name another results file with --results"
        )
    return earlier["tries"]


def grouped(train_file: Path, directory: Path) -> Path:
    """The training records, each with its subset as its group: files that `split_data` wrote
    before it wrote groups hold the subset in the id alone. Groups change no fingerprint, so
    the shared stages stay up to date on the copy."""
    records = load_records(train_file).records
    if all(record.group is not None for record in records):
        return train_file
    copy = directory / train_file.name
    if not copy.exists():
        save_records([replace(r, group=subset_of(r)) for r in records], copy)
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    parser.add_argument("--tries", nargs="+", default=list(TRIES), choices=TRIES)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="whose π_ref, V and advantages the tries reuse (each seed's tries want a results "
        "file of their own, --results)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="on `python -m bench.hh_smollm2 --quick --prepare`'s folder: the plumbing in minutes",
    )
    parser.add_argument(
        "--results",
        help="name of the results files in bench/results (default hh_tries, or hh_tries_quick): "
        "tries on another run folder (another reward model) go in a file of their own",
    )
    args = parser.parse_args()
    configure_console()
    sizes = QUICK if args.quick else FULL
    results = args.results or ("hh_tries_quick" if args.quick else "hh_tries")
    out = Path(args.out) / ("quick" if args.quick else "judged")
    paths = split_data(out, sizes, quick=args.quick)
    cfg = base_config(out, Path(args.out) / "smollm2", paths, quick=args.quick)
    judges = fit_judges(cfg, out, paths, sizes)
    term = fit_harmless_term(cfg, out, paths, sizes)
    gated = any(TRIES[name].gated for name in args.tries)
    gate = fit_request_gate(cfg, out, paths, sizes) if gated else None
    seed_cfg = seed_config(
        cfg,
        args.seed,
        rows_of(args.seed),
        out,
        fitted_judge_specs(judges),
    )
    done = earlier_tries(RESULTS / f"{results}.json", args.seed)
    for name in args.tries:
        found = run_try(seed_cfg, cfg, out, paths, name, TRIES[name], gate)
        done[name] = {
            **found,
            "commit": commit(),
            "training_precision": training_precision(seed_cfg.bf16),
        }
        result = {
            "commit": commit(),
            "seed": args.seed,
            "harmless_term": term,
            "harmlessness_judge": judges["harmlessness"],
            "tries": done,
        }
        write_results(results, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
