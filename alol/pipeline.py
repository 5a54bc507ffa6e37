"""The A-LoL pipeline as explicit stages: sft → value → advantage → train → eval.

Each stage is a function of one `PipelineConfig` that reads its inputs from the run directory
(or the config), writes its artifacts into its own folder and records a fingerprint of its
inputs in `stage.json`. A stage whose folder holds a finished run with the same fingerprint
is skipped, so `alol run` can be rerun after a crash or a change and redoes only what the
change invalidated.

Run directory layout::

    run_dir/sft/model/                 the reference policy π_ref (when alol trains it)
    run_dir/value/                     value head (safetensors), fit metrics, decoded samples, plot
    run_dir/advantage/                 cached table, advantage_stats.json, advantage_hist.png
    run_dir/train/<objective>/         checkpoints, final/ model, metrics.jsonl, train_curves.png
    run_dir/eval/<name>/               eval.json, report.md, samples.jsonl

Every stage runs unchanged under `accelerate launch` (or `torchrun`): decoding, scoring and the
advantage precompute give each process every world_size-th example and gather the results
(`alol.io.gather_in_order`); training is Trainer's DDP/FSDP/DeepSpeed; only the main process
writes artifacts, and the others wait for it (`alol.io.on_main_process`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from alol.advantage import (
    REFERENCE_DTYPES,
    AdvantageConfig,
    AdvantageTable,
    advantage_stats,
    budget_steps,
    cache_key,
    compute_advantages,
    fingerprint_model,
    fingerprint_records,
    load_or_compute,
    select_training_examples,
    write_advantage_report,
)
from alol.batching import ExampleDataset, PairExample, RankedExample, SequenceExample
from alol.config import PipelineConfig
from alol.data import (
    RewardRecord,
    load_records,
    render_prompt,
    to_preference_records,
    to_ranked_records,
    to_reward_records,
    tokenize_pair,
)
from alol.errors import AlolError
from alol.evaluate import (
    EvalReport,
    comparison_table,
    evaluate_responses,
    warn_on_prompt_overlap,
    write_report,
)
from alol.generate import GenerationConfig, generate_responses
from alol.io import (
    append_jsonl,
    gather_in_order,
    on_main_process,
    process_state,
    replace_directory,
    write_json,
    write_text,
)
from alol.objectives import get_objective
from alol.plots import plot_training_curves
from alol.rewards import Reward, load_reward, score, spec_fingerprint
from alol.trainer import (
    AlolConfig,
    AlolTrainer,
    checkpointing_argument,
    ensure_pad_token,
    newest_checkpoint,
)
from alol.value import ValueConfig, fit_value_head, load_value_head, plot_value_fit, save_value_head

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Stage bookkeeping


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _stage_done(directory: Path, fingerprint: str) -> bool:
    marker = directory / "stage.json"
    if not marker.exists():
        return False
    state = json.loads(marker.read_text())
    return state.get("fingerprint") == fingerprint and state.get("status") == "done"


def _begin_stage(directory: Path, fingerprint: str, name: str) -> None:
    """Mark a stage running; a folder left by other inputs is moved aside, never deleted."""

    def begin() -> None:
        marker = directory / "stage.json"
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            stale = directory.with_name(f"{directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            logger.warning(
                "%s: inputs changed; moving the previous %s to %s", name, directory, stale
            )
            shutil.move(directory, stale)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"stage": name, "fingerprint": fingerprint, "status": "running"})

    on_main_process(begin)


def _finish_stage(directory: Path, fingerprint: str, name: str, **summary: Any) -> None:
    on_main_process(
        lambda: write_json(
            directory / "stage.json",
            {"stage": name, "fingerprint": fingerprint, "status": "done", **summary},
        )
    )


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Splits:
    """Training records and the validation records held out from them (or loaded)."""

    train: list
    val: list


def _load(path: str, cfg: PipelineConfig) -> list:
    loaded = load_records(
        path, kind=cfg.data_kind, skip_invalid=cfg.skip_invalid, hh_reward=cfg.hh_reward
    )
    if loaded.skipped:
        logger.warning(
            "%s: skipped %d invalid records (first: %s: %s)",
            path,
            len(loaded.skipped),
            *loaded.skipped[0],
        )
    return loaded.records


def load_splits(cfg: PipelineConfig) -> Splits:
    if cfg.train_data is None:
        raise AlolError(
            "train_data is not set: pass --train-data FILE or set it in the YAML config."
        )
    records = _load(cfg.train_data, cfg)
    if cfg.val_data is not None:
        return Splits(train=records, val=_load(cfg.val_data, cfg))
    return hold_out_prompts(records, cfg.val_fraction, cfg.seed)


def _prompt_key(record: Any) -> str:
    return json.dumps(record.prompt, sort_keys=True)


def hold_out_prompts(records: list, fraction: float, seed: int) -> Splits:
    """Split by prompt, so no validation prompt is also a training prompt."""
    keys = sorted({_prompt_key(r) for r in records})
    rng = np.random.default_rng(seed)
    n_val = max(1, round(fraction * len(keys))) if len(keys) > 1 else 0
    held = set(rng.permutation(len(keys))[:n_val].tolist())
    val_keys = {keys[i] for i in held}
    return Splits(
        train=[r for r in records if _prompt_key(r) not in val_keys],
        val=[r for r in records if _prompt_key(r) in val_keys],
    )


def unique_prompts(records: list) -> list:
    seen: dict[str, Any] = {}
    for record in records:
        seen.setdefault(_prompt_key(record), record.prompt)
    return list(seen.values())


def load_model(path: str | Path, dtype: torch.dtype | None = None):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    ensure_pad_token(tokenizer)
    return model, tokenizer


def load_model_for_inference(path: str | Path, dtype: str = "float32"):
    """The model in `dtype` (a name of `REFERENCE_DTYPES`) on this process's device, for
    decoding and the precompute (Trainer places the models it trains itself)."""
    model, tokenizer = load_model(path, dtype=REFERENCE_DTYPES[dtype])
    return model.to(process_state().device), tokenizer


def reference_dtype(bf16: bool, device: torch.device | str) -> str:
    """The dtype π_ref's weights run in for value decoding, value features and the precompute.

    bf16 when the policy trains in bf16 on a GPU: half the memory and bandwidth of float32, and
    the importance weights and KL terms of a bf16-trained policy then compare it with the
    reference's bf16 log-probs (log-softmax stays float32). float32 on the CPU, where bf16
    matmuls are rarely faster.
    """
    return "bfloat16" if bf16 and torch.device(device).type == "cuda" else "float32"


def _reference_dtype(cfg: PipelineConfig) -> str:
    return reference_dtype(cfg.bf16, process_state().device)


def reference_path(cfg: PipelineConfig) -> Path:
    path = Path(cfg.reference) if cfg.reference else cfg.root / "sft" / "model"
    if not path.exists():
        raise AlolError(
            f"no reference model at {path}: run `alol sft` first, or pass --reference with an "
            "existing SFT model."
        )
    return path


def _reward(cfg: PipelineConfig) -> Reward | None:
    return None if cfg.reward is None else load_reward(cfg.reward)


def _reward_fingerprint(cfg: PipelineConfig) -> str | None:
    return None if cfg.reward is None else spec_fingerprint(cfg.reward)


# ---------------------------------------------------------------------------------------------
# Stage 1: the reference policy


def run_sft(cfg: PipelineConfig) -> Path:
    """Fine-tune `cfg.model` with NLL on the training responses; the result is π_ref."""
    if cfg.model is None:
        raise AlolError("`alol sft` needs --model (the base model to fine-tune).")
    out = cfg.root / "sft"
    splits = load_splits(cfg)
    records = to_reward_records(splits.train)
    fingerprint = _fingerprint(
        "sft",
        fingerprint_model(cfg.model),
        fingerprint_records(records),
        _training_fields(cfg),
        cfg.sft_max_steps,
    )
    if _stage_done(out, fingerprint):
        logger.info("sft: up to date (%s)", out)
        return out / "model"
    _begin_stage(out, fingerprint, "sft")
    model, tokenizer = load_model(cfg.model)
    dataset = ExampleDataset(
        [SequenceExample(_tokenize(tokenizer, r, cfg), index=i) for i, r in enumerate(records)]
    )
    args = _training_args(
        cfg, "nll", out / "checkpoints", max_steps=cfg.sft_max_steps or cfg.max_steps
    )
    trainer = AlolTrainer(
        model,
        args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora_config(cfg),
        callbacks=[MetricsFileCallback(out / "metrics.jsonl")],
    )
    _train(trainer, out, cfg.resume)
    _save_policy(trainer, out / "model", merge=True)
    on_main_process(lambda: plot_training_curves(out / "metrics.jsonl", out / "train_curves.png"))
    _finish_stage(out, fingerprint, "sft", examples=len(records))
    return out / "model"


# ---------------------------------------------------------------------------------------------
# Stage 2: the value estimate V(x)


def run_value(cfg: PipelineConfig) -> Path:
    """Decode π_ref on validation prompts, score, and fit the value head on its prompt states."""
    out = cfg.root / "value"
    ref = reference_path(cfg)
    splits = load_splits(cfg)
    value_config = ValueConfig(
        epochs=cfg.value_epochs,
        learning_rate=cfg.value_learning_rate,
        max_value=cfg.value_max,
        seed=cfg.seed,
        max_prompt_length=cfg.max_prompt_length,
    )
    fingerprint = _fingerprint(
        "value",
        fingerprint_model(ref),
        fingerprint_records(to_reward_records(splits.val)),
        _reward_fingerprint(cfg),
        asdict(value_config),
        cfg.value_samples,
        cfg.value_from_data,
        asdict(cfg.generation(do_sample=cfg.value_samples > 1)),
        _reference_dtype(cfg),
    )
    if _stage_done(out, fingerprint):
        logger.info("value: up to date (%s)", out)
        return out
    _begin_stage(out, fingerprint, "value")
    model, tokenizer = load_model_for_inference(ref, _reference_dtype(cfg))
    prompts, targets, samples = _value_targets(cfg, model, tokenizer, splits.val)
    head, report = fit_value_head(model, tokenizer, prompts, targets, value_config)
    report["targets_from"] = (
        "data rewards (approximation)" if cfg.value_from_data else "reference samples"
    )

    def write() -> None:
        save_value_head(head, out, report)
        plot_value_fit(report, out / "value_fit.png")
        _write_jsonl(out / "value_samples.jsonl", samples)

    on_main_process(write)
    _finish_stage(out, fingerprint, "value", heldout_mse=report["heldout_mse"])
    return out


def _value_targets(cfg: PipelineConfig, model, tokenizer, val_records: list):
    """(prompts, targets, samples): what V regresses on, and the decoded samples to inspect."""
    if cfg.value_from_data:
        logger.warning(
            "value: fitting V on the data's stored rewards, an approximation of E[R] under π_ref "
            "(the paper decodes from π_ref and scores with the reward)."
        )
        records = [r for r in to_reward_records(val_records) if r.total_reward is not None]
        prompts = [render_prompt(r.prompt, tokenizer) for r in records]
        targets = [float(r.total_reward) for r in records]
        samples = [
            {"prompt": p, "response": r.response, "reward": t}
            for p, r, t in zip(prompts, records, targets, strict=True)
        ]
        return prompts, targets, samples
    reward = _reward(cfg)
    if reward is None:
        raise AlolError(
            "`alol value` needs a reward function (--reward) to score the reference's samples, "
            "or --value-from-data to fit V on the stored rewards (an approximation)."
        )
    prompts = [render_prompt(p, tokenizer) for p in unique_prompts(val_records)]
    k = cfg.value_samples
    generation = cfg.generation(do_sample=k > 1, num_return_sequences=k)
    scored = gather_in_order(
        len(prompts),
        lambda indices: _decode_and_score(
            cfg, model, tokenizer, prompts, indices, reward, generation
        ),
    )
    flat_prompts = [p for p in prompts for _ in range(k)]
    flat = [(response, s) for pairs in scored for response, s in pairs]
    targets = [s["total"] for _, s in flat]
    samples = [
        {"prompt": p, "response": r, "reward": s}
        for p, (r, s) in zip(flat_prompts, flat, strict=True)
    ]
    return flat_prompts, targets, samples


def _decode_and_score(
    cfg: PipelineConfig,
    model,
    tokenizer,
    all_prompts: list[str],
    indices: list[int],
    reward: Reward,
    generation: GenerationConfig,
) -> list[list[tuple[str, dict[str, float]]]]:
    """Per prompt of `indices` (this process's share), its decoded responses paired with their
    scores. A reward error names records as numbered over every prompt's responses."""
    prompts = [all_prompts[i] for i in indices]
    responses = generate_responses(model, tokenizer, prompts, generation)
    flat_prompts = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
    flat_responses = [r for rs in responses for r in rs]
    numbers = [
        i * len(rs) + k for i, rs in zip(indices, responses, strict=True) for k in range(len(rs))
    ]
    scores = score(
        reward, flat_prompts, flat_responses, timeout=cfg.reward_timeout, record_numbers=numbers
    )
    scored = iter(zip(flat_responses, scores, strict=True))
    return [[next(scored) for _ in rs] for rs in responses]


# ---------------------------------------------------------------------------------------------
# Stage 3: the advantage precompute


def run_advantage(cfg: PipelineConfig) -> AdvantageTable:
    """Reference log-probs, V(x), R and A for every training pair, cached by content hash."""
    out = cfg.root / "advantage"
    ref = reference_path(cfg)
    records = to_reward_records(load_splits(cfg).train)
    value_dir = cfg.root / "value"
    head_file = value_dir / "value_head.safetensors"
    value_fp = hashlib.sha256(head_file.read_bytes()).hexdigest() if head_file.exists() else None
    config = _advantage_config(cfg)
    key = cache_key(
        fingerprint_model(ref),
        fingerprint_records(records),
        _reward_fingerprint(cfg),
        config.key_fields(),
        value_fp,
    )

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(ref, config.reference_dtype)
        head = load_value_head(value_dir) if value_fp else None
        if head is None:
            logger.warning(
                "advantage: no value head in %s; V(x) = 0 (run `alol value` for A-LoL)", value_dir
            )
        return compute_advantages(
            model, tokenizer, records, config, value_head=head, reward=_reward(cfg)
        )

    table = load_or_compute(out, key, compute)
    stats = advantage_stats(table)
    on_main_process(lambda: write_advantage_report(table, out))
    logger.info(
        "advantage: %.1f%% of %d examples have A > 0", 100 * stats["fraction_positive"], len(table)
    )
    return table


# ---------------------------------------------------------------------------------------------
# Stage 4: training


def run_train(cfg: PipelineConfig, objective_name: str) -> Path:
    """Train one objective from π_ref; returns the folder of the final model."""
    objective = get_objective(objective_name)
    out = cfg.root / "train" / objective_name
    ref = reference_path(cfg)
    splits = load_splits(cfg)
    model, tokenizer = load_model(ref)
    dataset, weights, fraction, data_fp = _training_set(cfg, objective, splits.train, tokenizer)
    max_steps = cfg.max_steps
    if objective.positive_advantage_only and cfg.scale_steps_by_positive_fraction:
        max_steps = budget_steps(cfg.max_steps, fraction)
    fingerprint = _fingerprint(
        "train", objective_name, fingerprint_model(ref), data_fp, _training_fields(cfg), max_steps
    )
    if _stage_done(out, fingerprint):
        logger.info("train %s: up to date (%s)", objective_name, out)
        return out / "final"
    _begin_stage(out, fingerprint, "train")
    reward = _reward(cfg)
    eval_prompts = (
        [render_prompt(p, tokenizer) for p in unique_prompts(splits.val)]
        if reward and cfg.eval_steps
        else None
    )
    args = _training_args(
        cfg, objective_name, out / "checkpoints", max_steps=max_steps, with_eval=bool(eval_prompts)
    )
    trainer = AlolTrainer(
        model,
        args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora_config(cfg),
        sample_weights=None if weights is None else weights.tolist(),
        reward=reward,
        eval_prompts=eval_prompts,
        generation_config=cfg.generation(),
        callbacks=[MetricsFileCallback(out / "metrics.jsonl")],
    )
    logger.info("train %s: %d examples, %d steps", objective_name, len(dataset), max_steps)
    _train(trainer, out, cfg.resume)
    _save_policy(trainer, out / "final", merge=False)
    on_main_process(lambda: plot_training_curves(out / "metrics.jsonl", out / "train_curves.png"))
    _finish_stage(
        out,
        fingerprint,
        "train",
        examples=len(dataset),
        steps=max_steps,
        fraction_positive=fraction,
    )
    return out / "final"


def _training_set(cfg: PipelineConfig, objective, train_records: list, tokenizer):
    """(dataset, sampling weights or None, fraction positive, data fingerprint) for an objective."""
    if objective.data == "pair":
        return _pair_set(cfg, objective, train_records, tokenizer)
    if objective.data == "ranked":
        ranked = to_ranked_records(train_records)
        examples = [
            RankedExample(
                [_tokenize(tokenizer, RewardRecord(r.prompt, resp), cfg) for resp in r.responses],
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
            SequenceExample(_tokenize(tokenizer, r, cfg), index=i) for i, r in enumerate(records)
        ]
        return ExampleDataset(examples), None, 1.0, data_fp
    table = run_advantage(cfg)
    sampling = cfg.sampling or objective.default_sampling
    indices, weights = select_training_examples(table, objective.positive_advantage_only, sampling)
    examples = [
        SequenceExample(
            _tokenize(tokenizer, records[i], cfg),
            index=int(i),
            reward=float(table.reward[i]),
            advantage=float(table.advantage[i]),
            ref_token_logps=table.token_logps(int(i)),
        )
        for i in indices
    ]
    fraction = float(np.mean(table.advantage > 0))
    return ExampleDataset(examples), weights, fraction, _fingerprint(data_fp, table.key, sampling)


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
                _tokenize(tokenizer, RewardRecord(p.prompt, p.chosen), cfg),
                _tokenize(tokenizer, RewardRecord(p.prompt, p.rejected), cfg),
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
    config = _advantage_config(cfg)
    key = cache_key(fingerprint_model(ref), fingerprint_records(flat), None, config.key_fields())

    def compute() -> AdvantageTable:
        model, tokenizer = load_model_for_inference(ref, config.reference_dtype)
        return compute_advantages(model, tokenizer, flat, config)

    return load_or_compute(cfg.root / "pairs", key, compute).ref_logp


def _advantage_config(cfg: PipelineConfig) -> AdvantageConfig:
    return AdvantageConfig(
        batch_size=cfg.precompute_batch_size,
        max_prompt_length=cfg.max_prompt_length,
        max_response_length=cfg.max_response_length,
        vocab_chunk_size=cfg.vocab_chunk_size,
        reward_timeout=cfg.reward_timeout,
        reference_dtype=_reference_dtype(cfg),
        share_prompts=cfg.share_prompts,
        compile_layers=cfg.compile_layers,
        compile_mode=cfg.compile_mode,
    )


def _tokenize(tokenizer, record: RewardRecord, cfg: PipelineConfig):
    return tokenize_pair(
        tokenizer,
        render_prompt(record.prompt, tokenizer),
        record.response,
        cfg.max_prompt_length,
        cfg.max_response_length,
    )


def _training_fields(cfg: PipelineConfig) -> dict[str, Any]:
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


def _training_args(
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


def _lora_config(cfg: PipelineConfig):
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


def _train(trainer: AlolTrainer, stage_dir: Path, resume: bool) -> None:
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


def _save_policy(trainer: AlolTrainer, directory: Path, merge: bool) -> None:
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


# ---------------------------------------------------------------------------------------------
# Stage 5: evaluation


def run_eval(cfg: PipelineConfig) -> dict[str, EvalReport]:
    """Decode test prompts with π_ref and each trained model, score, and compare."""
    if cfg.test_data is None:
        raise AlolError("`alol eval` needs --test-data (records whose prompts are decoded).")
    reward = _reward(cfg)
    if reward is None:
        raise AlolError(
            "`alol eval` needs a reward function (--reward) to score the decoded responses."
        )
    test_prompts = unique_prompts(_load(cfg.test_data, cfg))
    ref = reference_path(cfg)
    reports = {"reference": _eval_model(cfg, "reference", ref, test_prompts, reward, None)}
    models = (
        {"model": Path(cfg.eval_model)}
        if cfg.eval_model
        else {name: cfg.root / "train" / name / "final" for name in cfg.objectives}
    )
    for name, path in models.items():
        if not path.exists():
            raise AlolError(
                f"no trained model at {path}: run `alol train --objectives {name}` first."
            )
        reports[name] = _eval_model(cfg, name, path, test_prompts, reward, reports["reference"])
    table = comparison_table(reports)
    on_main_process(lambda: write_text(cfg.root / "eval" / "comparison.md", table + "\n"))
    return reports


def _eval_model(
    cfg: PipelineConfig,
    name: str,
    path: Path,
    prompts: list,
    reward: Reward,
    reference: EvalReport | None,
) -> EvalReport:
    model, tokenizer = load_policy_for_eval(path)
    model.to(process_state().device)
    texts = [render_prompt(p, tokenizer) for p in prompts]
    if name == "reference":
        val = load_splits(cfg).val
        warn_on_prompt_overlap(
            texts,
            [render_prompt(p, tokenizer) for p in unique_prompts(val)],
            "fit V and select checkpoints",
        )
    generation = cfg.generation()
    scored = gather_in_order(
        len(texts),
        lambda indices: [
            pairs[0]
            for pairs in _decode_and_score(
                cfg, model, tokenizer, texts, indices, reward, generation
            )
        ],
    )
    responses = [response for response, _ in scored]
    scores = [s for _, s in scored]
    ref_scores = None if reference is None else [s.scores for s in reference.examples]
    report = evaluate_responses(texts, responses, scores, ref_scores)
    on_main_process(
        lambda: write_report(report, cfg.root / "eval" / name, title=f"{name} on {cfg.test_data}")
    )
    return report


def load_policy_for_eval(path: Path):
    """A final model folder holds full weights or a LoRA adapter over π_ref."""
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return model, tokenizer
    return load_model(path)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, default=float) + "\n" for row in rows))


# ---------------------------------------------------------------------------------------------
# All stages


def run_all(cfg: PipelineConfig) -> dict[str, EvalReport]:
    """sft (unless a reference is given) → value → advantage → train each objective → eval."""
    if cfg.reference is None:
        run_sft(cfg)
    run_value(cfg)
    run_advantage(cfg)
    for name in cfg.objectives:
        run_train(cfg, name)
    return run_eval(cfg) if cfg.test_data else {}
