"""`AlolTrainer`: a `transformers.Trainer` that trains any objective of the registry.

The loop, accumulation, mixed precision, distributed wrapping and checkpointing are
Trainer's; alol adds three things: the sampler (priority sampling over the leftover lunch,
grouped by length), the loss (response log-probs → a pure objective from `alol.objectives`)
and the metrics (averaged over the logging window, read from the device once per log, not
once per step). Evaluation decodes the validation prompts and scores them with the reward, so
`metric_for_best_model="eval_reward"` selects checkpoints on validation reward.

Two places where alol deliberately departs from a plain `Trainer`:

- **The loss runs inside the wrapped model's forward.** `alol.logprobs` calls the decoder body
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

import json
import logging
import shutil
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import (
    PREFIX_CHECKPOINT_DIR,
    get_last_checkpoint,
    rotate_checkpoints,
)

from alol.advantage import PrioritySampler
from alol.batching import (
    Collator,
    ExampleDataset,
    LengthGroupedSampler,
    TokenBudgetBatchSampler,
    example_weight,
    rows_per_example,
)
from alol.compilation import compile_decoder_layers
from alol.data import padded_width
from alol.errors import AlolError
from alol.evaluate import distinct_n
from alol.generate import GenerationConfig, generate_responses
from alol.io import gather_in_order, replace_directory
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

logger = logging.getLogger(__name__)

SAMPLING_CHOICES = ("uniform", "advantage", "reward")
PARTIAL_CHECKPOINTS = ".partial"
"""Folder (inside the output folder) where a checkpoint is written before it is renamed into place."""
TRAINER_STATE_FILE = "trainer_state.json"


class CheckpointError(AlolError):
    """A checkpoint to resume from cannot be read."""


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
            "help": "torch.compile each decoder layer (regional compilation, alol.compilation). "
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
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={
            "help": "Pad each batch's length up to a multiple of this: fewer distinct shapes for "
            "compiled code and tensor-core friendly sizes, at the cost of some padding."
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
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")
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
        ensure_pad_token(processing_class)
        if args.vocab_chunk_size is not None and is_deepspeed_zero3_enabled():
            raise ValueError(
                "vocab_chunk_size reads the LM head's weight directly, which DeepSpeed ZeRO-3 "
                "keeps partitioned; use ZeRO-2 or FSDP, or leave vocab_chunk_size unset."
            )
        if peft_config is not None:
            model = apply_lora(model, peft_config, args.gradient_checkpointing)
        if args.compile_layers:
            compile_decoder_layers(model, args.compile_mode)
        self.objective: Objective = get_objective(args.objective)
        self.objective_config = args.objective_config()
        self.sample_weights = sample_weights
        self.reward = reward
        self.eval_prompts = eval_prompts
        self.generation_config = generation_config or GenerationConfig(
            max_new_tokens=args.max_response_length
        )
        self._partial_dir: Path | None = None  # set while a checkpoint is being written
        eval_dataset = _PromptList(eval_prompts) if eval_prompts and reward is not None else None
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=Collator(
                processing_class.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of
            ),
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
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["response_mask"],
                inputs["response_positions"],
            )
        output = self.objective.loss(
            self._objective_batch(token_logps, inputs), self.objective_config
        )
        self._record(output, inputs)
        loss = output.loss
        if self._token_budget is not None and model.training:
            loss = loss * example_weight(len(inputs["index"]), self._token_budget.mean_examples)
        return (loss, output) if return_outputs else loss

    def _response_token_logprobs(
        self, input_ids, attention_mask, response_mask, response_positions
    ) -> torch.Tensor:
        """The collator's positions and right padding keep this free of host syncs."""
        return response_token_logprobs(
            self.accelerator.unwrap_model(self.model),
            input_ids,
            attention_mask,
            response_mask,
            vocab_chunk_size=self.args.vocab_chunk_size,
            response_positions=response_positions,
            right_padded=self.data_collator.padding_side == "right",
        )

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

        def decode_and_score(indices: list[int]) -> list[tuple[str, dict[str, float]]]:
            prompts = [self.eval_prompts[i] for i in indices]
            responses = [
                r[0]
                for r in generate_responses(
                    model, self.processing_class, prompts, self.generation_config, False
                )
            ]
            scores = score(
                self.reward,
                prompts,
                responses,
                show_progress=False,
                timeout=self.args.reward_timeout,
                record_numbers=indices,
            )
            return list(zip(responses, scores, strict=True))

        gathered = gather_in_order(len(self.eval_prompts), decode_and_score)
        metrics = _eval_metrics(
            [r for r, _ in gathered], [s for _, s in gathered], metric_key_prefix
        )
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        model.train()
        return metrics

    # --- checkpoints --------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Trainer.train, refusing an unreadable checkpoint with a message that says what to do.

        `resume_from_checkpoint=True` resumes from the newest complete checkpoint; folders left
        by a save that a crash interrupted are never candidates, and are deleted here.
        """
        self._discard_partial_checkpoints()
        if resume_from_checkpoint is True:
            resume_from_checkpoint = newest_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(
                    f"no checkpoint to resume from in {self.args.output_dir}; "
                    "start without resuming"
                )
        if resume_from_checkpoint:
            check_checkpoint(Path(resume_from_checkpoint))
            resume_from_checkpoint = str(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """Let Trainer write `checkpoint-N` under `.partial/`, then rename it into place."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._discard_partial_checkpoints()
        self._partial_dir = run_dir / PARTIAL_CHECKPOINTS
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._partial_dir = None
        self._publish_checkpoint(run_dir / PARTIAL_CHECKPOINTS / name, run_dir / name)

    def _get_output_dir(self, trial) -> str:
        """While a checkpoint is being written: the `.partial/` folder it is written into."""
        if self._partial_dir is not None:
            return str(self._partial_dir)
        return super()._get_output_dir(trial)

    def _publish_checkpoint(self, written: Path, final: Path) -> None:
        # Every process has written its part (model shards, its RNG state) before the rename.
        self.accelerator.wait_for_everyone()
        if self.state.best_model_checkpoint == str(written):
            self.state.best_model_checkpoint = str(final)
            if self.args.should_save:  # the saved state must name the final folder too
                self.state.save_to_json(str(written / TRAINER_STATE_FILE))
        if self.args.should_save:
            replace_directory(written, final)
            written.parent.rmdir()  # the empty .partial/
            rotate_checkpoints(
                str(final.parent),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    def _discard_partial_checkpoints(self) -> None:
        partial = Path(self.args.output_dir) / PARTIAL_CHECKPOINTS
        if self.args.should_save and partial.exists():
            logger.info("removing %s, left by a checkpoint save that did not finish", partial)
            shutil.rmtree(partial)
        self.accelerator.wait_for_everyone()


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `output_dir`, if there is one."""
    if not Path(output_dir).is_dir():
        return None
    newest = get_last_checkpoint(str(output_dir))
    return None if newest is None else Path(newest)


def call_through_wrapper(
    wrapper: nn.Module, inner: nn.Module, method: Callable[..., Any], *args: Any
) -> Any:
    """`method(*args)`, run as the forward of `wrapper` (DDP, FSDP, a DeepSpeed engine, or
    `inner` itself when nothing wraps it).

    The wrapper's forward does work that calling `inner`'s submodules directly would skip:
    DDP arms its gradient all-reduce, FSDP and ZeRO-3 gather the parameters of the root
    module. For the one call, `inner.forward` is swapped for `method`, so that
    `wrapper(*args)` reaches `method` through every hook; it is restored as soon as `method`
    starts, so `method` may itself call `inner`'s real forward.
    """
    had_own_forward = "forward" in inner.__dict__  # accelerate patches forward per instance
    own_forward = inner.__dict__.get("forward")

    def restore() -> None:
        if had_own_forward:
            inner.forward = own_forward
        else:
            inner.__dict__.pop("forward", None)

    def redirected_forward(*forward_args: Any) -> Any:
        restore()
        return method(*forward_args)

    inner.forward = redirected_forward
    try:
        return wrapper(*args)
    finally:
        restore()


def check_checkpoint(checkpoint: Path) -> None:
    """Raise `CheckpointError` naming the first unreadable file of a checkpoint folder.

    Cheap checks that catch a truncated or damaged file before anything is loaded: JSON files
    parse, safetensors headers cover their files, and `torch.save` archives (zip) end with
    their directory.
    """
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist")
    if not (checkpoint / TRAINER_STATE_FILE).is_file():
        _refuse_checkpoint(checkpoint, f"{TRAINER_STATE_FILE} is missing")
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt"):
                    pass
            elif path.suffix in (".pt", ".pth", ".bin"):
                zipfile.ZipFile(path).close()
        except Exception as error:  # each reader raises its own type for a damaged file
            _refuse_checkpoint(
                checkpoint, f"{path.relative_to(checkpoint)} is unreadable ({error})"
            )
    try:
        TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_FILE))
    except (TypeError, ValueError) as error:  # readable JSON, but not a state Trainer wrote
        _refuse_checkpoint(checkpoint, f"{TRAINER_STATE_FILE} is not a Trainer state ({error})")


def _refuse_checkpoint(checkpoint: Path, problem: str) -> None:
    raise CheckpointError(
        f"cannot resume from checkpoint {checkpoint}: {problem}. Delete that folder to resume "
        "from the checkpoint before it, or rerun with --no-resume to start this stage over."
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Tokenizers such as Llama's and GPT-2's ship without a pad token: pad with EOS.

    Safe because batches mark padding with the attention mask, never by token id.
    """
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(
            "the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token"
        )
    tokenizer.pad_token = tokenizer.eos_token


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


class _PromptList(Dataset):
    """The validation prompts as a dataset, so Trainer's evaluation schedule switches on."""

    def __init__(self, prompts: list[str]):
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> str:
        return self.prompts[index]


def checkpointing_argument(enabled: bool) -> dict[str, bool]:
    """The TrainingArguments keyword that switches activation checkpointing, under the name this
    transformers uses: `activation_checkpointing` (5.x, which warns on the old name) or
    `gradient_checkpointing` (4.x). Both versions mirror the value into `gradient_checkpointing`,
    so code reading `args.gradient_checkpointing` works with either."""
    names = {f.name for f in fields(TrainingArguments)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": enabled}
    return {"gradient_checkpointing": enabled}


def apply_lora(
    model: PreTrainedModel, peft_config: Any, gradient_checkpointing: bool
) -> PreTrainedModel:
    """Wrap with peft; checkpointed LoRA needs inputs that require grad to reach the adapters."""
    from peft import get_peft_model

    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config)
