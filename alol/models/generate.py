"""Batched decoding for value data and evaluation: left-padded, length-sorted, seeded.

Prompts arrive already rendered (see `alol.data.tokenize.render_prompt`), so nothing here adds
special tokens beyond what rendering wrote. Under `accelerate`, unwrap the model first
(`accelerator.unwrap_model`) and give each process its share with `shard_indices`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import GenerationConfig as HFGenerationConfig
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module

from alol.config import PipelineConfig
from alol.data.batching import length_sorted_batches
from alol.data.collate import pad_token_rows
from alol.data.settings import RecordSettings
from alol.data.tokenize import encode_prompt, pad_token_id_of
from alol.setting_checks import same_as


@dataclass
class GenerationConfig:
    """How to decode. Fields not listed here follow `model.generation_config`, but for the
    number of beams: always 1, each row one answer."""

    max_new_tokens: int = same_as(RecordSettings, "max_response_length")
    do_sample: bool = same_as(PipelineConfig, "do_sample")
    temperature: float = same_as(PipelineConfig, "temperature")
    top_p: float = same_as(PipelineConfig, "top_p")
    top_k: int = 0
    """Top-k filter when sampling; 0 turns it off (transformers would otherwise apply 50)."""
    num_return_sequences: int = 1
    """Responses per prompt (k); more than one needs `do_sample=True`."""
    batch_size: int = same_as(PipelineConfig, "generation_batch_size")
    seed: int = same_as(PipelineConfig, "seed")
    max_prompt_length: int = same_as(RecordSettings, "max_prompt_length")
    chunk_tokens: int = 16
    """New tokens per `generate` call. Between calls the answers that ended leave the batch and
    its KV cache, so a batch stops paying for them: one long answer no longer keeps every
    finished one decoding to the budget. Greedy answers are those of one call; at or above
    `max_new_tokens`, decoding is one call (see `bench.decode_chunks` for the time saved)."""

    def __post_init__(self) -> None:
        for name in (
            "max_new_tokens",
            "num_return_sequences",
            "batch_size",
            "max_prompt_length",
            "chunk_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"GenerationConfig.{name} must be at least 1, got {getattr(self, name)}"
                )
        if self.num_return_sequences > 1 and not self.do_sample:
            raise ValueError(
                f"num_return_sequences={self.num_return_sequences} needs do_sample=True: "
                "greedy decoding would return the same response every time"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be positive, got {self.temperature}; use do_sample=False for greedy"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")

    def deciding_settings(self) -> dict[str, Any]:
        """The settings that decide the answers, for the fingerprint of a stage that keeps them.
        Greedy answers are the same at any `chunk_tokens`, so a finished stage stays up to date
        when only the chunk size changes (or when it was decoded before chunks existed); sampled
        answers are not (the rows still decoding draw each step's random numbers)."""
        settings = asdict(self)
        if not self.do_sample:
            del settings["chunk_tokens"]
        return settings


class Answer(NamedTuple):
    text: str
    """The decoded response, up to (not including) its EOS."""
    finished: bool
    """Whether it ended with EOS, rather than being cut at `max_new_tokens`."""
    token_ids: tuple[int, ...] = ()
    """The tokens generated, EOS included when it finished: what a model's log-prob of its own
    answer is taken over (decoding the text and encoding it again need not give them back)."""
    logp: float | None = None
    """log π(token_ids | prompt) under the decoding model at temperature 1, whatever the
    sampling settings: read off the decoding steps' raw logits (`generate_answers`'s
    `with_logps`), else None."""


def generate_responses(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    show_progress: bool = True,
) -> list[list[str]]:
    """Decode `config.num_return_sequences` responses for each rendered prompt, in prompt order."""
    answers = generate_answers(model, tokenizer, prompts, config, show_progress)
    return [[answer.text for answer in per_prompt] for per_prompt in answers]


def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    config: GenerationConfig,
    show_progress: bool = True,
    with_logps: bool = False,
) -> list[list[Answer]]:
    """`generate_responses`, telling for each response whether it finished (reached EOS), and
    with `with_logps` its log-prob under the model.

    Prompts are batched longest-first by token length so each batch carries little padding
    (and an out-of-memory error shows up in the first batch, not the last). The log-probs come
    from the logits each decoding step computes anyway, so an evaluation that weighs a model's
    answers under it needs no second pass over them; they hold one chunk's logits at a time
    (`chunk_tokens` × rows × vocabulary floats). Where decoding is one call
    (`decodes_in_one_call`) that is the whole budget's, until the call ends: on one process a
    caller short of memory weighs the answers by a forward pass instead, as the evaluation does.
    Where weights are sharded over processes, each process decodes as many batches as the
    others (`filler_batches`).
    """
    pad_token_id = pad_token_id_of(tokenizer)
    prompt_ids = [encode_prompt(tokenizer, prompt, config.max_prompt_length) for prompt in prompts]
    hf_config = _hf_generation_config(config, tokenizer, pad_token_id)
    device = next(model.parameters()).device
    responses: list[list[Answer]] = [[] for _ in prompts]

    batches = length_sorted_batches([len(ids) for ids in prompt_ids], config.batch_size)
    fillers = filler_batches(model, len(batches), device)
    was_training = model.training
    model.eval()  # dropout off: greedy decoding must be deterministic
    try:
        with (
            torch.inference_mode(),
            _seeded(config.seed, device),
            tqdm(
                total=len(prompts), desc="generating", unit="prompt", disable=not show_progress
            ) as progress,
        ):
            for batch in batches:
                input_ids, attention_mask = pad_token_rows(
                    [prompt_ids[i] for i in batch], pad_token_id, "left"
                )
                # A prompt's k samples are consecutive rows, as generate would lay them out.
                k = config.num_return_sequences
                decoded = decode_until_all_end(
                    model,
                    input_ids.repeat_interleave(k, dim=0).to(device),
                    attention_mask.repeat_interleave(k, dim=0).to(device),
                    hf_config,
                    config.max_new_tokens,
                    config.chunk_tokens,
                    with_logps,
                )
                logps = decoded.token_logps or [None] * len(decoded.tokens)
                for row, index in enumerate(batch):
                    rows = range(row * k, (row + 1) * k)
                    responses[index] = [
                        answer_of(tokenizer, decoded.tokens[r], logps[r]) for r in rows
                    ]
                progress.update(len(batch))
            filler = torch.tensor([prompt_ids[0] if prompt_ids else [pad_token_id]], device=device)
            for _ in range(fillers):
                decode_until_all_end(
                    model,
                    filler,
                    torch.ones_like(filler),
                    hf_config,
                    config.max_new_tokens,
                    config.chunk_tokens,
                )
    finally:
        model.train(was_training)
    return responses


GENERATE_CACHE = (
    "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"
)
"""What `generate` calls the KV cache it takes and returns: `cache` from transformers 5.24
(`past_key_values` is deprecated there), `past_key_values` before."""


class DecodedRows(NamedTuple):
    tokens: list[list[int]]
    """Each row's new tokens; padding may follow its EOS."""
    token_logps: list[list[float]] | None
    """Each new token's log-prob under the model at temperature 1 (None when not asked for)."""


def decode_until_all_end(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    hf_config: HFGenerationConfig,
    max_new_tokens: int,
    chunk_tokens: int,
    with_logps: bool = False,
) -> DecodedRows:
    """Each row's new tokens, `chunk_tokens` at a time, the rows that ended dropped between
    chunks; in one call where rows cannot leave (`decodes_in_one_call`)."""
    chunk = max_new_tokens if decodes_in_one_call(model) else chunk_tokens
    tokens: list[list[int]] = [[] for _ in range(len(input_ids))]
    token_logps = [[] for _ in tokens] if with_logps else None
    rows = list(range(len(input_ids)))
    cache = None
    left = max_new_tokens
    while True:
        sequences, cache, chunk_logps = _generate_chunk(
            model, input_ids, attention_mask, cache, hf_config, min(chunk, left), with_logps
        )
        new = sequences[:, input_ids.shape[1] :]
        left -= new.shape[1]
        going = []
        logps_of_rows = chunk_logps.tolist() if token_logps is not None else None  # one copy
        for position, (row, ids) in enumerate(zip(rows, new.tolist(), strict=True)):
            tokens[row] += ids
            if logps_of_rows is not None:
                token_logps[row] += logps_of_rows[position]
            if hf_config.eos_token_id not in ids:
                going.append(position)
        if not going or left == 0:
            return DecodedRows(tokens, token_logps)
        keep = torch.tensor(going, dtype=torch.long, device=input_ids.device)
        rows = [rows[position] for position in going]
        cache.batch_select_indices(keep)
        input_ids = sequences[keep]
        attention_mask = torch.cat([attention_mask, torch.ones_like(new)], dim=1)[keep]


def decodes_in_one_call(model) -> bool:
    """A cache other than the default dynamic one (a static cache is laid out for its batch),
    or weights sharded over processes."""
    return bool(model.generation_config.cache_implementation) or sharded_over_processes(model)


def sharded_over_processes(model) -> bool:
    """Weights sharded over processes (ZeRO-3, FSDP): every step of a forward gathers them
    from all processes, so transformers keeps every process stepping until all are done, and
    none may stop early nor run a forward the others do not."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    sharded = is_deepspeed_zero3_enabled() or is_fsdp_managed_module(base)
    return sharded and dist.is_initialized() and dist.get_world_size() > 1


def filler_batches(model, own: int, device: torch.device) -> int:
    """How many batches this process decodes and drops after its `own`, so that each process
    calls generate as often as the busiest where weights are sharded over processes: shards of
    one prompt more can make one batch more, and the others would wait for its steps forever."""
    if not sharded_over_processes(model):
        return 0
    most = torch.tensor(own, device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most) - own


def _generate_chunk(
    model,
    input_ids,
    attention_mask,
    cache,
    hf_config: HFGenerationConfig,
    max_new_tokens: int,
    with_logps: bool,
) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
    """Up to `max_new_tokens` more tokens for every row, continuing from `cache` (None at
    first): the rows' tokens so far, the cache that holds them and, `with_logps`, each new
    token's log-prob `[rows, steps]` from that step's raw logits (before any sampling setting
    reshapes them), which are let go before the next chunk."""
    chunk_config = copy.deepcopy(hf_config)
    chunk_config.max_new_tokens = max_new_tokens
    chunk_config.return_dict_in_generate = True
    chunk_config.output_logits = with_logps
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=chunk_config,
        **{GENERATE_CACHE: cache},
    )
    new = output.sequences[:, input_ids.shape[1] :]
    logps = chosen_token_logps(output.logits, new) if with_logps else None
    return output.sequences, getattr(output, GENERATE_CACHE), logps


def chosen_token_logps(step_logits: tuple[torch.Tensor, ...], new: torch.Tensor) -> torch.Tensor:
    """`[rows, steps]` float32: log-softmax of each step's logits at the token it chose, one
    step at a time (a whole chunk's log-softmax at once would double its memory)."""
    columns = [
        torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None])[:, 0]
        for logits, tokens in zip(step_logits, new.T, strict=True)
    ]
    return torch.stack(columns, dim=1)


def answer_of(
    tokenizer, new_token_ids: list[int], token_logps: list[float] | None = None
) -> Answer:
    """The answer in the generated tokens: up to the first EOS (the padding after it dropped),
    and the sum of those tokens' `token_logps` when given."""
    eos = tokenizer.eos_token_id
    finished = eos in new_token_ids
    if finished:
        new_token_ids = new_token_ids[: new_token_ids.index(eos) + 1]
    logp = None if token_logps is None else float(sum(token_logps[: len(new_token_ids)]))
    text = decode_response(tokenizer, new_token_ids)
    return Answer(text, finished, tuple(new_token_ids), logp)


def decode_response(tokenizer, new_token_ids: list[int]) -> str:
    """Text of the generated tokens up to (not including) the first EOS."""
    eos = tokenizer.eos_token_id
    if eos in new_token_ids:
        new_token_ids = new_token_ids[: new_token_ids.index(eos)]
    return tokenizer.decode(new_token_ids, skip_special_tokens=True)


def _hf_generation_config(
    config: GenerationConfig, tokenizer, pad_token_id: int
) -> HFGenerationConfig:
    # Sampling knobs are passed only when sampling: transformers warns about them under greedy.
    sampling = (
        {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k}
        if config.do_sample
        else {}
    )
    return HFGenerationConfig(
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        num_beams=1,  # never the model's own beam setting: each row is one answer
        pad_token_id=pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **sampling,
    )


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the CPU RNG and the model's accelerator RNG, restoring both afterwards."""
    accelerators = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(
        devices=accelerators, device_type=device.type if accelerators else None
    ):
        torch.manual_seed(seed)
        yield
