"""`AlolTrainer`: a `transformers.Trainer` that trains any objective of the registry.

The loop, accumulation, mixed precision, distributed wrapping and checkpointing are
Trainer's; alol adds three things: the sampler (priority sampling over the leftover lunch,
grouped by length), the loss (response log-probs → a pure objective from `alol.method.objectives`)
and the metrics (averaged over the logging window, read from the device once per log, not
once per step). Evaluation decodes the validation prompts and scores them with the reward, so
`metric_for_best_model="eval_reward"` selects checkpoints on validation reward (or `select_by`'s judges), never a
degenerate one (collapsed, rambling or looping against the pass before the first step) while
another is not (`alol.train.selection`).

Two places where alol deliberately departs from a plain `Trainer`:

- **The loss runs inside the wrapped model's forward.** `alol.models.logprobs` calls the decoder body
  and the output embedding directly (so the LM head meets response positions only). Under DDP,
  FSDP or DeepSpeed, `compute_loss` receives the *wrapper*; calling submodules of the inner
  model would bypass the wrapper's forward, where DDP arms its gradient all-reduce (without it,
  every rank silently keeps its own gradients) and FSDP/ZeRO-3 gather the root's parameters.
  `call_through_wrapper` therefore runs the log-prob computation *as* the wrapper's forward:
  the forward redirection of PyTorch Lightning, which TRL adopted for the same reason
  (huggingface/trl#5934, #7246). Accelerate applies mixed precision by patching the inner
  forward, which the redirection replaces for that call, so `compute_loss` enters
  `accelerator.autocast()` itself.
- **Checkpoints appear atomically.** transformers' Trainer writes `checkpoint-N/` file by
  file; a kill mid-save leaves a torn folder that `resume_from_checkpoint=True` would pick.
  AlolTrainer writes each checkpoint under `.partial/` in the output folder and renames it
  into place once every process has finished writing, and checks a checkpoint's files before
  resuming from it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_callback import ProgressCallback

from alol.data.batching import LengthGroupedSampler, TokenBudgetBatchSampler, example_weight
from alol.data.collate import MISMATCHED, Collator, padded_width
from alol.data.examples import ExampleDataset, check_blocks, rows_per_example
from alol.data.tokenize import ensure_pad_token
from alol.method.batches import ObjectiveOutput, objective_batch
from alol.method.objectives import Objective, get_objective
from alol.method.sampling import BlockSampler, PrioritySampler
from alol.models.compilation import compile_decoder_layers
from alol.models.dropout import without_dropout
from alol.models.generate import GenerationConfig
from alol.models.logprobs import (
    packed_response_token_logprobs,
    response_token_logprobs,
    sequence_logprobs,
)
from alol.models.quantization import is_quantized, prepare_for_adapters
from alol.rewards import Reward
from alol.train.checkpoints import AtomicCheckpoints
from alol.train.config import AlolConfig
from alol.train.progress import QuietProgressCallback
from alol.train.record_examples import examples_from_records
from alol.train.selection import REWARD, PromptList, ValidatedCheckpoints, selection_weights
from alol.train.wrapping import apply_lora, call_through_wrapper

logger = logging.getLogger(__name__)


class AlolTrainer(AtomicCheckpoints, ValidatedCheckpoints, Trainer):
    """Trains `args.objective` on an `ExampleDataset` built by `alol.pipeline`, or on records:
    a `datasets.Dataset` or list of rows in alol's record formats (`alol.train.record_examples`
    tokenizes them and precomputes what the objective needs, as TRL's trainers take datasets).

    `sample_weights` (aligned with an `ExampleDataset`) drive priority sampling; None samples
    uniformly (records get the objective's own weights). `reward` and `eval_prompts` (rendered
    prompt texts) enable validation by decoding and scoring. `start_validation_file` keeps the
    validation before the first step: trainers of several objectives from the same π_ref, with
    the same validation, given the same file decode π_ref's answers once.
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: AlolConfig,
        train_dataset: ExampleDataset | Iterable[dict[str, Any]] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        sample_weights: list[float] | None = None,
        reward: Reward | None = None,
        eval_prompts: list[str] | None = None,
        generation_config: GenerationConfig | None = None,
        callbacks: list | None = None,
        judges: dict[str, Reward] | None = None,
        start_validation_file: Path | None = None,
    ):
        if isinstance(model, str):
            processing_class = processing_class or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if processing_class is None:
            raise ValueError("Pass processing_class= (the tokenizer) when model is an object.")
        ensure_pad_token(processing_class)
        if args.disable_dropout:
            without_dropout(model)
        if args.vocab_chunk_size is not None and is_deepspeed_zero3_enabled():
            raise ValueError(
                "vocab_chunk_size reads the LM head's weight directly, which DeepSpeed ZeRO-3 "
                "keeps partitioned; use ZeRO-2 or FSDP, or leave vocab_chunk_size unset."
            )
        self.objective: Objective = get_objective(args.objective)
        quantized = is_quantized(model)
        if quantized and peft_config is None:
            raise ValueError(
                "the model has 4-bit (or 8-bit) bitsandbytes weights, which cannot be trained: "
                "pass peft_config= (a LoraConfig) to train adapters on it (QLoRA)"
            )
        if self.objective.data == "unpaired" and args.max_tokens_per_batch is not None:
            raise ValueError(
                "kto trains on whole batches whose mismatched pairs were formed together; "
                "max_tokens_per_batch would cut them differently: leave it unset"
            )
        if train_dataset is not None and not isinstance(train_dataset, ExampleDataset):
            # before any adapter: the model is π_ref now, whose log-probs are precomputed.
            # A quantized model was placed on its device as it was quantized.
            train_dataset, weights = examples_from_records(
                train_dataset,
                self.objective,
                model if quantized else model.to(args.device),
                processing_class,
                args,
            )
            sample_weights = sample_weights if sample_weights is not None else weights
        if self.objective.data == "unpaired":
            check_blocks(train_dataset, args.per_device_train_batch_size)
        if quantized:
            model = prepare_for_adapters(model, args.gradient_checkpointing)
        if peft_config is not None:
            model = apply_lora(model, peft_config, args.gradient_checkpointing, args.seed)
        if args.compile_layers:
            compile_decoder_layers(model, args.compile_mode)
        self.objective_config = args.objective_config()
        self.sample_weights = sample_weights
        self.reward = reward
        self.judges = judges or {}
        missing = [
            n for n in selection_weights(args.select_by) if n != REWARD and n not in self.judges
        ]
        if missing:
            raise ValueError(
                f"select_by {args.select_by!r} names {', '.join(map(repr, missing))}, which is not "
                f"among the judges given ({', '.join(self.judges) or 'none'})"
            )
        self.eval_prompts = eval_prompts
        self.generation_config = generation_config or GenerationConfig()
        self.start_validation_file = start_validation_file
        eval_dataset = PromptList(eval_prompts) if eval_prompts and reward is not None else None
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=Collator(
                processing_class.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                packing=args.packing,
            ),
            processing_class=processing_class,
            callbacks=callbacks,
        )
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(QuietProgressCallback)
        # compute_loss returns a per-example mean over equal-sized micro-batches, so Trainer's
        # division by the accumulation steps yields the mean over the whole global batch.
        self.loss_is_scaled_for_ga = False
        self._metric_sums: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros((), device=args.device)
        )
        self._metric_seen: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros((), device=args.device)
        )
        self._metric_counts = 0
        self._tokens_seen = torch.zeros((), device=args.device, dtype=torch.long)
        self._token_budget: TokenBudgetBatchSampler | None = None  # set with the train loader
        self._last_log_time = time.perf_counter()

    # --- sampling -----------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler[int]:
        """The global stream of draws; every process builds the same one.

        accelerate's prepared dataloader cuts the stream into per-device batches and deals them
        out in turn (process 0 takes batch 0, process 1 batch 1, ...), so the processes share
        the draws of one global priority sample without overlap. Length grouping works on whole
        global batches, so batch 1 x accumulation 8 and batch 8 x accumulation 1 (or 2 devices x
        4) put the same examples into each optimizer step.
        """
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.objective.data == "unpaired":  # whole KTO batches, as their pairs were formed
            return BlockSampler(
                len(dataset),
                self.args.per_device_train_batch_size,
                self._num_draws(len(dataset)),
                self.args.seed,
            )
        sampler = self._priority_sampler(dataset, self._num_draws(len(dataset)))
        if not self.args.group_by_length:
            return sampler
        return LengthGroupedSampler(
            sampler, dataset.lengths, self._global_batch_size(), seed=self.args.seed
        )

    def get_train_dataloader(self) -> DataLoader:
        """Trainer's loader, or one over token-budget batches when `max_tokens_per_batch` is set."""
        if self.args.max_tokens_per_batch is None:
            return super().get_train_dataloader()
        dataset = self.train_dataset
        multiple = self.args.pad_to_multiple_of
        self._token_budget = TokenBudgetBatchSampler(
            self._priority_sampler(dataset, num_samples=1),  # only its endless draws() are read
            [padded_width(length, multiple) for length in dataset.lengths],  # as collated
            rows_per_example(dataset),
            self.args.max_tokens_per_batch,
            num_batches=self.args.max_steps
            * self.args.gradient_accumulation_steps
            * self.args.world_size,
            seed=self.args.seed,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=self._token_budget,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _priority_sampler(self, dataset: Dataset, num_samples: int) -> PrioritySampler:
        return PrioritySampler(
            indices=list(range(len(dataset))),
            weights=self.sample_weights,
            num_samples=num_samples,
            seed=self.args.seed,
            in_passes=self.args.sample_in_passes,
        )

    def _global_batch_size(self) -> int:
        return (
            self.args.per_device_train_batch_size
            * self.args.gradient_accumulation_steps
            * self.args.world_size
        )

    def _num_draws(self, dataset_size: int) -> int:
        """Draws per epoch: exactly the step budget when max_steps is set, else one dataset's
        worth rounded up to whole global batches (so no process is padded with repeats)."""
        global_batch = self._global_batch_size()
        if self.args.max_steps > 0:
            return self.args.max_steps * global_batch
        return -(-dataset_size // global_batch) * global_batch

    # --- loss ---------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`model` is what Trainer trains: the bare model, or its DDP/FSDP/DeepSpeed wrapper."""
        with self.accelerator.autocast():
            token_logps = call_through_wrapper(
                model,
                self.accelerator.unwrap_model(model),
                self._response_token_logprobs,
                inputs,
            )
            mismatched = self._mismatched_logps(model, inputs)
        kl = None
        if mismatched is not None and self.args.world_size > 1:
            # TRL's reference point: the KL estimate averaged over every process's batch
            kl = self.accelerator.reduce(
                (mismatched - inputs["ref_mismatched_logp"]).mean(), "mean"
            )
        batch = objective_batch(self.objective.data, token_logps, inputs, mismatched, kl)
        output = self.objective.loss(batch, self.objective_config)
        self._record(output, inputs)
        loss = output.loss
        if self._token_budget is not None and model.training:
            loss = loss * example_weight(len(inputs["index"]), self._token_budget.mean_examples)
        return (loss, output) if return_outputs else loss

    def _response_token_logprobs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The collator's positions and right padding keep this free of host syncs; a packed
        batch runs padding-free (`AlolConfig.packing`)."""
        model = self.accelerator.unwrap_model(self.model)
        if "packed_input_ids" in inputs:
            return packed_response_token_logprobs(
                model,
                inputs["packed_input_ids"],
                inputs["packed_position_ids"],
                inputs["packed_response_columns"],
                inputs["response_positions"],
                inputs["response_mask"].shape,
                self.args.vocab_chunk_size,
            )
        input_ids, response_positions = inputs["input_ids"], inputs["response_positions"]
        return response_token_logprobs(
            model,
            input_ids,
            inputs["attention_mask"],
            inputs["response_mask"],
            vocab_chunk_size=self.args.vocab_chunk_size,
            response_positions=response_positions,
            right_padded=self.data_collator.padding_side == "right",
        )

    @torch.no_grad()
    def _mismatched_logps(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """KTO: log π_θ of the batch's mismatched pairs, without gradients (as TRL's KL pass)."""
        if self.objective.data != "unpaired":
            return None
        pairs = {
            k.removeprefix(MISMATCHED): v for k, v in inputs.items() if k.startswith(MISMATCHED)
        }
        token_logps = call_through_wrapper(
            model, self.accelerator.unwrap_model(model), self._response_token_logprobs, pairs
        )
        return sequence_logprobs(token_logps, pairs["response_mask"])

    # --- metrics ------------------------------------------------------------------------

    def _record(self, output: ObjectiveOutput, inputs: dict[str, torch.Tensor]) -> None:
        """Accumulate on the device; no .item() here, which would sync every micro-step. A NaN
        metric (KTO's class a batch lacks) is left out of its mean, as TRL leaves it out."""
        if not self.model.training:
            return
        for name, value in output.metrics.items():
            value = value.detach().float()
            present = ~value.isnan()
            self._metric_sums[name] += torch.where(present, value, 0.0)
            self._metric_seen[name] += present
        self._metric_counts += 1
        self._tokens_seen += inputs["attention_mask"].sum()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metric_counts:
            logs.update(self._drain_metrics())
        super().log(logs, start_time)

    def _drain_metrics(self) -> dict[str, float]:
        names = sorted(self._metric_sums)
        sums = torch.stack([self._metric_sums[n] for n in names])
        seen = torch.stack([self._metric_seen[n] for n in names])
        sums, seen = self.accelerator.reduce(torch.stack([sums, seen]), reduction="sum")
        tokens = int(self.accelerator.reduce(self._tokens_seen, reduction="sum").item())
        now = time.perf_counter()
        metrics = {
            name: total / count
            for name, total, count in zip(names, sums.tolist(), seen.tolist(), strict=True)
            if count
        }
        metrics["throughput/tokens_per_second"] = tokens / max(now - self._last_log_time, 1e-9)
        self._metric_sums.clear()
        self._metric_seen.clear()
        self._metric_counts = 0
        self._tokens_seen.zero_()
        self._last_log_time = now
        return metrics
