"""The frozen reference's one forward pass over (prompt, response) pairs: response-token
log-probs, and V(x) read off the prompt positions of the same pass.

With `ReferenceConfig.share_prompts`, all responses of a prompt are scored from ONE forward
over it: the prompt's KV cache is copied to each response (HH: p + 2r decoder tokens per
prompt instead of 2(p + r)). The numbers equal one forward per pair up to float rounding.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from alol.config import PipelineConfig
from alol.data.collate import collate_pairs, collate_prompt_groups
from alol.data.settings import RecordSettings
from alol.data.tokenize import TokenizedPair, pad_token_id_of, tokenize_pair
from alol.distributed import gather_in_order
from alol.errors import AlolError
from alol.method.value_head import values_from_sequence_states
from alol.models.compilation import compile_cache_free_parts, compile_decoder_layers
from alol.models.dtypes import DTYPES, dtype_named
from alol.models.logprobs import (
    causal_lm,
    position_ids_from_attention_mask,
    response_token_logprobs_and_hidden_states,
    token_logprobs_from_hidden_states,
)
from alol.setting_checks import same_as
from alol.training_settings import TrainingSettings

if TYPE_CHECKING:
    from alol.method.value_head import ValueHead

logger = logging.getLogger(__name__)
T = TypeVar("T")


class PromptCacheError(AlolError):
    """The reference's KV cache cannot be re-indexed, so a prompt's cache cannot be copied to
    each of its responses (`ReferenceConfig.share_prompts`)."""


@dataclass
class ReferenceConfig:
    """How the reference pass runs; only the length limits, the dtype and 4-bit weights change
    its numbers (and enter the cache key).

    `compile_layers` compiles the decoder layers before the pass: with `share_prompts`, their
    cache-free parts only (norms, MLP; `compile_cache_free_parts`), else whole layers.
    `share_prompts` copies a prompt's KV cache to each of its responses, which holds every
    layer's keys and values of each response's prompt + response (~0.5 MB per token for a 7B
    multi-head model in bf16); a model whose cache has no `batch_select_indices` falls back to
    one forward per pair with a warning, since the setting changes speed only."""

    batch_size: int = same_as(PipelineConfig, "precompute_batch_size")
    max_prompt_length: int = same_as(RecordSettings, "max_prompt_length")
    max_response_length: int = same_as(RecordSettings, "max_response_length")
    vocab_chunk_size: int | None = same_as(TrainingSettings, "vocab_chunk_size")
    reference_dtype: str = "float32"
    """The dtype of the reference's weights ("float32", "bfloat16" or "float16"). It changes
    the log-probs and V(x), so it enters the cache key; `prepare_reference` checks that the
    model it is given is in it. A policy trained in bf16 is compared with a bf16 reference."""
    show_progress: bool = True
    """Show progress bars."""
    compile_layers: bool = same_as(TrainingSettings, "compile_layers")
    compile_mode: str | None = same_as(TrainingSettings, "compile_mode")
    load_in_4bit: bool = same_as(PipelineConfig, "load_in_4bit")
    share_prompts: bool = same_as(PipelineConfig, "share_prompts")

    def __post_init__(self) -> None:
        dtype_named(self.reference_dtype, "reference_dtype")

    def key_fields(self) -> dict[str, Any]:
        """The settings that change the table's numbers, for `cache_key` (batching does not)."""
        fields: dict[str, Any] = {
            "max_prompt_length": self.max_prompt_length,
            "max_response_length": self.max_response_length,
            "reference_dtype": self.reference_dtype,
        }
        # Named only when on, so tables cached before the setting existed keep their keys.
        if self.load_in_4bit:
            fields["load_in_4bit"] = True
        return fields


def prepare_reference(model: torch.nn.Module, config: ReferenceConfig) -> None:
    """Check the model's dtype against the one the cache key names, and compile its layers."""
    check_reference_dtype(model, config)
    if config.compile_layers:
        if config.share_prompts:  # the prompt-shared pass runs the layers with a KV cache
            compile_cache_free_parts(model, config.compile_mode)
        else:
            compile_decoder_layers(model, config.compile_mode)


def check_reference_dtype(model: torch.nn.Module, config: ReferenceConfig) -> None:
    """The cache key names `config.reference_dtype`: a model in another dtype would cache
    numbers under the wrong name."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if dtype != DTYPES[config.reference_dtype]:
        name = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"the reference model's weights are {name} but ReferenceConfig.reference_dtype is "
            f"{config.reference_dtype!r}; set reference_dtype={name!r}, or load the model with "
            f"dtype=torch.{config.reference_dtype}"
        )


def prompt_groups(prompts: Sequence[Hashable]) -> list[list[int]]:
    """Indices of the records of each distinct prompt (its text, or its token ids), groups in
    order of first appearance. Equal texts tokenize alike, so a group shares its prompt ids
    (checked at collation)."""
    groups: dict[Hashable, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(index)
    return list(groups.values())


def gather_by_prompt_group(
    prompts: list[str], share_prompts: bool, compute: Callable[[list[int]], list[T]]
) -> list[T]:
    """Per-record results of `compute(record_indices)`, in record order on every process.

    Under several processes each one computes every world_size-th work unit: a prompt group
    (all records of one prompt text, so a prompt runs once) with `share_prompts`, else a record.
    """
    units = prompt_groups(prompts) if share_prompts else [[i] for i in range(len(prompts))]

    def compute_units(unit_numbers: list[int]) -> list[list[T]]:
        results = iter(compute([i for number in unit_numbers for i in units[number]]))
        return [[next(results) for _ in units[number]] for number in unit_numbers]

    ordered: list[Any] = [None] * len(prompts)
    for unit, unit_results in zip(units, gather_in_order(len(units), compute_units), strict=True):
        for index, result in zip(unit, unit_results, strict=True):
            ordered[index] = result
    return ordered


@torch.inference_mode()
def score_reference_batch(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    value_head: ValueHead | None = None,
    vocab_chunk_size: int | None = None,
    right_padded: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-token log-probs `[B, L]` and V(x) `[B]` (zeros without a value head) of one
    collated batch (either padding side; say `right_padded` for an attention-mask-free
    decoder, see `response_token_logprobs`), from ONE forward pass of the reference.

    V(x) reads the prompt positions' hidden states of that pass: they are those of the prompt
    alone, so no second forward over the prompts is needed. Put `model` in eval mode first.
    """
    attention_mask, response_mask = batch["attention_mask"], batch["response_mask"]
    token_logps, hidden = response_token_logprobs_and_hidden_states(
        model,
        batch["input_ids"],
        attention_mask,
        response_mask,
        vocab_chunk_size,
        response_positions=batch.get("response_positions"),
        right_padded=right_padded,
    )
    if value_head is None:
        return token_logps, torch.zeros(len(token_logps), device=token_logps.device)
    return token_logps, values_from_sequence_states(
        value_head, hidden, attention_mask, response_mask
    )


def reference_pass(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    value_head: ValueHead | None,
    config: ReferenceConfig,
) -> tuple[list[np.ndarray], list[float]]:
    """Each pair's response-token log-probs under `model` and V(x) of its prompt, in eval mode."""
    pairs = [
        tokenize_pair(
            tokenizer, prompt, response, config.max_prompt_length, config.max_response_length
        )
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    return score_tokenized_pairs(model, pairs, pad_token_id_of(tokenizer), value_head, config)


def score_tokenized_pairs(
    model: torch.nn.Module,
    pairs: list[TokenizedPair],
    pad_token_id: int,
    value_head: ValueHead | None,
    config: ReferenceConfig,
) -> tuple[list[np.ndarray], list[float]]:
    """`reference_pass` of pairs already tokenized; with `config.share_prompts`, the pairs of
    one prompt (the same prompt ids) run it once."""
    if value_head is not None:
        # A copy of the (tiny) head on the model's device: the hidden states stay where they are.
        value_head = copy.deepcopy(value_head).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()  # no dropout: the reference must score each pair deterministically
    try:
        if config.share_prompts:
            groups = prompt_groups([tuple(pair.prompt_ids) for pair in pairs])
            try:
                return _score_prompt_groups(model, pairs, groups, pad_token_id, value_head, config)
            except PromptCacheError as error:
                logger.warning("%s. Scoring every pair with its own prompt forward instead", error)
        return _score_pairs(model, pairs, pad_token_id, value_head, config)
    finally:
        model.train(was_training)


def sequence_logprobs_of_pairs(
    model: torch.nn.Module, pairs: list[TokenizedPair], config: ReferenceConfig
) -> list[float]:
    """log π(y|x) of each tokenized pair under `model`, in eval mode: what decoded answers
    (their generated tokens) weigh under π_ref."""
    pad_token_id = 0  # padding is masked out; any id embeds
    token_logps, _ = score_tokenized_pairs(model, pairs, pad_token_id, None, config)
    return [float(row.sum()) for row in token_logps]


def _score_pairs(
    model: torch.nn.Module,
    pairs: list[TokenizedPair],
    pad_token_id: int,
    value_head: ValueHead | None,
    config: ReferenceConfig,
) -> tuple[list[np.ndarray], list[float]]:
    """One forward over prompt + response per pair, `config.batch_size` pairs a batch."""
    # Longest first: similar lengths share a batch (little padding) and an OOM shows up at once.
    order = sorted(range(len(pairs)), key=lambda i: -pairs[i].length)
    batches = [
        order[start : start + config.batch_size]
        for start in range(0, len(order), config.batch_size)
    ]
    device = next(model.parameters()).device
    token_logps: list[np.ndarray] = [np.zeros(0, np.float32)] * len(pairs)
    values = [0.0] * len(pairs)
    for batch in tqdm(batches, desc="reference pass", disable=not config.show_progress):
        collated = collate_pairs([pairs[i] for i in batch], pad_token_id)
        collated = {key: tensor.to(device) for key, tensor in collated.items()}
        batch_logps, batch_values = score_reference_batch(
            model, collated, value_head, config.vocab_chunk_size, right_padded=True
        )
        _store_rows(
            batch, batch_logps, collated["response_mask"], batch_values, token_logps, values
        )
    return token_logps, values


def _score_prompt_groups(
    model: torch.nn.Module,
    pairs: list[TokenizedPair],
    groups: list[list[int]],
    pad_token_id: int,
    value_head: ValueHead | None,
    config: ReferenceConfig,
) -> tuple[list[np.ndarray], list[float]]:
    """One forward per distinct prompt, then one over its responses from the prompt's cache.
    Raises `PromptCacheError` on the first batch when the model's cache cannot be re-indexed."""
    device = next(model.parameters()).device
    token_logps: list[np.ndarray] = [np.zeros(0, np.float32)] * len(pairs)
    values = [0.0] * len(pairs)
    batches = _group_batches(groups, pairs, config.batch_size)
    for batch in tqdm(batches, desc="reference pass", disable=not config.show_progress):
        collated = collate_prompt_groups(
            [[pairs[i] for i in group] for group in batch], pad_token_id
        )
        collated = {key: tensor.to(device) for key, tensor in collated.items()}
        batch_logps, batch_values = score_shared_prompt_batch(
            model, collated, value_head, config.vocab_chunk_size
        )
        members = [i for group in batch for i in group]
        _store_rows(
            members, batch_logps, collated["response_mask"], batch_values, token_logps, values
        )
    return token_logps, values


def _group_batches(
    groups: list[list[int]], pairs: list[TokenizedPair], batch_size: int
) -> list[list[list[int]]]:
    """Whole groups per batch, up to `batch_size` responses (a larger group goes alone). Longest
    group (prompt + longest response) first, as `_score_pairs` orders pairs, for the same reasons."""
    longest_first = sorted(
        groups,
        key=lambda group: (
            -(len(pairs[group[0]].prompt_ids) + max(len(pairs[i].response_ids) for i in group))
        ),
    )
    batches: list[list[list[int]]] = []
    responses = 0
    for group in longest_first:
        if not batches or responses + len(group) > batch_size:
            batches.append([])
            responses = 0
        batches[-1].append(group)
        responses += len(group)
    return batches


def _store_rows(
    indices: list[int],
    batch_logps: torch.Tensor,
    response_mask: torch.Tensor,
    batch_values: torch.Tensor,
    token_logps: list[np.ndarray],
    values: list[float],
) -> None:
    """Row r of a batch belongs to pair `indices[r]`: keep its response positions' log-probs."""
    batch_logps, response_mask = batch_logps.cpu(), response_mask.cpu()
    for row, (index, value) in enumerate(zip(indices, batch_values.tolist(), strict=True)):
        token_logps[index] = batch_logps[row][response_mask[row]].numpy()
        values[index] = value


@torch.inference_mode()
def score_shared_prompt_batch(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    value_head: ValueHead | None = None,
    vocab_chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Response-token log-probs `[R, Lr]` (aligned with `response_input_ids`, 0 off-response)
    and V(x) `[R]` of a `collate_prompt_groups` batch, each prompt run ONCE for all its responses.

    The decoder runs over the distinct prompts with a KV cache; V(x) pools their states (once
    per prompt); the cache is copied to one row per response (`batch_select_indices`), and the
    responses run on it at positions that continue their prompt's. Causal attention makes these
    the states a forward over prompt + response gives, so the numbers equal
    `score_reference_batch`'s up to float rounding. Put `model` in eval mode first.
    """
    decoder = causal_lm(model).get_decoder()
    cache_name = _cache_argument_name(decoder)
    prompt_mask, owner = batch["prompt_attention_mask"], batch["owner"]
    response_ids, response_mask = batch["response_input_ids"], batch["response_mask"]
    prompt = decoder(
        input_ids=batch["prompt_input_ids"],
        attention_mask=prompt_mask,
        position_ids=position_ids_from_attention_mask(prompt_mask),
        use_cache=True,
    )
    cache = _one_cache_row_per_response(getattr(prompt, cache_name, None), owner)
    response_positions = torch.arange(response_ids.shape[1], device=response_ids.device)
    response_hidden = decoder(
        input_ids=response_ids,
        attention_mask=torch.cat([prompt_mask[owner], response_mask.long()], dim=1),
        position_ids=prompt_mask.sum(-1)[owner, None] + response_positions,
        use_cache=True,
        **{cache_name: cache},
    ).last_hidden_state
    # Response token 0 is predicted by its prompt's last state, token j > 0 by response state j-1.
    predicting = torch.cat([prompt.last_hidden_state[owner, -1:], response_hidden[:, :-1]], dim=1)
    logps = token_logprobs_from_hidden_states(
        model, predicting[response_mask], response_ids[response_mask], vocab_chunk_size
    )
    token_logps = torch.zeros(response_ids.shape, dtype=torch.float32, device=response_ids.device)
    token_logps = token_logps.masked_scatter(response_mask, logps)
    if value_head is None:
        return token_logps, torch.zeros(len(token_logps), device=token_logps.device)
    no_response = torch.zeros_like(prompt_mask, dtype=torch.bool)
    values = values_from_sequence_states(
        value_head, prompt.last_hidden_state, prompt_mask, no_response
    )
    return token_logps, values[owner.to(values.device)]


def _cache_argument_name(decoder: torch.nn.Module) -> str:
    """What the decoder calls its KV cache, in its arguments and outputs: `cache` in recent
    transformers 5.x (`past_key_values` there is deprecated, to be removed in 5.40), else
    `past_key_values` (4.46 and later 4.x)."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _one_cache_row_per_response(cache: Any, owner: torch.Tensor) -> Any:
    """The prompts' KV cache with row r holding prompt `owner[r]`, re-indexed in place."""
    if not hasattr(cache, "batch_select_indices"):
        raise PromptCacheError(
            f"the reference's KV cache ({type(cache).__name__}) has no batch_select_indices, so "
            "a prompt's cache cannot be copied to each of its responses; the setting "
            "share_prompts: false scores each pair with its own prompt forward from the start"
        )
    cache.batch_select_indices(owner)
    return cache
