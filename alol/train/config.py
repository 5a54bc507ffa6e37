"""`AlolConfig`: `TrainingArguments` plus what an offline-RL objective needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from alol.data.settings import RecordSettings
from alol.kto_settings import KTOSettings
from alol.method.config import ObjectiveConfig
from alol.method.objectives import get_objective
from alol.reports.audit_thresholds import AuditThresholds
from alol.setting_checks import check_settings, same_as
from alol.train.precision import has_accelerator, placed_precision
from alol.training_settings import TrainingSettings


@dataclass
class AlolConfig(TrainingArguments):
    """`TrainingArguments` plus what an offline-RL objective needs. Every field is a CLI flag
    (HfArgumentParser reads it); the settings `alol run` shares are declared once, in the
    config that reads them, and taken from there."""

    objective: str = field(
        default="a_lol",
        metadata={"help": "Training objective: a name from alol.method.objectives.OBJECTIVES."},
    )
    # Settings declared once elsewhere (their defaults and help texts come from there):
    clip: float | None = same_as(ObjectiveConfig, "clip")
    beta: float = same_as(ObjectiveConfig, "beta")
    gold_floor: float = same_as(ObjectiveConfig, "gold_floor")
    pro_sft_weight: float = same_as(ObjectiveConfig, "pro_sft_weight")
    desirable_weight: float = same_as(ObjectiveConfig, "desirable_weight")
    undesirable_weight: float = same_as(ObjectiveConfig, "undesirable_weight")
    max_prompt_length: int = same_as(RecordSettings, "max_prompt_length")
    max_response_length: int = same_as(RecordSettings, "max_response_length")
    string_prompts: str = same_as(RecordSettings, "string_prompts")
    train_responses: str = same_as(RecordSettings, "train_responses")
    kto_label: str = same_as(KTOSettings, "kto_label")
    kto_threshold: float | None = same_as(KTOSettings, "kto_threshold")
    sampling: str | None = same_as(TrainingSettings, "sampling")
    sample_in_passes: bool = same_as(TrainingSettings, "sample_in_passes")
    balance_groups: bool = same_as(TrainingSettings, "balance_groups")
    length_neutral_advantage: bool = same_as(TrainingSettings, "length_neutral_advantage")
    disable_dropout: bool = same_as(TrainingSettings, "disable_dropout")
    max_tokens_per_batch: int | None = same_as(TrainingSettings, "max_tokens_per_batch")
    packing: bool = same_as(TrainingSettings, "packing")
    pad_to_multiple_of: int | None = same_as(TrainingSettings, "pad_to_multiple_of")
    vocab_chunk_size: int | None = same_as(TrainingSettings, "vocab_chunk_size")
    compile_layers: bool = same_as(TrainingSettings, "compile_layers")
    compile_mode: str | None = same_as(TrainingSettings, "compile_mode")
    select_by: str = same_as(TrainingSettings, "select_by")
    reward_timeout: float | None = same_as(TrainingSettings, "reward_timeout")
    missing_eos_penalty: float | None = same_as(TrainingSettings, "missing_eos_penalty")
    collapse_share: float | None = same_as(AuditThresholds, "collapse_share")
    cut_off_share: float = same_as(AuditThresholds, "cut_off_share")
    loop_share: float = same_as(AuditThresholds, "loop_share")
    # Trainer behaviour alol sets apart from TrainingArguments' defaults:
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Fill each optimizer step with examples of similar length to cut padding "
            "(grouped per global batch, so the split into devices and accumulation steps does "
            "not change which examples share a step)."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: alol's batches carry their own fields."}
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "Trainer's filter that replaces a NaN/inf micro-step loss in the logged loss "
            "by the running mean. It checks every micro-step's loss on the host, a device sync "
            "per step; alol logs the loss as it is, so a diverging run shows."
        },
    )

    def __post_init__(self) -> None:
        for owner in (ObjectiveConfig, RecordSettings, KTOSettings, TrainingSettings):
            # report_to is TrainingArguments' own, read in its own forms (a list, 'all')
            check_settings(self, owner, skip=("report_to",))
        self._place_mixed_precision()
        super().__post_init__()
        get_objective(self.objective)  # fail early with the list of valid names
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        if self.torch_compile:
            raise ValueError(
                "torch_compile compiles model.forward, which alol's log-prob path never calls, so "
                "it would change nothing; set compile_layers=True (--compile-layers) instead"
            )
        if self.max_tokens_per_batch is not None and self.max_steps <= 0:
            raise ValueError(
                "max_tokens_per_batch needs max_steps > 0 (the number of batches is fixed by "
                f"the step budget), got max_steps={self.max_steps}"
            )

    def _place_mixed_precision(self) -> None:
        """bf16 on a machine without a GPU is CPU autocast where the CPU has native bf16
        (`alol.train.precision`), float32 elsewhere; transformers accepts CPU autocast only with
        `use_cpu`, which is set here rather than failing with "assign use_cpu". fp16 needs a
        GPU."""
        if self.fp16 and not has_accelerator():
            raise ValueError(
                "fp16 mixed precision needs a GPU and this machine has none; train with bf16 "
                "(--bf16: bfloat16 autocast on a CPU with native bf16, float32 on others) or "
                "without mixed precision (--no-fp16)"
            )
        placed = placed_precision(self.bf16)
        self.bf16 = placed["bf16"]
        self.use_cpu = self.use_cpu or placed["use_cpu"]

    def objective_config(self) -> ObjectiveConfig:
        return ObjectiveConfig.of(self)
