"""Stage 4, training: reads π_ref, the training records and, for sequence objectives that weight
or select examples by advantage, the stage 3 table (for preference objectives, π_ref's pair
log-probs cached in `run_dir/pairs/`), and writes `run_dir/train/<objective>/`: checkpoints,
metrics.jsonl, train_curves.png, stage.json and the `final/` model. Its Trainer plumbing
(arguments, LoRA, resuming, saving, the metrics file) also runs the sft stage.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from alol.advantage import budget_steps, compute_advantages, select_training_examples
from alol.atomic import append_jsonl, replace_directory, write_text
from alol.config import PipelineConfig
from alol.conversions import to_preference_records, to_ranked_records, to_reward_records
from alol.distributed import on_main_process
from alol.errors import AlolError
from alol.examples import ExampleDataset, PairExample, RankedExample, SequenceExample
from alol.fingerprint import cache_key, fingerprint_model, fingerprint_records
from alol.objectives import get_objective
from alol.pipeline.advantage import advantage_config, run_advantage
from alol.pipeline.inputs import (
    configured_reward,
    load_model,
    load_model_for_inference,
    load_splits,
    reference_path,
    tokenize_record,
    unique_prompts,
)
from alol.pipeline.stage import begin_stage, fingerprint_of, finish_stage, stage_done
from alol.plots import plot_training_curves
from alol.records import RewardRecord
from alol.table import AdvantageTable, load_or_compute
from alol.tokenize import render_prompt
from alol.train import AlolConfig, AlolTrainer
from alol.train.checkpoints import newest_checkpoint
from alol.train.wrapping import checkpointing_argument

logger = logging.getLogger(__name__)


def run_train(cfg: PipelineConfig, objective_name: str) -> Path:
    """Train one objective from π_ref; returns the folder of the final model."""
    objective = get_objective(objective_name)
    out = cfg.root / "train" / objective_name
    ref = reference_path(cfg)
    splits = load_splits(cfg)
    model, tokenizer = load_model(ref)
    dataset, weights, fraction, data_fp = training_set(cfg, objective, splits.train, tokenizer)
    max_steps = cfg.max_steps
    if objective.positive_advantage_only and cfg.scale_steps_by_positive_fraction:
        max_steps = budget_steps(cfg.max_steps, fraction)
    fingerprint = fingerprint_of(
        "train", objective_name, fingerprint_model(ref), data_fp, training_fields(cfg), max_steps
    )
    if stage_done(out, fingerprint):
        logger.info("train %s: up to date (%s)", objective_name, out)
        return out / "final"
    begin_stage(out, fingerprint, "train")
    reward = configured_reward(cfg)
    eval_prompts = (
        [render_prompt(p, tokenizer) for p in unique_prompts(splits.val)]
        if reward and cfg.eval_steps
        else None
    )
    args = training_args(
        cfg, objective_name, out / "checkpoints", max_steps=max_steps, with_eval=bool(eval_prompts)
    )
    trainer = AlolTrainer(
        model,
        args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        sample_weights=None if weights is None else weights.tolist(),
        reward=reward,
        eval_prompts=eval_prompts,
        generation_config=cfg.generation(),
        callbacks=[MetricsFileCallback(out / "metrics.jsonl")],
    )
    logger.info("train %s: %d examples, %d steps", objective_name, len(dataset), max_steps)
    train_or_resume(trainer, out, cfg.resume)
    save_policy(trainer, out / "final", merge=False)
    on_main_process(lambda: plot_training_curves(out / "metrics.jsonl", out / "train_curves.png"))
    finish_stage(
        out,
        fingerprint,
        "train",
        examples=len(dataset),
        steps=max_steps,
        fraction_positive=fraction,
    )
    return out / "final"


def training_set(cfg: PipelineConfig, objective, train_records: list, tokenizer):
    """(dataset, sampling weights or None, fraction positive, data fingerprint) for an objective."""
    if objective.data == "pair":
        return _pair_set(cfg, objective, train_records, tokenizer)
    if objective.data == "ranked":
        ranked = to_ranked_records(train_records)
        examples = [
            RankedExample(
                [
                    tokenize_record(tokenizer, RewardRecord(r.prompt, resp), cfg)
                    for resp in r.responses
                ],
                list(r.rewards),
                i,
            )
            for i, r in enumerate(ranked)
        ]
        return ExampleDataset(examples), None, 1.0, fingerprint_records(to_reward_records(ranked))
    records = to_reward_records(train_records)
    data_fp = fingerprint_records(records)
    if objective.name == "nll" and cfg.sampling in (None, "uniform"):
        examples = [
            SequenceExample(tokenize_record(tokenizer, r, cfg), index=i)
            for i, r in enumerate(records)
        ]
        return ExampleDataset(examples), None, 1.0, data_fp
    table = run_advantage(cfg)
    sampling = cfg.sampling or objective.default_sampling
    indices, weights = select_training_examples(table, objective.positive_advantage_only, sampling)
    examples = [
        SequenceExample(
            tokenize_record(tokenizer, records[i], cfg),
            index=int(i),
            reward=float(table.reward[i]),
            advantage=float(table.advantage[i]),
            ref_token_logps=table.token_logps(int(i)),
        )
        for i in indices
    ]
    fraction = float(np.mean(table.advantage > 0))
    return ExampleDataset(examples), weights, fraction, fingerprint_of(data_fp, table.key, sampling)


def _pair_set(cfg: PipelineConfig, objective, train_records: list, tokenizer):
    pairs = to_preference_records(train_records)
    if not pairs:
        raise AlolError(
            f"{objective.name} needs preference pairs, but the training data yields none: give "
            "{prompt, chosen, rejected} records, ranked records, or several scored responses per prompt."
        )
    ref_logps = _pair_reference_logps(cfg, pairs) if objective.needs_reference else None
    examples = []
    for i, p in enumerate(pairs):
        examples.append(
            PairExample(
                tokenize_record(tokenizer, RewardRecord(p.prompt, p.chosen), cfg),
                tokenize_record(tokenizer, RewardRecord(p.prompt, p.rejected), cfg),
                index=i,
                ref_chosen_logp=None if ref_logps is None else float(ref_logps[2 * i]),
                ref_rejected_logp=None if ref_logps is None else float(ref_logps[2 * i + 1]),
            )
        )
    flat = [RewardRecord(p.prompt, r, 0.0) for p in pairs for r in (p.chosen, p.rejected)]
    return ExampleDataset(examples), None, 1.0, fingerprint_records(flat)


def _pair_reference_logps(cfg: PipelineConfig, pairs: list) -> np.ndarray:
    """π_ref's summed log-probs of each chosen and rejected response, precomputed and cached."""
    ref = reference_path(cfg)
    flat = [RewardRecord(p.prompt, r, 0.0) for p in pairs for r in (p.chosen, p.rejected)]
    config = advantage_config(cfg)
    key = cache_key(fingerprint_model(ref), fingerprint_records(flat), None, config.key_fields())

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(ref, config.reference_dtype)
        return compute_advantages(model, tokenizer, flat, config)

    return load_or_compute(cfg.root / "pairs", key, compute).ref_logp


def training_fields(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings that change what training produces (not where logs go)."""
    names = (
        "batch_size",
        "gradient_accumulation_steps",
        "max_tokens_per_batch",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_ratio",
        "weight_decay",
        "max_grad_norm",
        "clip",
        "beta",
        "sampling",
        "bf16",
        "fp16",
        "lora",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "seed",
        "max_prompt_length",
        "max_response_length",
        "scale_steps_by_positive_fraction",
        "eval_steps",
    )
    return {name: getattr(cfg, name) for name in names}


def training_args(
    cfg: PipelineConfig, objective: str, output_dir: Path, max_steps: int, with_eval: bool = False
) -> AlolConfig:
    eval_kwargs: dict[str, Any] = {}
    if with_eval:
        eval_kwargs = dict(
            eval_strategy="steps",
            eval_steps=cfg.eval_steps,
            save_steps=cfg.eval_steps,
            metric_for_best_model="eval_reward",
            greater_is_better=True,
            load_best_model_at_end=True,
        )
    return AlolConfig(
        output_dir=str(output_dir),
        objective=objective,
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_tokens_per_batch=cfg.max_tokens_per_batch,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        clip=cfg.clip,
        beta=cfg.beta,
        sampling=cfg.sampling,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        **checkpointing_argument(cfg.gradient_checkpointing),
        max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length,
        vocab_chunk_size=cfg.vocab_chunk_size,
        compile_layers=cfg.compile_layers,
        compile_mode=cfg.compile_mode,
        pad_to_multiple_of=cfg.pad_to_multiple_of,
        logging_steps=cfg.logging_steps,
        save_steps=eval_kwargs.pop("save_steps", cfg.save_steps),
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        reward_timeout=cfg.reward_timeout,
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
        **eval_kwargs,
    )


def lora_config(cfg: PipelineConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def train_or_resume(trainer: AlolTrainer, stage_dir: Path, resume: bool) -> None:
    """Resume from the newest complete checkpoint, or (without `resume`) start the stage over.

    metrics.jsonl keeps exactly the steps the resumed run will not log again.
    """
    checkpoint = newest_checkpoint(stage_dir / "checkpoints")
    if checkpoint is not None and resume:
        logger.info("resuming from %s", checkpoint)
        step = int(checkpoint.name.rsplit("-", 1)[1])
        on_main_process(lambda: _keep_metrics_up_to(stage_dir / "metrics.jsonl", step))
        trainer.train(resume_from_checkpoint=checkpoint)
        return

    def start_over() -> None:
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
        (stage_dir / "metrics.jsonl").unlink(missing_ok=True)

    on_main_process(start_over)
    trainer.train()


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Rewrite metrics.jsonl without rows after `step` and without lines torn by a crash."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            rows.append(line + "\n")
    write_text(path, "".join(rows))


def save_policy(trainer: AlolTrainer, directory: Path, merge: bool) -> None:
    """Save the model (LoRA merged into the weights when `merge`, e.g. for π_ref) and tokenizer.

    Written beside `directory` and renamed into place, so a crash never leaves half a model.
    """
    tmp = directory.with_name(directory.name + ".tmp")
    on_main_process(lambda: shutil.rmtree(tmp, ignore_errors=True))
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge and hasattr(model, "merge_and_unload"):

        def merge_and_save() -> None:
            model.merge_and_unload().save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)

        on_main_process(merge_and_save)
    else:
        trainer.save_model(str(tmp))  # gathers FSDP/DeepSpeed shards; the main process writes
    on_main_process(lambda: replace_directory(tmp, directory))


class MetricsFileCallback(TrainerCallback):
    """Appends every log line to metrics.jsonl, the file the plots and reports read."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            append_jsonl(self.path, {"step": state.global_step, **logs})
