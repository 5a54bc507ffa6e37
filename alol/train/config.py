"""`AlolConfig`: `TrainingArguments` plus what an offline-RL objective needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from alol.choices import SAMPLING_CHOICES
from alol.method.objectives import ObjectiveConfig, get_objective


@dataclass
class AlolConfig(TrainingArguments):
    """`TrainingArguments` plus what an offline-RL objective needs. Every field is a CLI flag."""

    objective: str = field(
        default="a_lol",
        metadata={"help": "Training objective: a name from alol.method.objectives.OBJECTIVES."},
    )
    clip: float | None = field(
        default=0.9,
        metadata={
            "help": "ε of the importance-weight clamp [1-ε, 1+ε] (paper default 0.9). "
            "None turns clipping off."
        },
    )
    beta: float = field(
        default=0.1,
        metadata={"help": "DPO temperature β, and the coefficient of a_lol_kl's KL term."},
    )
    gold_floor: float = field(
        default=0.1, metadata={"help": "r_gold: lower bound on the detached token probability."}
    )
    pro_sft_weight: float = field(default=0.05, metadata={"help": "PRO: weight of the SFT term."})
    desirable_weight: float = field(
        default=1.0, metadata={"help": "KTO: weight of the desirable examples' losses."}
    )
    undesirable_weight: float = field(
        default=1.0, metadata={"help": "KTO: weight of the undesirable examples' losses."}
    )
    kto_label: str = field(
        default="auto",
        metadata={
            "help": "Records given as train_dataset, KTO: which examples are desirable ('auto', "
            "'reward_above' or 'advantage_positive' from an 'advantage' field; alol.method.kto.kto_rows)."
        },
    )
    kto_threshold: float | None = field(
        default=None,
        metadata={"help": "Records given as train_dataset, KTO 'reward_above': the threshold."},
    )
    max_prompt_length: int = field(
        default=640,
        metadata={
            "help": "Records given as train_dataset: prompt tokens kept (cut from the left). "
            "An ExampleDataset is tokenized already."
        },
    )
    max_response_length: int = field(
        default=128,
        metadata={
            "help": "Records given as train_dataset: response tokens kept, EOS included (cut "
            "from the right, without EOS)."
        },
    )
    string_prompts: str = field(
        default="chat",
        metadata={
            "help": "Records given as train_dataset: plain-string prompts as one user turn of "
            "the chat template ('chat') or as they are ('raw'); see alol.data.tokenize.render_prompt."
        },
    )
    train_responses: str = field(
        default="preferred",
        metadata={
            "help": "Records given as train_dataset: pairs and ranked records train pointwise "
            "objectives on the preferred response ('preferred') or every one ('all')."
        },
    )
    sampling: str | None = field(
        default=None,
        metadata={
            "help": "Records given as train_dataset: draw examples uniformly, ∝ A ('advantage') "
            "or ∝ R ('reward'). Default: the objective's. With an ExampleDataset, pass "
            "sample_weights instead."
        },
    )
    vocab_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the log-softmax over vocabulary chunks of this size to save memory."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Fill each optimizer step with examples of similar length to cut padding "
            "(grouped per global batch, so the split into devices and accumulation steps does "
            "not change which examples share a step)."
        },
    )
    compile_layers: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each decoder layer (regional compilation, alol.models.compilation). "
            "TrainingArguments' torch_compile compiles model.forward, which alol never calls."
        },
    )
    compile_mode: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile mode for compile_layers: default, reduce-overhead (CUDA "
            "graphs; pair it with pad_to_multiple_of), max-autotune, max-autotune-no-cudagraphs."
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Token-budget batches: each micro-batch holds as many examples as fit this "
            "many padded tokens (examples x rows x longest length), instead of "
            "per_device_train_batch_size examples. Short examples then share big batches (a "
            "busier GPU), long ones small ones (a bounded memory peak); every example still "
            "weighs the same in the gradient. Needs max_steps."
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Padding-free training: each micro-batch's sequences run as one row, with "
            "positions restarting per sequence and a block-causal mask, so no padding is "
            "computed (the same log-probs up to float rounding)."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={
            "help": "Pad each batch's length up to a multiple of this: fewer distinct shapes for "
            "compiled code and tensor-core friendly sizes, at the cost of some padding."
        },
    )
    select_by: str = field(
        default="reward",
        metadata={
            "help": "What validation selects the kept checkpoint by: 'reward', a judge's name, "
            "or name=weight pairs separated by commas (logged as eval_selection)."
        },
    )
    collapse_share: float | None = field(
        default=None,
        metadata={
            "help": "A validation pass whose answers are this share (or more) one answer "
            "(case and spaces ignored) marks its checkpoint collapsed: never kept while "
            "another is not. None: no checkpoint is refused."
        },
    )
    reward_timeout: float | None = field(
        default=None,
        metadata={"help": "Seconds one reward batch may take during validation (None: no limit)."},
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
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "Metric sinks: 'none', 'tensorboard', 'wandb' (alol sends no telemetry)."
        },
    )

    def __post_init__(self) -> None:
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
        if self.max_tokens_per_batch is not None and (
            self.max_tokens_per_batch < 1 or self.max_steps <= 0
        ):
            raise ValueError(
                "max_tokens_per_batch needs a positive budget and max_steps > 0 (the number of "
                f"batches is fixed by the step budget), got {self.max_tokens_per_batch} and "
                f"max_steps={self.max_steps}"
            )
        if self.sampling is not None and self.sampling not in SAMPLING_CHOICES:
            raise ValueError(f"sampling must be one of {SAMPLING_CHOICES}, got {self.sampling!r}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    def _place_mixed_precision(self) -> None:
        """bf16 on a machine without a GPU is CPU autocast (fast where the CPU has AMX or
        AVX-512 BF16): transformers accepts it only with `use_cpu`, which is set here rather
        than failing with "assign use_cpu". fp16 needs a GPU."""
        if self.fp16 and not _has_accelerator():
            raise ValueError(
                "fp16 mixed precision needs a GPU and this machine has none; train with bf16 "
                "(--bf16, bfloat16 autocast on the CPU) or without mixed precision (--no-fp16)"
            )
        self.use_cpu = self.use_cpu or needs_use_cpu(self.bf16)

    def objective_config(self) -> ObjectiveConfig:
        return ObjectiveConfig(
            clip=self.clip,
            beta=self.beta,
            gold_floor=self.gold_floor,
            pro_sft_weight=self.pro_sft_weight,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
        )


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )


def needs_use_cpu(bf16: bool) -> bool:
    """Whether TrainingArguments need `use_cpu=True` to run bf16 here (no accelerator)."""
    return bf16 and not _has_accelerator()
