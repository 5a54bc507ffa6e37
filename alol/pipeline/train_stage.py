"""Stage 4, training: reads π_ref, the training records and, for sequence objectives that weight
or select examples by advantage, the advantage table (for preference objectives, π_ref's pair
log-probs), and writes `run_dir/train/<objective>/`: checkpoints, metrics.jsonl,
train_curves.png, stage.json and the `final/` model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alol.choices import ONLINE_METHODS
from alol.config import PipelineConfig
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.fingerprint import fingerprint_of
from alol.method.leftover import budget_steps
from alol.method.objectives import get_objective
from alol.pipeline.inputs import (
    StageInputs,
    load_tokenizer,
    load_weights_to_train,
    log_data,
    render,
    stage_inputs,
    tokenize_with,
    unique_prompts,
)
from alol.pipeline.judges import Judge, configured_judges
from alol.pipeline.settings import generation_config, lora_kwargs, quantization, tokenization
from alol.pipeline.stage import finish_stage, running_stage, stage_done
from alol.pipeline.trainer_setup import (
    build_trainer,
    save_policy,
    train_or_resume,
    training_fingerprint_parts,
)
from alol.pipeline.training_sets import training_set
from alol.reports.metrics import counted
from alol.reports.plots import plot_training_curves
from alol.train.selection import judges_selected_by

logger = logging.getLogger(__name__)


def validation_judges(inputs: StageInputs) -> list[Judge]:
    """The judges validation scores: every one with `validation_judges`, else those
    `select_by` names (each must be a judge). They load only when training starts."""
    cfg = inputs.cfg
    named = judges_selected_by(cfg.select_by)
    if not named and not cfg.validation_judges:
        return []
    judges = configured_judges(inputs)
    unknown = [name for name in named if name not in {judge.name for judge in judges}]
    if unknown:
        raise AlolError(
            f"select_by {cfg.select_by!r} names {', '.join(map(repr, unknown))}, which is not a "
            f"judge; the judges are: {', '.join(j.name for j in judges) or 'none'} (set judges:)"
        )
    if cfg.validation_judges:
        return judges
    return [judge for judge in judges if judge.name in named]


def validation_prompts(inputs: StageInputs) -> tuple[Any, list[str]]:
    """The validation prompts as π_ref renders them (the fingerprint holds them) and the
    tokenizer that rendered them; none without `eval_steps` and a reward to score them."""
    if not inputs.cfg.eval_steps or inputs.reward_spec is None:
        return None, []
    tokenizer = load_tokenizer(inputs.reference)
    prompts = unique_prompts(inputs.splits.val)
    return tokenizer, [render(inputs.cfg, prompt, tokenizer) for prompt in prompts]


START_SETTINGS = (
    "seed",
    "bf16",
    "fp16",
    "compile_layers",
    "compile_mode",
    "missing_eos_penalty",
    "select_by",
    "collapse_share",
    "cut_off_share",
    "loop_share",
)
"""The settings besides the model and the validation that decide the figures of the validation
before the first step: how the policy computes, and how its answers are scored and judged."""


def start_validation_file(cfg: PipelineConfig, inputs: StageInputs, validation: dict) -> Path:
    """Where the validation before the first step is kept. At that step every objective's
    policy is π_ref, loaded and adapted the same way (LoRA's adapters start at zero), so the
    key holds π_ref, its loading and `validation` (prompts, decoding, reward, judges), never
    the objective: the objectives of a run decode π_ref's validation answers once."""
    key = fingerprint_of(
        "start validation",
        inputs.reference_fingerprint,
        validation,
        {name: getattr(cfg, name) for name in START_SETTINGS},
        lora_kwargs(cfg),
        quantization(cfg),
        tokenization(cfg),
    )
    return cfg.root / "train" / "start_validation" / f"{key[:16]}.json"


def kept_checkpoint(trainer) -> dict | None:
    """Which validated checkpoint the run kept, whether its answers were degenerate, and the
    selection score of π_ref's answers before the first step (what training had to beat)."""
    step = trainer.state.best_global_step
    if not step:
        return None
    return {
        "step": step,
        "select_by": trainer.args.select_by,
        "score": trainer.state.best_metric,
        "degenerate": trainer.degenerate_at(step),
        "start_score": (trainer.start_validation() or {}).get("eval_selection"),
    }


def run_train(cfg: PipelineConfig, objective_name: str) -> Path:
    """Train one objective from π_ref; returns the folder of the final model."""
    if objective_name in ONLINE_METHODS:
        raise AlolError(
            f"{objective_name} is an online method: run it with `alol online --method {objective_name}`"
        )
    objective = get_objective(objective_name)
    out = cfg.root / "train" / objective_name
    inputs = stage_inputs(cfg, decoding=bool(cfg.eval_steps))
    examples = training_set(inputs, objective)
    max_steps = cfg.max_steps
    if objective.positive_advantage_only and cfg.scale_steps_by_positive_fraction:
        max_steps = budget_steps(cfg.max_steps, examples.fraction_positive)
    tokenizer, eval_prompts = validation_prompts(inputs)
    validates = bool(eval_prompts)
    judges = validation_judges(inputs) if validates else []
    validation = (
        {
            "reward": inputs.reward_fingerprint,
            "prompts": eval_prompts,
            **generation_config(cfg).deciding_settings(),
            # named only when there are some, so runs finished before judges existed stay done
            **({"judges": [judge.fingerprint for judge in judges]} if judges else {}),
        }
        if validates
        else None
    )
    fingerprint = fingerprint_of(
        "train",
        objective_name,
        inputs.reference_fingerprint,
        examples.fingerprint,
        training_fingerprint_parts(cfg, objective_name, out, max_steps, validates),
        validation,
    )
    if stage_done(out, fingerprint):
        logger.info("train %s: up to date (%s)", objective_name, out)
        return out / "final"
    with running_stage(out, fingerprint, "train"):
        tokenizer = tokenizer or load_tokenizer(inputs.reference)
        dataset = examples.build(tokenize_with(cfg, tokenizer))
        trainer = build_trainer(
            cfg,
            objective_name,
            load_weights_to_train(cfg, inputs.reference),
            tokenizer,
            dataset,
            out,
            max_steps,
            sample_weights=None if examples.weights is None else examples.weights.tolist(),
            reward=inputs.load_reward() if validates else None,
            eval_prompts=eval_prompts or None,
            generation_config=generation_config(cfg),
            judges={judge.name: judge.reward for judge in judges},
            start_validation_file=start_validation_file(cfg, inputs, validation)
            if validates
            else None,
        )
        cuts = dataset.cut_counts()
        log_data(logger, f"train {objective_name}", inputs.splits, cuts, cfg.max_response_length)
        logger.info(
            "train %s: %s (%.0f%% of the data kept), %s",
            objective_name,
            counted(len(dataset), "example"),
            100 * (examples.fraction_positive if objective.needs_advantage else 1.0),
            counted(max_steps, "step"),
        )
        train_or_resume(trainer, out, cfg.resume)
        save_policy(trainer, out / "final", merge=False)
        on_main_process(
            lambda: plot_training_curves(out / "metrics.jsonl", out / "train_curves.png")
        )
        selection = kept_checkpoint(trainer)
        finish_stage(
            out,
            fingerprint,
            "train",
            examples=len(dataset),
            steps=max_steps,
            fraction_positive=examples.fraction_positive,
            reference=inputs.reference_fingerprint,
            data=inputs.splits.counts(),
            **({"selection": selection} if selection else {}),
            **cuts,
        )
    logger.info(
        "train %s: model saved to %s (metrics in %s, curves in train_curves.png)",
        objective_name,
        out / "final",
        out / "metrics.jsonl",
    )
    return out / "final"
