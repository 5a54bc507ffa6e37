"""What every stage reads: the training, validation and test records (a validation split held
out by prompt when none is given), the base, reference and inference models, the configured
reward and its fingerprint, and one record tokenized for training. A stage resolves them once,
into `StageInputs`, and hands that down. Nothing here writes to the run directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from alol.config import PipelineConfig
from alol.data.conversions import to_reward_records
from alol.data.examples import Tokenize
from alol.data.formats import load_records
from alol.data.records import PreferenceRecord, Prompt, RankedRecord, RewardRecord
from alol.data.splits import prompt_key, split_by_prompt
from alol.data.tokenize import (
    TokenizedPair,
    ensure_pad_token,
    render_prompt,
    response_is_cut,
    tokenize_pair,
)
from alol.distributed import process_state
from alol.errors import AlolError
from alol.fingerprint import fingerprint_model, fingerprint_rendering, spec_fingerprint
from alol.models.dtypes import DTYPES
from alol.models.model_checks import check_loaded_weights, check_model
from alol.models.quantization import load_4bit_causal_lm
from alol.pipeline.settings import compute_dtype, load_options
from alol.provenance import check_made_for
from alol.reports.metrics import counted
from alol.rewards import Reward, load_reward
from alol.rewards.classifier import trained_settings
from alol.rewards.specs import nested_specs, normalize_spec
from alol.train.precision import bf16_is_native

logger = logging.getLogger(__name__)


@dataclass
class Splits:
    """Training records and the validation records held out from them (or loaded)."""

    train: list
    val: list
    held_out: bool = False
    """Whether `val` was held out from the training file (by prompt) rather than loaded."""

    def counts(self) -> dict[str, Any]:
        """What a stage's stats report about its data."""
        return {
            "train_records": len(self.train),
            "val_records": len(self.val),
            "val_prompts": len(unique_prompts(self.val)),
            "val_held_out_from_train": self.held_out,
        }


def load_data(path: str, cfg: PipelineConfig) -> list:
    """The records of `path`. Each stage of `alol run` reads the file again, but a skip or a
    duplicate is told once per process."""
    loaded = load_records(path, **load_options(cfg))
    if loaded.skipped:
        _tell_once(
            "%s: skipped %s (first: %s: %s)",
            path,
            counted(len(loaded.skipped), "invalid record"),
            *loaded.skipped[0],
        )
    if loaded.duplicates:
        _tell_once(
            "%s: %s an earlier record exactly; kept, so each copy weighs as much as a record of "
            "its own",
            path,
            counted(loaded.duplicates, "record repeats", "records repeat"),
        )
    return list(loaded.records)


_told: set[tuple] = set()


def _tell_once(message: str, *args: Any) -> None:
    if (message, *args) not in _told:
        _told.add((message, *args))
        logger.warning(message, *args)


def load_splits(cfg: PipelineConfig) -> Splits:
    if cfg.train_data is None:
        raise AlolError(
            "train_data is not set: pass --train-data FILE or set it in the YAML config."
        )
    records = load_data(cfg.train_data, cfg)
    if cfg.val_data is not None:
        return Splits(train=records, val=load_data(cfg.val_data, cfg))
    return hold_out_prompts(records, cfg.val_fraction, cfg.seed)


def without_cut_responses(cfg: PipelineConfig, splits: Splits, policy: str | Path) -> Splits:
    """With `cut_responses: drop`, the training records none of whose responses is longer than
    max_response_length under `policy`'s tokenizer: a response cut before its EOS teaches the
    policy not to end its answers. A pair or ranked record goes whole, so every objective
    sees the same records."""
    if cfg.cut_responses == "train":
        return splits
    tokenizer = load_tokenizer(policy)
    kept = [
        record
        for record in splits.train
        if not any(
            response_is_cut(tokenizer, response, cfg.max_response_length)
            for response in _responses_of(record)
        )
    ]
    if not kept:
        raise AlolError(
            f"cut_responses: drop leaves no training record: every one has a response longer "
            f"than max_response_length ({cfg.max_response_length} tokens); raise it, or set "
            "cut_responses: train"
        )
    dropped = len(splits.train) - len(kept)
    if dropped:
        _tell_once(
            "left out %d of %d training records, with a response longer than "
            "max_response_length (%d tokens; cut_responses: drop)",
            dropped,
            len(splits.train),
            cfg.max_response_length,
        )
    return replace(splits, train=kept)


def _responses_of(record) -> list[str]:
    if isinstance(record, RewardRecord):
        return [record.response]
    if isinstance(record, PreferenceRecord):
        return [record.chosen, record.rejected]
    if isinstance(record, RankedRecord):
        return list(record.responses)
    return []


CUT_RESPONSES_WARNING = 0.25
"""Share of cut training responses above which a stage warns: a cut response loses its EOS."""


def log_data(
    log: logging.Logger,
    stage: str,
    splits: Splits,
    cuts: dict[str, int],
    max_response_length: int,
) -> None:
    """One line on what a stage trains on: records, the validation hold-out, length cuts; and a
    warning when many responses are cut, since a response cut before its EOS teaches the
    policy to run on to the token budget instead of ending its answer."""
    counts = splits.counts()
    origin = "held out from the training file" if splits.held_out else "from val_data"
    log.info(
        "%s: %s; %s %s; of %s, %s and %s cut to the length limits",
        stage,
        counted(counts["train_records"], "training record"),
        counted(counts["val_prompts"], "validation prompt"),
        origin,
        counted(cuts["sequences"], "sequence"),
        counted(cuts["prompts_cut"], "prompt"),
        counted(cuts["responses_cut"], "response"),
    )
    share = cuts["responses_cut"] / max(1, cuts["sequences"])
    if share >= CUT_RESPONSES_WARNING:
        log.warning(
            "%s: %.0f%% of the responses it trains on are longer than max_response_length "
            "(%d tokens) and are cut before their EOS, which teaches the policy not to end its "
            "answers; raise max_response_length, or leave them out with cut_responses: drop",
            stage,
            100 * share,
            max_response_length,
        )


def pointwise_records(cfg: PipelineConfig, records: list) -> list[RewardRecord]:
    """The reward records SFT and the pointwise objectives train on (`cfg.train_responses`)."""
    return to_reward_records(records, preferred_only=cfg.train_responses == "preferred")


def hold_out_prompts(records: list, fraction: float, seed: int) -> Splits:
    """Split by prompt, so no validation prompt is also a training prompt; at least one prompt
    is held out when there are two or more."""
    keys = [prompt_key(r) for r in records]
    prompts = len(set(keys))
    train, val = split_by_prompt(
        keys, max(1, round(fraction * prompts)) if prompts > 1 else 0, seed
    )
    return Splits(train=[records[i] for i in train], val=[records[i] for i in val], held_out=True)


def unique_prompts(records: list) -> list:
    seen: dict[str, Any] = {}
    for record in records:
        seen.setdefault(prompt_key(record), record.prompt)
    return list(seen.values())


def load_tokenizer(path: str | Path):
    """The tokenizer saved with the model at `path`, with a pad token (batches are padded)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_model(path: str | Path, dtype: torch.dtype | None = None):
    check_model(path)
    return load_weights(path, dtype), load_tokenizer(path)


def load_weights(path: str | Path, dtype: torch.dtype | None = None):
    """The causal LM at `path` (a model `check_model` passed), every weight checked to have
    loaded."""
    model, loading_info = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True
    )
    check_loaded_weights(path, loading_info)
    return model


def load_weights_to_train(cfg: PipelineConfig, path: str | Path):
    """The weights a training stage starts from (a model `check_model` passed): full precision,
    or with `load_in_4bit` a 4-bit base (QLoRA), which trains adapters only."""
    if not cfg.load_in_4bit:
        return load_weights(path)
    if not cfg.lora:
        raise AlolError(
            "load_in_4bit: true trains LoRA adapters on a frozen 4-bit base (QLoRA), so it "
            "needs lora: true (--lora); 4-bit weights themselves cannot be trained."
        )
    # The trainer says once that bf16 falls back to float32 where it is not native.
    return load_4bit_causal_lm(path, compute_dtype(cfg.bf16 and bf16_is_native(), cfg.fp16))


def load_4bit_model(path: str | Path, compute_dtype: str):
    check_model(path)
    return load_4bit_causal_lm(path, compute_dtype), load_tokenizer(path)


def load_model_for_inference(path: str | Path, dtype: str = "float32", load_in_4bit: bool = False):
    """The model in `dtype` (a name of `alol.models.dtypes.DTYPES`; with `load_in_4bit` its linear
    layers in 4 bits, computing in `dtype`) on this process's device, for decoding and the
    precompute (Trainer places the models it trains itself)."""
    if load_in_4bit:
        return load_4bit_model(path, dtype)  # placed as it is quantized
    model, tokenizer = load_model(path, dtype=DTYPES[dtype])
    return model.to(process_state().device), tokenizer


def check_context_length(
    cfg: PipelineConfig, path: str | Path, *, training: bool = True, decoding: bool = False
) -> None:
    """Prompt plus response must fit the model's positions, or the forward pass ends in an
    `IndexError` deep inside the embedding. Checked up front for the responses a stage reads
    (`training`: `max_response_length`) and those it decodes (`decoding`: `max_new_tokens`,
    else `max_response_length`), naming the settings to lower."""
    config = AutoConfig.from_pretrained(path).get_text_config()
    limit = next(
        (
            getattr(config, name)
            for name in ("max_position_embeddings", "n_positions", "max_sequence_length")
            if getattr(config, name, None)
        ),
        None,
    )
    budgets = {"max_response_length": cfg.max_response_length} if training else {}
    if decoding:
        if cfg.max_new_tokens:
            budgets["max_new_tokens"] = cfg.max_new_tokens
        else:
            budgets["max_response_length"] = cfg.max_response_length
    for setting, response in budgets.items():
        if limit is not None and cfg.max_prompt_length + response > limit:
            raise AlolError(
                f"max_prompt_length ({cfg.max_prompt_length}) + {setting} ({response}) = "
                f"{cfg.max_prompt_length + response} tokens, but {path} reads at most {limit} "
                f"positions; lower --max-prompt-length or --{setting.replace('_', '-')} "
                f"so that they add up to {limit} or less."
            )


def reference_path(cfg: PipelineConfig) -> Path:
    path = Path(cfg.reference) if cfg.reference else cfg.root / "sft" / "model"
    if not path.exists():
        raise AlolError(
            f"no reference model at {path}: run `alol sft` first, or pass --reference with an "
            "existing SFT model."
        )
    check_model(path)
    return path


PLAIN_TEMPLATE = "no policy (the plain template)"
"""What a reward model's record names as its policy when none rendered its prompts."""

REWARD_MODEL_DIR = ("reward_model", "model")
"""Where `alol reward-model` saves the classifier, under the run directory."""


def reward_spec(cfg: PipelineConfig) -> Any:
    """The reward the stages score with: `cfg.reward`, or the reward model `alol reward-model`
    fitted (when `cfg.reward_model` names a backbone), or None (the data's stored rewards)."""
    if cfg.reward is not None or cfg.reward_model is None:
        return cfg.reward
    model = cfg.root.joinpath(*REWARD_MODEL_DIR)
    if not (model / "config.json").is_file():
        raise AlolError(
            f"no reward model in {model}: fit it first with `alol reward-model` and the same "
            "config, or run every stage with `alol run`"
        )
    return {"type": "classifier", "path": str(model), "name": "reward_model"}


def policy_tokenizer(cfg: PipelineConfig) -> tuple[str | None, Any]:
    """The policy whose chat template renders prompts even before π_ref exists (as the
    reward-model stage renders them) and its tokenizer; (None, None) when none is named."""
    policy = cfg.reference or cfg.model
    if policy is None:
        return None, None
    check_model(policy)
    return policy, AutoTokenizer.from_pretrained(policy)


def check_reward_model_prompts(cfg: PipelineConfig, spec: Any) -> None:
    """A reward model `alol reward-model` fitted has read prompts as one policy's chat
    template renders them; another template would show it text it never saw."""
    folders = _classifier_folders(normalize_spec(spec))
    recorded = [(f, trained_settings(f).get("policy")) for f in folders]
    if not any(record for _, record in recorded):
        return
    policy, tokenizer = policy_tokenizer(cfg)
    rendering = fingerprint_rendering(tokenizer, cfg.string_prompts)
    for folder, record in recorded:
        if record is not None:
            check_made_for(
                f"the reward model {folder}, fitted on prompts rendered by a policy's template,",
                record,
                policy or PLAIN_TEMPLATE,
                rendering,
                "fit it again for this model's prompts with `alol reward-model` and this "
                "config (or `alol run`)",
            )


def _classifier_folders(spec: dict[str, Any]) -> list[Path]:
    if spec["type"] == "classifier":
        return [Path(spec["path"])]
    return [folder for part in nested_specs(spec) for folder in _classifier_folders(part)]


@dataclass(frozen=True)
class StageInputs:
    """What a stage reads, resolved once when it starts and handed to everything it calls: π_ref
    (checked) and its fingerprint, the records, the reward's spec and fingerprint. It holds no
    weights: a stage loads those (the reward's too) once it knows it has work to do."""

    cfg: PipelineConfig
    reference: Path
    reference_fingerprint: str
    splits: Splits | None
    """None only where the config names no training data (`alol eval` runs without)."""
    train_pairs: list[RewardRecord]
    """The training records as reward records (`pointwise_records`): the rows of the advantage
    table and what the pointwise objectives train on."""
    reward_spec: Any
    """`reward_spec(cfg)`: None when the data's stored rewards are the reward."""
    reward_fingerprint: str | None

    def load_reward(self) -> Reward | None:
        """The reward itself (a classifier's weights load here): once, when a stage needs it."""
        if self.reward_spec is None:
            return None
        check_reward_model_prompts(self.cfg, self.reward_spec)
        return load_reward(self.reward_spec)


def stage_inputs(
    cfg: PipelineConfig, *, training: bool = True, decoding: bool = False, records: bool = True
) -> StageInputs:
    """A stage's `StageInputs`: π_ref's context checked for the responses the stage reads
    (`training`) and decodes (`decoding`); the training and validation records unless `records`
    is False."""
    reference = reference_path(cfg)
    check_context_length(cfg, reference, training=training, decoding=decoding)
    splits = without_cut_responses(cfg, load_splits(cfg), reference) if records else None
    spec = reward_spec(cfg)
    return StageInputs(
        cfg=cfg,
        reference=reference,
        reference_fingerprint=fingerprint_model(reference),
        splits=splits,
        train_pairs=[] if splits is None else pointwise_records(cfg, splits.train),
        reward_spec=spec,
        reward_fingerprint=None if spec is None else spec_fingerprint(spec),
    )


def render(cfg: PipelineConfig, prompt, tokenizer) -> str:
    """A record's prompt as the model sees it (`cfg.string_prompts` for plain strings)."""
    return render_prompt(prompt, tokenizer, cfg.string_prompts)


def tokenize_with(cfg: PipelineConfig, tokenizer) -> Tokenize:
    """(prompt, response) → token ids, rendered and cut as `cfg` says: how every training
    example is tokenized."""

    def tokenize(prompt: Prompt, response: str) -> TokenizedPair:
        text = render(cfg, prompt, tokenizer)
        return tokenize_pair(
            tokenizer, text, response, cfg.max_prompt_length, cfg.max_response_length
        )

    return tokenize


def load_policy_for_eval(path: Path, dtype: str = "float32", base: Path | None = None):
    """A final model folder holds full weights or a LoRA adapter over π_ref; either is loaded
    in `dtype` (a name of `alol.models.dtypes.DTYPES`) on this process's device. An adapter is
    merged into the weights (decoding then runs at the base model's speed): into `base`, the
    π_ref it was trained from, where given, as its own config names the folder π_ref was loaded
    from, which a moved run folder no longer has; else into that one."""
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM, PeftModel

        if base is None:
            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
        else:
            model = PeftModel.from_pretrained(load_weights(base, DTYPES[dtype]), path)
        model = model.merge_and_unload()
        return model.to(process_state().device), load_tokenizer(path)
    return load_model_for_inference(path, dtype)
