"""alol's options on top of `TrainingArguments`, declared once: settings of `PipelineConfig`
(YAML keys and flags) that `AlolConfig` takes from here, and the reference pass shares."""

from __future__ import annotations

from dataclasses import dataclass

from alol.choices import COMPILE_MODES, SAMPLING_CHOICES
from alol.setting_checks import above, at_least, one_of, option

_TRAINING = ("sft", "train", "online")


@dataclass
class TrainingSettings:
    """How examples are drawn and batched, how the log-probs are computed, and how validation
    picks the kept checkpoint."""

    sampling: str | None = option(
        None,
        "How training examples are drawn: uniform, advantage (∝ A, A-LoL's priority sampling) "
        "or reward (∝ R). Default: the objective's.",
        ("train",),
        check=one_of(*SAMPLING_CHOICES),
    )
    sample_in_passes: bool = option(
        False,
        "Draw in passes over the training examples (each example once per pass, the order "
        "drawn ∝ its weight) instead of with replacement: the same priority where the budget "
        "is far below one pass, and no example drawn dozens of times on a small dataset. "
        "π_ref's SFT draws so too (uniformly), so turning it on trains another π_ref.",
        ("sft", "train"),
    )
    balance_groups: bool = option(
        False,
        "Keep each group of the training data (the records' 'group' field: a source in a mix) "
        "at its share of the data in the draws of the weighted objectives (A-LoL ∝ A within a "
        "group), so the group whose answers beat π_ref most does not take the training over.",
        ("train",),
    )
    length_neutral_advantage: bool = option(
        False,
        "Remove from A the part that answer length (in words) explains linearly over the "
        "training examples before A-LoL keeps A > 0, draws ∝ A and weights by A: a reward "
        "that pays length, doubled by the A² weighting, otherwise trains the policy to run its "
        "answers long. Off: the paper's A.",
        ("train",),
    )
    disable_dropout: bool = option(
        True,
        "Switch the policy's own dropout off while it trains (LoRA keeps lora_dropout), as "
        "TRL's DPO and KTO trainers do: π_ref's log-probs are taken without dropout, so "
        "dropout in π_θ alone is noise in the importance weights and the preference margins. "
        "Models without dropout (Llama, SmolLM2) train the same either way.",
        ("sft", "train"),
    )
    max_tokens_per_batch: int | None = option(
        None,
        "Token-budget micro-batches: as many examples as fit this many padded tokens (examples "
        "× rows × longest length) instead of batch_size examples; every example still weighs "
        "the same in the gradient. Needs max_steps.",
        _TRAINING,
        check=at_least(1),
    )
    packing: bool = option(
        False,
        "Padding-free training: each micro-batch's sequences run as one row, positions "
        "restarting per sequence under a block-causal mask (the same log-probs, no padding).",
        _TRAINING,
        affects_results=False,
    )
    pad_to_multiple_of: int | None = option(
        None,
        "Pad each training batch's length up to a multiple of this: fewer distinct shapes for "
        "compiled code and tensor-core friendly sizes, at the cost of some padding.",
        _TRAINING,
        check=at_least(1),
        affects_results=False,
    )
    vocab_chunk_size: int | None = option(
        None,
        "Log-softmax over vocabulary chunks of this size, to save memory.",
        check=at_least(1),
        affects_results=False,
    )
    compile_layers: bool = option(
        False,
        "torch.compile each decoder layer, in training and in the reference precompute (fuses "
        "norms, rotary and MLP elementwise work; a one-off compile wait per stage).",
        ("sft", "advantage", "train"),
        affects_results=False,
    )
    compile_mode: str | None = option(
        None,
        "torch.compile mode for compile_layers: default, reduce-overhead (CUDA graphs; pair it "
        "with pad_to_multiple_of), max-autotune, max-autotune-no-cudagraphs.",
        ("sft", "advantage", "train"),
        check=one_of(*COMPILE_MODES),
        affects_results=False,
    )
    select_by: str = option(
        "reward",
        "What the validation pass selects the kept checkpoint by: 'reward', a judge's name, or "
        "a weighted mix as name=weight pairs separated by commas ('reward=0.5,helpfulness=0.5'). "
        "A checkpoint whose validation answers are degenerate (collapse_share, or cut_off_share "
        "and loop_share against the validation of π_ref before the first step) is never "
        "selected while another is not; when every one is, the earliest is kept.",
        ("train",),
    )
    reward_timeout: float | None = option(
        None,
        "Seconds one batch of the reward function may take; a slower batch stops the stage with "
        "an error naming it ('none': no limit).",
        ("value", "advantage", "train", "eval"),
        check=above(0),
    )
    missing_eos_penalty: float | None = option(
        None,
        "Subtracted from the reward of an answer alol decodes that runs to the token budget "
        "without ending (TRL's missing_eos_penalty): in V's samples, checkpoint selection, the "
        "online methods' rewards and eval, where it is the reward component 'missing_eos'. For "
        "a reward that pays length, so that answers cut mid-sentence do not score best. The "
        "data's answers count as ended.",
        ("value", "train", "online", "eval"),
        check=above(0),
    )
    report_to: str = option(
        "none",
        "Metric sinks: none, tensorboard, wandb (no telemetry otherwise).",
        _TRAINING,
        check=one_of("none", "tensorboard", "wandb", "all"),
        affects_results=False,
    )
