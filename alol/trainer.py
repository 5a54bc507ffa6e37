"""`AlolTrainer`: a `transformers.Trainer` that trains any objective of the registry.

The loop, accumulation, mixed precision, distributed wrapping and checkpointing are
Trainer's; alol adds three things: the sampler (priority sampling over the leftover lunch,
grouped by length), the loss (response log-probs → a pure objective from `alol.objectives`)
and the metrics (averaged over the logging window, read from the device once per log, not
once per step). Evaluation decodes the validation prompts and scores them with the reward, so
`metric_for_best_model="eval_reward"` selects checkpoints on validation reward.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from alol.advantage import PrioritySampler
from alol.batching import Collator, ExampleDataset, LengthGroupedSampler
from alol.evaluate import distinct_n
from alol.generate import GenerationConfig, generate_responses, shard_indices
from alol.logprobs import response_token_logprobs, sequence_logprobs
from alol.objectives import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    PairBatch,
    RankedBatch,
    SequenceBatch,
    get_objective,
)
from alol.rewards import Reward, score

SAMPLING_CHOICES = ("uniform", "advantage", "reward")


@dataclass
class AlolConfig(TrainingArguments):
    """`TrainingArguments` plus what an offline-RL objective needs. Every field is a CLI flag."""

    objective: str = field(
        default="a_lol",
        metadata={"help": "Training objective: a name from alol.objectives.OBJECTIVES."},
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
    sampling: str | None = field(
        default=None,
        metadata={
            "help": "How training examples are drawn: 'advantage' (∝ A, with replacement, the "
            "paper's priority sampling), 'reward' (∝ R) or 'uniform'. Default: the objective's."
        },
    )
    max_prompt_length: int = field(
        default=640, metadata={"help": "Prompt tokens kept (truncated from the left)."}
    )
    max_response_length: int = field(
        default=128,
        metadata={"help": "Response tokens kept, EOS included (truncated from the right)."},
    )
    vocab_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Compute the log-softmax over vocabulary chunks of this size to save memory."
        },
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch examples of similar length together to cut padding."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: alol's batches carry their own fields."}
    )
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "Metric sinks: 'none', 'tensorboard', 'wandb' (alol sends no telemetry)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        get_objective(self.objective)  # fail early with the list of valid names
        if self.sampling is not None and self.sampling not in SAMPLING_CHOICES:
            raise ValueError(f"sampling must be one of {SAMPLING_CHOICES}, got {self.sampling!r}.")

    def objective_config(self) -> ObjectiveConfig:
        return ObjectiveConfig(
            clip=self.clip,
            beta=self.beta,
            gold_floor=self.gold_floor,
            pro_sft_weight=self.pro_sft_weight,
        )


class AlolTrainer(Trainer):
    """Trains `args.objective` on an `ExampleDataset` built by `alol.pipeline`.

    `sample_weights` (aligned with `train_dataset`) drive priority sampling; None samples
    uniformly. `reward` and `eval_prompts` (rendered prompt texts) enable validation by
    decoding and scoring.
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: AlolConfig,
        train_dataset: ExampleDataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        sample_weights: list[float] | None = None,
        reward: Reward | None = None,
        eval_prompts: list[str] | None = None,
        generation_config: GenerationConfig | None = None,
        callbacks: list | None = None,
    ):
        if isinstance(model, str):
            processing_class = processing_class or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if processing_class is None:
            raise ValueError("Pass processing_class= (the tokenizer) when model is an object.")
        if peft_config is not None:
            model = apply_lora(model, peft_config, args.gradient_checkpointing)
        self.objective: Objective = get_objective(args.objective)
        self.objective_config = args.objective_config()
        self.sample_weights = sample_weights
        self.reward = reward
        self.eval_prompts = eval_prompts
        self.generation_config = generation_config or GenerationConfig(
            max_new_tokens=args.max_response_length
        )
        eval_dataset = _PromptList(eval_prompts) if eval_prompts and reward is not None else None
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=Collator(processing_class.pad_token_id),
            processing_class=processing_class,
            callbacks=callbacks,
        )
        # compute_loss returns a per-example mean over equal-sized micro-batches, so Trainer's
        # division by the accumulation steps yields the mean over the whole global batch.
        self.loss_is_scaled_for_ga = False
        self._metric_sums: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros((), device=args.device)
        )
        self._metric_counts = 0
        self._tokens_seen = torch.zeros((), device=args.device, dtype=torch.long)
        self._last_log_time = time.perf_counter()

    # --- sampling -----------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler[int]:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        sampler = PrioritySampler(
            indices=list(range(len(dataset))),
            weights=self.sample_weights,
            num_samples=self._num_draws(len(dataset)),
            seed=self.args.seed,
        )
        if not self.args.group_by_length:
            return sampler
        return LengthGroupedSampler(
            sampler, dataset.lengths, self.args.per_device_train_batch_size, seed=self.args.seed
        )

    def _num_draws(self, dataset_size: int) -> int:
        """Draws per epoch: exactly the step budget when max_steps is set, else one dataset's worth."""
        if self.args.max_steps > 0:
            global_batch = (
                self.args.per_device_train_batch_size
                * self.args.gradient_accumulation_steps
                * self.args.world_size
            )
            return self.args.max_steps * global_batch
        return dataset_size

    # --- loss ---------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        token_logps = response_token_logprobs(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["response_mask"],
            vocab_chunk_size=self.args.vocab_chunk_size,
        )
        output = self.objective.loss(
            self._objective_batch(token_logps, inputs), self.objective_config
        )
        self._record(output, inputs)
        return (output.loss, output) if return_outputs else output.loss

    def _objective_batch(self, token_logps: torch.Tensor, inputs: dict[str, torch.Tensor]):
        """Shape the policy log-probs into the batch type the objective's family expects."""
        mask = inputs["response_mask"]
        if self.objective.data == "sequence":
            return SequenceBatch(
                token_logps=token_logps,
                response_mask=mask,
                ref_token_logps=inputs.get("ref_token_logps"),
                rewards=inputs.get("reward"),
                advantages=inputs.get("advantage"),
            )
        logps = sequence_logprobs(token_logps, mask)
        if self.objective.data == "pair":
            chosen, rejected = logps.chunk(2)
            return PairBatch(
                chosen_logps=chosen,
                rejected_logps=rejected,
                ref_chosen_logps=inputs.get("ref_chosen_logp"),
                ref_rejected_logps=inputs.get("ref_rejected_logp"),
            )
        rewards = inputs["rewards"]
        return RankedBatch(
            logps=logps.view(rewards.shape),
            lengths=mask.sum(-1).view(rewards.shape),
            rewards=rewards,
            candidate_mask=inputs["candidate_mask"],
        )

    # --- metrics ------------------------------------------------------------------------

    def _record(self, output: ObjectiveOutput, inputs: dict[str, torch.Tensor]) -> None:
        """Accumulate on the device; no .item() here, which would sync every micro-step."""
        if not self.model.training:
            return
        for name, value in output.metrics.items():
            self._metric_sums[name] += value.detach().float()
        self._metric_counts += 1
        self._tokens_seen += inputs["attention_mask"].sum()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_counts:
            logs.update(self._drain_metrics())
        super().log(logs, start_time)

    def _drain_metrics(self) -> dict[str, float]:
        names = sorted(self._metric_sums)
        stacked = torch.stack([self._metric_sums[n] / self._metric_counts for n in names])
        stacked = self.accelerator.reduce(stacked, reduction="mean")
        tokens = int(self.accelerator.reduce(self._tokens_seen, reduction="sum").item())
        now = time.perf_counter()
        metrics = dict(zip(names, stacked.tolist(), strict=True))
        metrics["throughput/tokens_per_second"] = tokens / max(now - self._last_log_time, 1e-9)
        self._metric_sums.clear()
        self._metric_counts = 0
        self._tokens_seen.zero_()
        self._last_log_time = now
        return metrics

    # --- evaluation ---------------------------------------------------------------------

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict:
        """Decode the validation prompts (each rank its share), score them, log mean reward."""
        if self.reward is None or not self.eval_prompts:
            raise ValueError("Evaluation needs a reward and eval_prompts.")
        model = self.accelerator.unwrap_model(self.model)
        mine = shard_indices(len(self.eval_prompts), self.args.process_index, self.args.world_size)
        prompts = [self.eval_prompts[i] for i in mine]
        responses = [
            r[0]
            for r in generate_responses(
                model, self.processing_class, prompts, self.generation_config, show_progress=False
            )
        ]
        scores = score(self.reward, prompts, responses, show_progress=False)
        gathered = _gather_objects(self.accelerator, list(zip(responses, scores, strict=True)))
        metrics = _eval_metrics(
            [r for r, _ in gathered], [s for _, s in gathered], metric_key_prefix
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        model.train()
        return metrics


def _eval_metrics(
    responses: list[str], scores: list[dict[str, float]], prefix: str
) -> dict[str, float]:
    metrics = {
        f"{prefix}_{'reward' if name == 'total' else 'reward/' + name}": sum(
            s[name] for s in scores
        )
        / len(scores)
        for name in scores[0]
    }
    metrics[f"{prefix}_distinct_2"] = distinct_n(responses, 2)
    metrics[f"{prefix}_length"] = sum(len(r.split()) for r in responses) / len(responses)
    return metrics


def _gather_objects(accelerator, items: list) -> list:
    if accelerator.num_processes == 1:
        return items
    from accelerate.utils import gather_object

    return gather_object(items)


class _PromptList(Dataset):
    """The validation prompts as a dataset, so Trainer's evaluation schedule switches on."""

    def __init__(self, prompts: list[str]):
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> str:
        return self.prompts[index]


def apply_lora(
    model: PreTrainedModel, peft_config: Any, gradient_checkpointing: bool
) -> PreTrainedModel:
    """Wrap with peft; checkpointed LoRA needs inputs that require grad to reach the adapters."""
    from peft import get_peft_model

    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)
