"""The one place where `PipelineConfig` becomes the sub-configs each stage reads.

Every setting is declared once, in `PipelineConfig`; these builders hand it to the trainer
(`AlolConfig`), the precompute (`AdvantageConfig`), the value head (`ValueConfig`), decoding
(`GenerationConfig`), LoRA and the data loaders. A stage's fingerprint is built from what its
builders return (`result_settings`), so it holds exactly the settings the stage reads: a
setting that only another stage reads (`--clip` for the reference SFT) never invalidates it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from alol.config import PipelineConfig
from alol.distributed import process_state
from alol.method.objectives import get_objective
from alol.models.generate import GenerationConfig
from alol.models.precompute import AdvantageConfig
from alol.models.quantization import four_bit_settings
from alol.models.reference import ReferenceConfig
from alol.models.value_io import ValueConfig
from alol.reports.audit_thresholds import AuditThresholds
from alol.rewards.reward_model import RewardModelConfig
from alol.train.precision import bf16_is_native_on, needs_use_cpu
from alol.train.wrapping import checkpointing_argument

NOT_RESULTS = frozenset(
    {"output_dir", "disable_tqdm", "activation_checkpointing"}
    | {f.name for f in fields(PipelineConfig) if not f.metadata["affects_results"]}
)
"""Trainer settings that do not change what a stage trains (the settings declared with
`affects_results=False`, and where the builders put the run): left out of stage fingerprints."""


def result_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The settings of a builder's output that change what the stage produces."""
    return {name: value for name, value in kwargs.items() if name not in NOT_RESULTS}


def trainer_kwargs(
    cfg: PipelineConfig,
    objective_name: str,
    output_dir: Path,
    max_steps: int,
    with_eval: bool = False,
) -> dict[str, Any]:
    """`AlolConfig` keyword arguments for training `objective_name` (the sft stage: "nll").

    Only the objective's own hyperparameters (`Objective.hyperparameters`) are passed, so a
    setting the objective never reads stays out of its stage's fingerprint.
    """
    objective = get_objective(objective_name)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        objective=objective_name,
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_tokens_per_batch=cfg.max_tokens_per_batch,
        # named only when on, so runs finished before the setting existed stay up to date
        **({"sample_in_passes": True} if cfg.sample_in_passes else {}),
        # named only when off, so runs finished before it existed stay up to date: they differ
        # only for a model with dropout (GPT-2), which none of alol's recipes trains
        **({} if cfg.disable_dropout else {"disable_dropout": False}),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        **checkpointing_argument(cfg.gradient_checkpointing),
        vocab_chunk_size=cfg.vocab_chunk_size,
        compile_layers=cfg.compile_layers,
        compile_mode=cfg.compile_mode,
        pad_to_multiple_of=cfg.pad_to_multiple_of,
        packing=cfg.packing,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
        **{name: getattr(cfg, name) for name in objective.hyperparameters},
    )
    if with_eval:
        kwargs.update(
            eval_strategy="steps",
            eval_steps=cfg.eval_steps,
            save_steps=cfg.eval_steps,
            metric_for_best_model="eval_selection",
            greater_is_better=True,
            load_best_model_at_end=True,
            reward_timeout=cfg.reward_timeout,
            # named only when on, so runs finished before the setting existed stay up to date
            **({"missing_eos_penalty": cfg.missing_eos_penalty} if cfg.missing_eos_penalty else {}),
            select_by=cfg.select_by,
            collapse_share=cfg.collapse_share,
            cut_off_share=cfg.cut_off_share,
            loop_share=cfg.loop_share,
        )
    return kwargs


def lora_kwargs(cfg: PipelineConfig) -> dict[str, Any] | None:
    """peft `LoraConfig` keyword arguments for the policy, or None to train every weight."""
    if not cfg.lora:
        return None
    return {**_adapter_shape(cfg), "task_type": "CAUSAL_LM"}


def _adapter_shape(cfg: PipelineConfig) -> dict[str, Any]:
    return dict(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_modules(cfg.lora_target_modules),
    )


def target_modules(setting: str) -> str | list[str]:
    """peft's target modules: "all-linear", a regex, or module names separated by commas."""
    if "," in setting:
        return [name.strip() for name in setting.split(",") if name.strip()]
    return setting


def lora_config(cfg: PipelineConfig):
    kwargs = lora_kwargs(cfg)
    if kwargs is None:
        return None
    from peft import LoraConfig

    return LoraConfig(**kwargs)


def compute_dtype(bf16: bool, fp16: bool) -> str:
    """The dtype a trained model computes in: its mixed precision, else float32."""
    return "bfloat16" if bf16 else "float16" if fp16 else "float32"


def quantization(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The 4-bit settings of the trained model's frozen base as configured (None: full
    precision); where bf16 is not native the base computes in float32
    (`load_weights_to_train`)."""
    return four_bit_settings(compute_dtype(cfg.bf16, cfg.fp16)) if cfg.load_in_4bit else None


def reference_dtype(bf16: bool, device: Any) -> str:
    """The dtype π_ref's weights run in for value decoding, value features, the precompute and
    evaluation's decoding.

    bf16 when the policy trains in bf16, on a GPU or on a CPU with native bf16 (AVX-512 BF16 or
    AMX: 2.3× the float32 forward of SmolLM2-135M on 2 such cores): half the memory and
    bandwidth, and the importance weights and KL terms of a bf16-trained policy then compare it
    with the reference's bf16 log-probs (log-softmax stays float32). float32 on other CPUs,
    which emulate bf16 slowly.
    """
    return "bfloat16" if bf16 and bf16_is_native_on(device) else "float32"


def configured_reference_dtype(cfg: PipelineConfig) -> str:
    return reference_dtype(cfg.bf16, process_state().device)


def advantage_config(cfg: PipelineConfig) -> AdvantageConfig:
    return AdvantageConfig(
        batch_size=cfg.precompute_batch_size,
        max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length,
        vocab_chunk_size=cfg.vocab_chunk_size,
        reward_timeout=cfg.reward_timeout,
        string_prompts=cfg.string_prompts,
        reference_dtype=configured_reference_dtype(cfg),
        load_in_4bit=cfg.load_in_4bit,
        share_prompts=cfg.share_prompts,
        compile_layers=cfg.compile_layers,
        compile_mode=cfg.compile_mode,
    )


def answers_reference_config(cfg: PipelineConfig) -> ReferenceConfig:
    """π_ref's pass over decoded answers (the evaluation's drift from π_ref): the precompute's
    batch size, vocabulary chunks and prompt sharing."""
    return ReferenceConfig(
        batch_size=cfg.precompute_batch_size,
        vocab_chunk_size=cfg.vocab_chunk_size,
        share_prompts=cfg.share_prompts,
        show_progress=False,
    )


def value_config(cfg: PipelineConfig) -> ValueConfig:
    return ValueConfig(
        epochs=cfg.value_epochs,
        learning_rate=cfg.value_learning_rate,
        max_value=cfg.value_max,
        seed=cfg.seed,
        max_prompt_length=cfg.max_prompt_length,
    )


def generation_config(
    cfg: PipelineConfig, *, do_sample: bool | None = None, num_return_sequences: int = 1
) -> GenerationConfig:
    """Decoding for evaluation and validation (`cfg.do_sample`), or for the value samples."""
    return GenerationConfig(
        max_new_tokens=cfg.new_token_budget,
        do_sample=cfg.do_sample if do_sample is None else do_sample,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        num_return_sequences=num_return_sequences,
        batch_size=cfg.generation_batch_size,
        seed=cfg.seed,
        max_prompt_length=cfg.max_prompt_length,
    )


def value_generation_config(cfg: PipelineConfig) -> GenerationConfig:
    """π_ref's samples for fitting V: one greedy response per prompt (the paper), or k sampled."""
    k = cfg.value_samples
    return generation_config(cfg, do_sample=k > 1, num_return_sequences=k)


def tokenization(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings that decide the token ids of a record: part of every stage that trains on
    or scores tokenized records."""
    return dict(
        max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length,
        string_prompts=cfg.string_prompts,
    )


def reward_model_config(cfg: PipelineConfig) -> RewardModelConfig:
    return RewardModelConfig(
        backbone=cfg.reward_model,
        targets=cfg.reward_model_targets,
        inputs=cfg.reward_model_inputs,
        epochs=cfg.reward_model_epochs,
        learning_rate=cfg.reward_model_learning_rate,
        batch_size=cfg.reward_model_batch_size,
        max_length=cfg.reward_model_max_length,
        seed=cfg.seed,
        bf16=cfg.bf16,
        adapter=_adapter_shape(cfg) if cfg.reward_model_lora else None,
        off_prompt_weight=cfg.reward_model_off_prompt_weight,
    )


def online_kwargs(cfg: PipelineConfig, method: str, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments of TRL's config for an online method (`alol.train.online`)."""
    common = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        use_cpu=needs_use_cpu(cfg.bf16),
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        **checkpointing_argument(cfg.gradient_checkpointing),
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )
    new_tokens = cfg.new_token_budget
    if method == "ppo":
        return dict(
            common,
            total_episodes=cfg.max_steps * cfg.batch_size * cfg.gradient_accumulation_steps,
            response_length=new_tokens,
            temperature=cfg.temperature,
            kl_coef=cfg.online_beta,
            num_ppo_epochs=1,
            num_mini_batches=1,
            local_rollout_forward_batch_size=cfg.batch_size,
            num_sample_generations=0,
            stop_token="eos",
            **({"missing_eos_penalty": cfg.missing_eos_penalty} if cfg.missing_eos_penalty else {}),
        )
    return dict(
        common,
        max_steps=cfg.max_steps,
        num_generations=cfg.num_generations,
        max_completion_length=new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.online_beta,
    )


def audit_thresholds(cfg: PipelineConfig) -> AuditThresholds:
    return AuditThresholds.of(cfg)


def load_options(cfg: PipelineConfig) -> dict[str, Any]:
    """`alol.data.formats.load_records` keyword arguments."""
    return dict(kind=cfg.data_kind, skip_invalid=cfg.skip_invalid, hh_reward=cfg.hh_reward)
