"""The trainer setup that the sft and train stages share: building `AlolTrainer` from the
config, resuming or starting over, saving the final model, and the metrics file (the
reward-model stage resumes, checkpoints and logs through the same helpers)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alol.atomic import append_jsonl, replace_directory, write_text
from alol.config import PipelineConfig
from alol.data.examples import ExampleDataset
from alol.distributed import on_main_process
from alol.models.generate import GenerationConfig
from alol.models.quantization import is_quantized, merged_into_full_precision
from alol.pipeline.settings import (
    lora_config,
    lora_kwargs,
    quantization,
    result_settings,
    tokenization,
    trainer_kwargs,
)
from alol.rewards import Reward
from alol.train import AlolConfig, AlolTrainer
from alol.train.checkpoints import newest_checkpoint

logger = logging.getLogger(__name__)


def training_args(
    cfg: PipelineConfig, objective: str, output_dir: Path, max_steps: int, with_eval: bool = False
) -> AlolConfig:
    return AlolConfig(**trainer_kwargs(cfg, objective, output_dir, max_steps, with_eval))


def training_fingerprint_parts(
    cfg: PipelineConfig, objective: str, stage_dir: Path, max_steps: int, with_eval: bool
) -> dict[str, Any]:
    """The trainer and LoRA settings a stage trains with, as its fingerprint holds them."""
    kwargs = trainer_kwargs(cfg, objective, stage_dir / "checkpoints", max_steps, with_eval)
    parts = {
        "trainer": result_settings(kwargs),
        "lora": lora_kwargs(cfg),
        "tokenization": tokenization(cfg),
    }
    # Named only when on, so stages finished before QLoRA existed are not trained again.
    if cfg.load_in_4bit:
        parts["quantization"] = quantization(cfg)
    return parts


def build_trainer(
    cfg: PipelineConfig,
    objective: str,
    model,
    tokenizer,
    dataset: ExampleDataset,
    stage_dir: Path,
    max_steps: int,
    *,
    sample_weights: list[float] | None = None,
    reward: Reward | None = None,
    eval_prompts: list[str] | None = None,
    generation_config: GenerationConfig | None = None,
    judges: dict[str, Reward] | None = None,
    start_validation_file: Path | None = None,
) -> AlolTrainer:
    """An `AlolTrainer` writing its checkpoints and metrics.jsonl into `stage_dir`."""
    with_eval = bool(eval_prompts)
    return AlolTrainer(
        model,
        training_args(cfg, objective, stage_dir / "checkpoints", max_steps, with_eval),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        sample_weights=sample_weights,
        reward=reward,
        eval_prompts=eval_prompts,
        generation_config=generation_config,
        callbacks=[MetricsFileCallback(stage_dir / "metrics.jsonl")],
        judges=judges,
        start_validation_file=start_validation_file,
    )


class CheckpointEvery(TrainerCallback):
    """Save every `steps` steps too, for a trainer that checkpoints only at epoch ends (a
    reward-model fit, which picks its epoch on held-out data): a fit stopped mid-epoch
    resumes from its last step checkpoint instead of the epoch's start."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps == 0:
            control.should_save = True


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
            merged_model(model, tmp).save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)

        on_main_process(merge_and_save)
    else:
        trainer.save_model(str(tmp))  # gathers FSDP/DeepSpeed shards; the main process writes
    on_main_process(lambda: replace_directory(tmp, directory))


def merged_model(model, tmp: Path):
    """The peft `model` with its adapter merged into the weights. An adapter trained on a 4-bit
    base (QLoRA) is merged into the base's full-precision weights, read again from its folder:
    merging into 4-bit weights would round most of the update away."""
    if not is_quantized(model):
        return model.merge_and_unload()
    adapter_dir = tmp.with_name(tmp.name + ".adapter")
    model.save_pretrained(adapter_dir)
    base = model.peft_config["default"].base_model_name_or_path
    merged = merged_into_full_precision(adapter_dir, base)
    shutil.rmtree(adapter_dir)
    return merged


class MetricsFileCallback(TrainerCallback):
    """Appends every log line to metrics.jsonl, the file the plots and reports read."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            append_jsonl(self.path, {"step": state.global_step, **logs})
