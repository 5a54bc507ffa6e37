"""Benchmark: a training step of every objective beside a plain NLL step, the precompute pass,
and (when installed) TRL's DPO trainer, on HH-shaped batches; then the levers on the A-LoL step
(token budgets, compiled layers, bf16 weights, ...). Figures and notes: bench/NOTES.md.

    pip install -e .                                   # once: the script imports alol
    python bench/throughput.py --make-lengths          # once: HH lengths -> bench/hh_lengths.json
    python bench/throughput.py --steps 12 --levers random micro gradient eager "token budget" \
        "compiled layers" "pad to"                     # CPU, tiny Llama -> results/throughput_cpu.*
    python bench/throughput.py --cases levers --model small --steps 12 \
        --levers "token budget 4x" "compiled layers"   # CPU, 56M: eager/compiled x fixed/budget
                                                       #   -> results/throughput_levers_cpu.*
    bash bench/device_suite.sh                         # H100, 1.1B, one device call: everything
                                                       #   -> results/throughput{,_levers}_cuda.*
    python bench/throughput.py --cases precompute --model tiny small
                                                       # the reference passes only, CPU
                                                       #   -> results/precompute_cpu.*

Models are Llama-shaped and randomly initialised from a config (no download). Prompt and
response lengths are those of the real HH data in `../shared/data/hh`, tokenized with a 32k
byte-level BPE trained on that text (`--make-lengths`; the lengths travel in
`bench/hh_lengths.json`), capped at 640/128 tokens as in the paper. Token ids are random: only
shapes matter for speed.

Training batches hold `--batch-size` examples of similar lengths, as the trainer's length
grouping cuts them, or (`--max-tokens`, the "token budget" levers) as many examples as fit a
padded-token budget, packed by `alol.batching.pack_to_token_budget` from a prefix of the same
stream of draws, each batch's loss scaled by `example_weight` as AlolTrainer scales it. Batches
then hold different numbers of examples, so compare tokens/s and examples/s, not s/step.

A step is what a training loop does per batch: forward (under bf16 autocast when asked), the
objective, backward, gradient clipping at 1.0, AdamW (fused on CUDA) and zero_grad. Each case
runs its `--warmup` + `--steps` batches once untimed (compiling, for compiled layers), then the
`--steps` again, timed with one device sync at the end only, as in training. The timed batches
are a systematic sample of the pool's batches by length (`measured_batches`). Tokens are real
(non-padding) tokens; MFU = 6 x parameters x tokens / time / peak (2 x ... for the no-grad
precompute), parameters counted with the embeddings, against the card's dense bf16 datasheet
peak (`--peak-tflops`, 989 for an H100 SXM); the measured 8192^3 bf16 matmul rate is reported
beside it. Peak memory: `torch.cuda.max_memory_allocated` over the case (model, gradients,
optimizer state and activations); on CPU the process's resident-set high-water mark, reset
before each case, with one torch thread (two fight other processes on a busy 2-core machine).

The reference pass is timed four ways on the same HH pairs (`PRECOMPUTE_METHODS`): each prompt
once for both its responses (alol's default), once per response, full-vocabulary logits per
row (TRL's precompute, eager), and each prompt once again with compiled decoder layers (last,
after the eager cases). Their tokens/s all count the per-row input tokens, so they compare as
pairs per second; MFU counts the tokens each one's decoder ran.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from common import PeakMemory, device_name, synchronize  # bench/, on sys.path as a script
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from alol.advantage import collate_prompt_groups, score_reference_batch, score_shared_prompt_batch
from alol.batching import example_weight, pack_to_token_budget
from alol.compilation import compile_cache_free_parts, compile_decoder_layers
from alol.data import TokenizedPair, collate_pairs, length_grouped_order
from alol.io import write_json, write_text
from alol.logprobs import (
    naive_response_token_logprobs,
    response_token_logprobs,
    sequence_logprobs,
)
from alol.objectives import OBJECTIVES, ObjectiveConfig, PairBatch, RankedBatch, SequenceBatch
from alol.value import ValueHead

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LENGTHS_FILE = BENCH / "hh_lengths.json"
HH_DIR = BENCH.parent.parent / "shared" / "data" / "hh"
HH_TRAIN_PAIRS = 160_800
"""Pairs in Anthropic HH-RLHF's train split: the dataset size the one-pass projection uses."""
VOCAB_SIZE = 32_000
PAD_ID, EOS_ID, FIRST_WORD_ID = 0, 2, 4
MEGABATCH_FACTOR = 50
"""As the trainer's length grouping (sort 50 batches' worth of draws, cut, shuffle) and its
token-budget sampler (pack 50 budgets' worth)."""
DRAW_STREAM = 200_000
"""Length of the seeded stream of HH draws each batching mode takes a prefix of."""
INTERLEAVED_ROUNDS = 7
"""Alternating timings of A-LoL's and NLL's step for the step-time target (median of each)."""

MODEL_SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=4),  # a CPU-sized check of ratios
    "0.5b": dict(hidden_size=1280, intermediate_size=3584, num_hidden_layers=24,
                 num_attention_heads=20, num_key_value_heads=4),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4),  # TinyLlama-1.1B's shape
    "3b": dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26,
               num_attention_heads=32, num_key_value_heads=32),  # OpenLLaMA-3B's shape
}  # fmt: skip
PRECISIONS = ("fp32", "autocast", "bf16")
"""fp32; bf16 autocast over fp32 weights, gradients and AdamW state (what `--bf16` in the
trainer does: the fp32 weights are the master copy); bf16 weights, gradients and AdamW state
(no fp32 master copy: small updates round away, so a throughput lever, not a recipe)."""
TRAIN_METHODS = ("hf_nll", *OBJECTIVES)
"""`hf_nll`: the plain NLL step as a naive loop writes it, `model(..., labels=...).loss` over
full-vocabulary logits. `nll`: the same loss through alol's response-only log-probs."""
PRECOMPUTE_METHODS = (
    "precompute",
    "precompute_unshared",
    "precompute_full_logits",
    "precompute_compiled",
)
"""The reference pass over HH pairs (a prompt, its chosen and its rejected response), four
ways: `precompute`, alol's default, runs each prompt once and continues its KV cache with each
response; `precompute_unshared` runs prompt + response once per response; `precompute_full_logits`
scores each (prompt, response) row through the model's own forward, all [B, L, V] logits then
log-softmax, as TRL's reference precompute does (two rows per pair; eager, as TRL runs it);
`precompute_compiled` is `precompute` with each decoder layer's cache-free parts (norms, MLP)
compiled, as `AdvantageConfig.compile_layers` compiles for this pass, on a copy of the model that shares its weights
(`compiled_layers_copy`). Their tokens/s count the input tokens of the per-row form, 2p + c + r
per pair, whatever each runs, so the four rates compare as pairs scored per second."""
SHARED_PROMPT_METHODS = ("precompute", "precompute_compiled")
"""The cases that run `score_shared_prompt_batch`: each prompt once for all its responses."""
EAGER_PRECOMPUTE_METHODS = tuple(m for m in PRECOMPUTE_METHODS if m != "precompute_compiled")
SEQUENCE_KEYS = ("input_ids", "attention_mask", "response_mask")


@dataclass
class BenchConfig:
    device: str = "cpu"
    model: str = "tiny"
    precision: str = "fp32"
    batch_size: int = 4
    """Rows per step: sequences for pointwise objectives, pairs for DPO, prompts for PRO."""
    grouping: str = "length"
    """'length': batches of similar length, as the trainer draws them; 'random': padded to the
    longest of a random batch."""
    max_tokens: int | None = None
    """Token-budget batches instead of `batch_size` examples: as many examples as fit this many
    padded tokens (`alol.batching.pack_to_token_budget`, as `--max-tokens-per-batch` trains),
    each batch's loss scaled by `example_weight`. Training cases only."""
    pad_to_multiple_of: int | None = None
    """Pad each training batch's length up to a multiple of this (the collator's option)."""
    steps: int = 3
    warmup: int = 1
    max_prompt_length: int = 640
    max_response_length: int = 128
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    compile_layers: bool = False
    """torch.compile each decoder layer in place (`alol.compilation.compile_decoder_layers`,
    what `--compile-layers` does in training)."""
    fused_adamw: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# HH lengths


def make_lengths(hh_dir: Path, out: Path, max_prompt: int = 640, max_response: int = 128) -> dict:
    """Tokenize the HH pairs with a 32k byte-level BPE trained on their own text and record each
    pair's (prompt, chosen, rejected) token counts, response counts including EOS."""
    from alol.data import load_records, render_prompt, tokenize_pair
    from alol.tiny import train_tokenizer

    records = [
        record
        for name in ("helpful_base.json", "harmless_base.json")
        for record in load_records(hh_dir / name, kind="hh").records
    ]
    prompts = [render_prompt(record.prompt, None) for record in records]
    texts = prompts + [response for record in records for response in record.responses]
    tokenizer = train_tokenizer(texts, vocab_size=VOCAB_SIZE)
    pairs = []
    for prompt, record in zip(prompts, records, strict=True):
        tokenized = [
            tokenize_pair(tokenizer, prompt, response, max_prompt, max_response)
            for response in record.responses[:2]
        ]
        pairs.append([len(tokenized[0].prompt_ids), *(len(t.response_ids) for t in tokenized)])
    rewards = np.array([record.rewards[:2] for record in records])
    lengths = {
        "source": "harmless_base.json + helpful_base.json (PRO's HH test files), "
        f"32k byte-level BPE trained on their text, capped at {max_prompt}/{max_response}",
        "fraction_positive": float(np.mean(rewards > rewards.mean())),
        "fraction_positive_note": "share of responses whose sigmoid reward exceeds the mean "
        "reward: A > 0 with V(x) taken as the data's mean reward, a proxy for a fitted value",
        "pairs": pairs,
    }
    write_json(out, lengths)
    return lengths


def load_lengths(path: Path = LENGTHS_FILE) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run `python bench/throughput.py --make-lengths` once (it needs "
            f"the HH data in {HH_DIR})"
        )
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Batches: HH lengths, random token ids


def random_pair(prompt_length: int, response_length: int, rng: np.random.Generator):
    """A TokenizedPair of random ids with these lengths (the response ends with EOS)."""
    ids = rng.integers(FIRST_WORD_ID, VOCAB_SIZE, prompt_length + response_length - 1).tolist()
    return TokenizedPair(ids[:prompt_length], ids[prompt_length:] + [EOS_ID])


def pool_draws(
    lengths_by_code: np.ndarray, rows: int, config: BenchConfig, rng: np.random.Generator
) -> np.ndarray:
    """The draws one epoch's worth of batching sees, each coded 2 x pair + response (0 chosen, 1
    rejected). Fixed batches cut `batch_size` x MEGABATCH_FACTOR of them, as the trainer's length
    grouping does; token budgets pack as many as fill MEGABATCH_FACTOR budgets, the megabatch of
    `TokenBudgetBatchSampler`. Both take a prefix of one stream (`lengths_by_code[code]` is an
    example's padded length), so a budget's pool begins with the fixed batches' draws."""
    stream = rng.integers(0, len(lengths_by_code), DRAW_STREAM)
    if config.max_tokens is None:
        return stream[: config.batch_size * MEGABATCH_FACTOR]
    tokens = np.cumsum(rows * lengths_by_code[stream])
    size = int(np.searchsorted(tokens, MEGABATCH_FACTOR * config.max_tokens)) + 1
    if size > DRAW_STREAM:
        raise ValueError(
            f"a budget of {config.max_tokens} tokens needs more than {DRAW_STREAM} draws"
        )
    return stream[:size]


def cut_batches(
    lengths: list[int], rows: int, config: BenchConfig, rng: np.random.Generator
) -> list[list[int]]:
    """Indices into a pool of examples cut into batches as the trainer cuts them: by
    `config.grouping` into `batch_size` examples, or packed to `config.max_tokens` padded tokens
    (longest first)."""
    if config.max_tokens is not None:
        return pack_to_token_budget(list(range(len(lengths))), lengths, rows, config.max_tokens)
    order = rng.permutation(len(lengths)).tolist()
    if config.grouping == "length":
        generator = torch.Generator().manual_seed(config.seed)
        order = length_grouped_order(
            order, [lengths[i] for i in order], config.batch_size, generator, MEGABATCH_FACTOR
        )
    size = config.batch_size
    return [order[start : start + size] for start in range(0, len(order), size)]


def measured_batches(
    batches: list[list[int]], lengths: list[int], config: BenchConfig, rng: np.random.Generator
) -> list[list[int]]:
    """The `warmup + steps` batches a case runs, out of the pool's. First the batch of the most
    padded tokens (the untimed pass then sets the peak memory a whole epoch would reach) and
    `warmup - 1` random others; then the `steps` timed ones, a systematic sample of the rest
    ordered by length (the middle of each of `steps` equal slices), in random order: a few steps
    then see short and long batches, and few- and many-example budget batches, in an epoch's
    proportions, so examples/s compares like with like across batching modes."""
    count = config.warmup + config.steps
    if len(batches) < count:
        raise ValueError(f"{len(batches)} batches in the pool, {count} needed: lower the budget")

    def padded(batch: list[int]) -> int:
        return len(batch) * max(lengths[i] for i in batch)

    rest = sorted(batches, key=padded, reverse=True)
    first = rest.pop(0)
    rest.sort(key=lambda batch: max(lengths[i] for i in batch))
    picks = [int((k + 0.5) * len(rest) / config.steps) for k in range(config.steps)]
    timed = [rest[i] for i in picks]
    others = [batch for i, batch in enumerate(rest) if i not in set(picks)]
    warmup = [others[i] for i in rng.permutation(len(others))[: config.warmup - 1]]
    return [first, *warmup, *(timed[i] for i in rng.permutation(len(timed)))]


def add_sequence_fields(batch: dict, rng: np.random.Generator) -> dict:
    """Reference token log-probs, reward and advantage, as A-LoL's precomputed batches carry."""
    rows, mask = len(batch["input_ids"]), batch["response_mask"]
    ref = -torch.as_tensor(rng.uniform(0.5, 3.0, mask.shape), dtype=torch.float32)
    batch["ref_token_logps"] = torch.where(mask, ref, 0.0)
    batch["reward"] = torch.as_tensor(rng.uniform(0.0, 1.0, rows), dtype=torch.float32)
    batch["advantage"] = torch.as_tensor(rng.uniform(0.05, 1.0, rows), dtype=torch.float32)
    return batch


def pool_batches(
    pairs: list[list[int]], config: BenchConfig, rows: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[int], list[list[int]]]:
    """The pool's draws, their padded lengths and all their batches (`cut_batches`). `rows` is
    1 for sequences (an example is one response: its own length), 2 for pairs (the longer
    one's)."""
    table = np.asarray(pairs)
    if rows == 1:
        lengths_by_code = (table[:, :1] + table[:, 1:]).reshape(-1)
    else:
        lengths_by_code = np.repeat(table[:, 0] + table[:, 1:].max(axis=1), 2)
    codes = pool_draws(lengths_by_code, rows, config, rng)
    lengths = lengths_by_code[codes].tolist()
    return codes, lengths, cut_batches(lengths, rows, config, rng)


def training_batches(
    pairs: list[list[int]], config: BenchConfig, rows: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[list[int]], float | None]:
    """The pool's draws, the batches a case runs (`measured_batches`) and, under a token budget,
    the mean examples per batch of the whole pool, which `example_weight` divides by (the
    sampler's `mean_examples`, over an epoch's batches)."""
    codes, lengths, batches = pool_batches(pairs, config, rows, rng)
    mean_examples = None if config.max_tokens is None else float(np.mean([len(b) for b in batches]))
    return codes, measured_batches(batches, lengths, config, rng), mean_examples


def collate_training(pairs: list[TokenizedPair], config: BenchConfig, mean_examples) -> dict:
    """Collate as the trainer's collator does; a budget's batches carry `mean_examples` (a float,
    on the host) for the loss weight."""
    batch = collate_pairs(pairs, PAD_ID, pad_to_multiple_of=config.pad_to_multiple_of)
    if mean_examples is not None:
        batch["mean_examples"] = mean_examples
    return batch


def sequence_batches(pairs: list[list[int]], config: BenchConfig) -> list[dict]:
    """A case's batches (`measured_batches`) of (prompt, response) rows drawn from the HH
    responses."""
    rng = np.random.default_rng(config.seed)
    codes, batches, mean_examples = training_batches(pairs, config, 1, rng)
    collated = []
    for batch in batches:
        rows = [
            random_pair(pairs[code // 2][0], pairs[code // 2][1 + code % 2], rng)
            for code in codes[batch]
        ]
        collated.append(add_sequence_fields(collate_training(rows, config, mean_examples), rng))
    return collated


def pair_batches(pairs: list[list[int]], config: BenchConfig) -> list[dict]:
    """A case's batches of chosen rows then rejected rows, for DPO and PRO (K = 2)."""
    rng = np.random.default_rng(config.seed + 1)
    codes, batches, mean_examples = training_batches(pairs, config, 2, rng)
    collated = []
    for batch in batches:
        drawn = [pairs[code // 2] for code in codes[batch]]
        chosen = [random_pair(p, c, rng) for p, c, _ in drawn]
        rejected = [random_pair(p, r, rng) for p, _, r in drawn]
        pair_batch = collate_training([*chosen, *rejected], config, mean_examples)
        examples = len(drawn)
        pair_batch["ref_chosen_logp"] = -torch.as_tensor(
            rng.uniform(50, 150, examples), dtype=torch.float32
        )
        pair_batch["ref_rejected_logp"] = -torch.as_tensor(
            rng.uniform(50, 150, examples), dtype=torch.float32
        )
        collated.append(pair_batch)
    return collated


def random_prompt_group(
    prompt_length: int, response_lengths: list[int], rng: np.random.Generator
) -> list[TokenizedPair]:
    """One prompt of random ids and a TokenizedPair for each response length (EOS last)."""
    prompt = rng.integers(FIRST_WORD_ID, VOCAB_SIZE, prompt_length).tolist()
    return [
        TokenizedPair(prompt, rng.integers(FIRST_WORD_ID, VOCAB_SIZE, n - 1).tolist() + [EOS_ID])
        for n in response_lengths
    ]


def precompute_batch(groups: list[list[TokenizedPair]]) -> dict:
    """A reference-pass batch in both forms: every (prompt, response) row collated, as the
    per-row passes see it (these keys also count the tokens), and the prompt-shared form that
    `score_shared_prompt_batch` reads, under "shared"."""
    batch = collate_pairs([pair for group in groups for pair in group], PAD_ID)
    batch["shared"] = collate_prompt_groups(groups, PAD_ID)
    return batch


def precompute_batches(pairs: list[list[int]], config: BenchConfig) -> list[dict]:
    """A case's batches of HH pairs, `batch_size` rows each (batch_size / 2 prompts with their
    chosen and rejected responses), grouped by length as the trainer's batches are."""
    rng = np.random.default_rng(config.seed + 4)
    per_batch = max(1, config.batch_size // 2)
    drawn = rng.choice(len(pairs), per_batch * MEGABATCH_FACTOR)
    groups = [random_prompt_group(pairs[i][0], pairs[i][1:], rng) for i in drawn]
    lengths = [max(pair.length for pair in group) for group in groups]
    fixed = replace(config, batch_size=per_batch, max_tokens=None)
    batches = measured_batches(cut_batches(lengths, 2, fixed, rng), lengths, fixed, rng)
    return [precompute_batch([groups[i] for i in batch]) for batch in batches]


def fixed_shape_pair_batches(config: BenchConfig, count: int) -> list[dict]:
    """Pairs of exactly max_prompt + 2 x max_response tokens (640 + 2 x 128), batch_size rows."""
    rng = np.random.default_rng(config.seed + 5)
    responses = [config.max_response_length] * 2
    return [
        precompute_batch(
            [
                random_prompt_group(config.max_prompt_length, responses, rng)
                for _ in range(max(1, config.batch_size // 2))
            ]
        )
        for _ in range(count)
    ]


def ranked_batch(pair_batch: dict) -> dict:
    """The same pairs as PRO's K = 2 ranked batch: candidates of a prompt on adjacent rows."""
    rows = len(pair_batch["input_ids"]) // 2
    interleave = torch.arange(2 * rows).view(2, rows).T.reshape(-1)
    batch = {
        key: pair_batch[key][interleave] for key in ("input_ids", "attention_mask", "response_mask")
    }
    batch["rewards"] = torch.tensor([[1.0, 0.0]]).repeat(rows, 1)
    batch["candidate_mask"] = torch.ones(rows, 2, dtype=torch.bool)
    if "mean_examples" in pair_batch:
        batch["mean_examples"] = pair_batch["mean_examples"]
    return batch


def fixed_shape_batches(config: BenchConfig, count: int) -> list[dict]:
    """Batches of exactly max_prompt + max_response tokens per row (the paper's 640 + 128)."""
    rng = np.random.default_rng(config.seed + 2)
    return [
        add_sequence_fields(
            collate_pairs(
                [
                    random_pair(config.max_prompt_length, config.max_response_length, rng)
                    for _ in range(config.batch_size)
                ],
                PAD_ID,
            ),
            rng,
        )
        for _ in range(count)
    ]


def padding_fraction(batches: list[dict]) -> float:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1.0 - real / sum(b["attention_mask"].numel() for b in batches)


def shared_tokens(batch: dict) -> tuple[int, int]:
    """(real, padded) tokens the prompt-shared pass feeds the decoder: each prompt once, then
    each response."""
    shared = batch["shared"]
    real = int(shared["prompt_attention_mask"].sum()) + int(shared["response_mask"].sum())
    return real, shared["prompt_attention_mask"].numel() + shared["response_mask"].numel()


# ---------------------------------------------------------------------------------------------
# Model, device and memory


def build_model(config: BenchConfig) -> LlamaForCausalLM:
    """fp32 random init straight on the device (a 1B model initialised on the CPU takes a
    minute); `prepare_model` makes the bf16 copy when the config asks for one."""
    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=config.max_prompt_length + config.max_response_length,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        attn_implementation=config.attention,
        **MODEL_SHAPES[config.model],
    )
    with torch.device(config.device):
        return LlamaForCausalLM(model_config)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure_matmul_tflops(device: str) -> float | None:
    """The card's bf16 dense matmul rate on random data (8192^3, median of 10 after 3 warm-ups)."""
    if not device.startswith("cuda"):
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for rep in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if rep >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / float(np.median(times)) / 1e12


# ---------------------------------------------------------------------------------------------
# Losses and steps


def autocast(config: BenchConfig):
    device_type = "cuda" if config.device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, torch.bfloat16, enabled=config.precision == "autocast")


def objective_batch(name: str, token_logps: torch.Tensor, batch: dict):
    """The objective's input, shaped from the policy log-probs as AlolTrainer shapes it."""
    objective, mask = OBJECTIVES[name], batch["response_mask"]
    if objective.data == "sequence":
        return SequenceBatch(
            token_logps,
            mask,
            batch.get("ref_token_logps"),
            batch.get("reward"),
            batch.get("advantage"),
        )
    logps = sequence_logprobs(token_logps, mask)
    if objective.data == "pair":
        chosen, rejected = logps.chunk(2)
        return PairBatch(chosen, rejected, batch["ref_chosen_logp"], batch["ref_rejected_logp"])
    rewards = batch["rewards"]
    return RankedBatch(
        logps.view(rewards.shape),
        mask.sum(-1).view(rewards.shape),
        rewards,
        batch["candidate_mask"],
    )


def training_loss(method: str, model, batch: dict, config: BenchConfig) -> torch.Tensor:
    """The batch's loss; under a token budget scaled by `example_weight` as AlolTrainer scales
    it, so a batch of many short examples counts for more of the epoch's gradient."""
    loss = unweighted_loss(method, model, batch, config)
    if "mean_examples" in batch:
        loss = loss * example_weight(examples_in(batch), batch["mean_examples"])
    return loss


def unweighted_loss(method: str, model, batch: dict, config: BenchConfig) -> torch.Tensor:
    if method == "hf_nll":
        labels = batch["input_ids"].masked_fill(~batch["response_mask"], -100)
        with autocast(config):
            return model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=labels,
                use_cache=False,
            ).loss
    with autocast(config):
        token_logps = response_token_logprobs(
            model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
    output = OBJECTIVES[method].loss(objective_batch(method, token_logps, batch), ObjectiveConfig())
    return output.loss


def to_device(batch: dict, device: str) -> dict:
    """Pinned host memory and non-blocking copies, as a DataLoader with pin_memory does; values
    that are not tensors (`mean_examples`) stay on the host."""
    if not device.startswith("cuda"):
        return batch
    return {
        key: value.pin_memory().to(device, non_blocking=True)
        if isinstance(value, torch.Tensor)
        else value
        for key, value in batch.items()
    }


def train_steps(method: str, model, batches: list[dict], config: BenchConfig) -> Callable:
    """A closure that runs one optimizer step per batch: no host sync in it but the ones the
    model code makes (alol's log-probs and transformers' mask both read a data-dependent size)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    fused = config.fused_adamw and config.device.startswith("cuda")
    optimizer = torch.optim.AdamW(parameters, lr=1e-5, fused=fused, foreach=None if fused else True)

    def run(batch_slice: slice) -> None:
        for batch in batches[batch_slice]:
            loss = training_loss(method, model, to_device(batch, config.device), config)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def precompute_steps(method: str, model, batches: list[dict], config: BenchConfig):
    """The reference pass as `alol.advantage` runs it: eval, inference mode, token log-probs and
    V(x) (a value head on the prompt states of the same pass), both copied to the host, the
    log-probs cut into per-response arrays. `precompute` and `precompute_compiled` (given the
    compiled copy as `model`) run each prompt once (`score_shared_prompt_batch`),
    `precompute_unshared` each row whole (`score_reference_batch`); `precompute_full_logits`
    scores the rows through the model's own forward (no V)."""
    head = ValueHead(model.config.hidden_size).to(config.device).eval()

    def run(batch_slice: slice) -> None:
        model.eval()
        with torch.inference_mode(), autocast(config):
            for batch in batches[batch_slice]:
                values = None
                if method in SHARED_PROMPT_METHODS:
                    shared = to_device(batch["shared"], config.device)
                    token_logps, values = score_shared_prompt_batch(model, shared, head)
                    mask = shared["response_mask"]
                else:
                    rows = to_device({key: batch[key] for key in SEQUENCE_KEYS}, config.device)
                    mask = rows["response_mask"]
                    if method == "precompute_full_logits":
                        token_logps = naive_response_token_logprobs(model, **rows)
                    else:
                        token_logps, values = score_reference_batch(model, rows, head)
                if values is not None:
                    values.tolist()  # to the host, as the table needs them
                token_logps, mask = token_logps.cpu(), mask.cpu()
                [row[row_mask].numpy() for row, row_mask in zip(token_logps, mask, strict=True)]
        model.train()

    return run


def measure(run: Callable, batches: list[dict], config: BenchConfig, grad: bool) -> dict:
    """One untimed pass over every batch, then the `config.steps` timed ones again, with a
    single sync at the end. The untimed pass sees every shape first: a new shape's first step
    pays one-off costs (CUDA kernels load lazily on first use; a compiled graph recompiles)
    that would otherwise land on whichever case meets that shape first."""
    memory = PeakMemory(config.device)
    free_memory(config.device)
    memory.reset()
    start_warmup = time.perf_counter()
    run(slice(0, config.warmup + config.steps))
    synchronize(config.device)
    warmup_s = time.perf_counter() - start_warmup
    timed = batches[config.warmup : config.warmup + config.steps]
    start = time.perf_counter()
    run(slice(config.warmup, config.warmup + config.steps))
    synchronize(config.device)
    seconds = time.perf_counter() - start
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    examples = sum(examples_in(b) for b in timed)
    return {
        "seconds_per_step": seconds / config.steps,
        "tokens_per_s": tokens / seconds,
        "examples_per_s": examples / seconds,
        "examples_per_step": examples / config.steps,
        "padded_tokens_per_step": sum(b["attention_mask"].numel() for b in timed) / config.steps,
        "padding": padding_fraction(timed),
        "peak_memory_mib": memory.peak_mib(),
        "warmup_s": warmup_s,
        "flops_per_token_factor": 6 if grad else 2,
    } | ({"mean_examples": timed[0]["mean_examples"]} if "mean_examples" in timed[0] else {})


def interleaved_step_ratio(
    model, batches: list[dict], config: BenchConfig, rounds: int = INTERLEAVED_ROUNDS
) -> dict:
    """A-LoL's step time over NLL's on the same batches, timed in alternation `rounds` times
    each (after one untimed pass of both). Load from other processes then hits both alike, so
    the ratio of the medians is what the 1.05x target reads; cases timed one after the other
    drift ~10% on a busy 2-core CPU, more than the difference being measured."""
    runs = {method: train_steps(method, model, batches, config) for method in ("nll", "a_lol")}
    every, timed = slice(0, config.warmup + config.steps), slice(config.warmup, None)
    for run in runs.values():
        run(every)
    seconds: dict[str, list[float]] = {method: [] for method in runs}
    for _ in range(rounds):
        for method, run in runs.items():
            synchronize(config.device)
            start = time.perf_counter()
            run(timed)
            synchronize(config.device)
            seconds[method].append((time.perf_counter() - start) / config.steps)
    model.zero_grad(set_to_none=True)
    nll, alol = (float(np.median(seconds[m])) for m in ("nll", "a_lol"))
    return {"rounds": rounds, "nll_s": nll, "a_lol_s": alol, "ratio": alol / nll}


def decoder_tokens(method: str, timed: list[dict], row: dict) -> dict:
    """What the decoder itself ran: real tokens per second and the padding among its inputs (the
    per-row form's, except for the prompt-shared passes)."""
    if method not in SHARED_PROMPT_METHODS:
        return {"decoder_tokens_per_s": row["tokens_per_s"]}
    real, padded = map(sum, zip(*(shared_tokens(batch) for batch in timed), strict=True))
    seconds = row["seconds_per_step"] * len(timed)
    return {"decoder_tokens_per_s": real / seconds, "padding": 1.0 - real / padded}


def examples_in(batch: dict) -> int:
    """Examples in a batch: rows, pairs for DPO and the precompute, prompts for PRO."""
    if "shared" in batch:
        return len(batch["shared"]["prompt_input_ids"])
    if "ref_chosen_logp" in batch:
        return len(batch["ref_chosen_logp"])
    if "rewards" in batch:
        return len(batch["rewards"])
    return len(batch["input_ids"])


def method_batches(method: str, config: BenchConfig, pairs: list[list[int]]) -> list[dict]:
    """The `warmup + steps` batches of a case, in the form its method reads."""
    if method in PRECOMPUTE_METHODS:
        return precompute_batches(pairs, config)
    if method == "hf_nll":
        return sequence_batches(pairs, config)
    data = OBJECTIVES[method].data
    if data == "sequence":
        return sequence_batches(pairs, config)
    batches = pair_batches(pairs, config)
    return batches if data == "pair" else [ranked_batch(b) for b in batches]


def profile_steps(model, batches: list[dict], config: BenchConfig, out: Path) -> dict:
    """Three a_lol steps under torch.profiler: is the step bound by the host (Python and kernel
    launches) or by the device? Writes the top operators beside the JSON."""
    from torch.profiler import ProfilerActivity, profile

    run = train_steps("a_lol", model, batches, config)
    run(slice(0, config.warmup + config.steps))
    synchronize(config.device)
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if config.device.startswith("cuda") else []
    )
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        run(slice(config.warmup, config.warmup + 3))
        synchronize(config.device)
        wall = time.perf_counter() - start
    events = profiler.key_averages()
    table = events.table(sort_by="self_cpu_time_total", row_limit=25)
    write_text(out.with_suffix(".profile.txt"), table)
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    kernels = sum(e.count for e in events if getattr(e, "self_device_time_total", 0) > 0)
    model.zero_grad(set_to_none=True)
    return {
        "wall_s_per_step": wall / 3,
        "device_busy_s_per_step": device_us / 1e6 / 3,
        "device_ops_per_step": kernels / 3,
    }


def run_case(method: str, model, batches: list[dict], config: BenchConfig) -> dict:
    """One measured case; running out of device memory is a result, not a crash."""
    try:
        if method in PRECOMPUTE_METHODS:
            row = measure(precompute_steps(method, model, batches, config), batches, config, False)
            timed = batches[config.warmup : config.warmup + config.steps]
            return row | decoder_tokens(method, timed, row)
        run = train_steps(method, model, batches, config)
        return measure(run, batches, config, grad=True)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    finally:
        model.zero_grad(set_to_none=True)
        free_memory(config.device)


# ---------------------------------------------------------------------------------------------
# Model variants for the levers


def prepare_model(base, config: BenchConfig):
    """The model as `config` wants it: a bf16 copy, eager attention, checkpointing, compiled
    layers (on a copy, after clearing dynamo's caches: each compiled case pays its own compile,
    in its untimed pass, and none inherits another's graphs or recompile count)."""
    model = copy.deepcopy(base) if config.precision == "bf16" or config.compile_layers else base
    if config.precision == "bf16":
        model.to(torch.bfloat16)
    model.set_attn_implementation(config.attention)
    set_checkpointing(model, config.gradient_checkpointing)
    if config.compile_layers:
        torch._dynamo.reset()
        compile_decoder_layers(model)
    return model.train()


def compiled_layers_copy(model):
    """A copy of `model` compiled as `compute_advantages(compile_layers=True)` compiles it for
    the prompt-shared pass (each layer's cache-free parts: norms, MLP). It shares the model's
    weights and buffers (no second copy of the weights in the case's peak memory), and dynamo's
    caches are cleared first, as `prepare_model` clears them for compiled levers."""
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    compiled = copy.deepcopy(model, memo=shared)
    torch._dynamo.reset()
    compile_cache_free_parts(compiled)
    return compiled


def set_checkpointing(model, enabled: bool) -> None:
    """Activation checkpointing on or off, under the names the installed transformers uses
    (5.x renamed gradient_checkpointing_* to activation_checkpointing_* and warns on the old)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable({"use_reentrant": False})
        elif model.is_activation_checkpointing:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()


LEVERS: list[tuple[str, dict[str, Any]]] = [
    ("random batches (padded to the longest)", {"grouping": "random"}),
    ("fp32, no autocast", {"precision": "fp32"}),
    ("bf16 autocast over fp32 master weights", {"precision": "autocast"}),
    ("bf16 weights and AdamW state", {"precision": "bf16"}),
    ("eager attention instead of SDPA", {"attention": "eager"}),
    ("foreach AdamW instead of fused", {"fused_adamw": False}),
    ("gradient checkpointing on", {"gradient_checkpointing": True}),
    ("micro-batch x2", {"batch_size": 2}),
    ("micro-batch x4, gradient checkpointing", {"batch_size": 4, "gradient_checkpointing": True}),
    ("token budget 2x", {"max_tokens": 2}),
    ("token budget 4x", {"max_tokens": 4}),
    ("token budget 8x", {"max_tokens": 8}),
    ("bf16 weights, micro-batch x2", {"precision": "bf16", "batch_size": 2}),
    ("bf16 weights, micro-batch x4, checkpointing", {"precision": "bf16", "batch_size": 4, "gradient_checkpointing": True}),
    ("bf16 weights, token budget 8x", {"precision": "bf16", "max_tokens": 8}),
    ("compiled layers + token budget 4x", {"compile_layers": True, "max_tokens": 4}),
    ("bf16 weights, compiled layers, token budget 8x", {"precision": "bf16", "compile_layers": True, "max_tokens": 8}),
    ("compiled layers", {"compile_layers": True}),
    ("pad to multiple of 64 + compiled layers", {"compile_layers": True, "pad_to_multiple_of": 64}),
    ("bf16 weights, micro-batch x2, compiled layers", {"precision": "bf16", "batch_size": 2, "compile_layers": True}),
]  # fmt: skip
"""Changes to the run's config, one lever at a time unless named together. `batch_size` is a
multiplier of the run's; `max_tokens` a multiple of the run's fixed batches' mean padded tokens
(`mean_padded_tokens`, rounded to 64), and the label then names the budget. bf16 weights and
the fused AdamW are CUDA-only here (slow or absent on a CPU). Compiled cases run after every
other lever, in this order (`--compile-after-s` skips those that would start too late)."""


def lever_configs(
    config: BenchConfig, words: list[str] | None, pairs: list[list[int]]
) -> list[tuple[str, BenchConfig]]:
    """Each lever (those whose label starts with one of `words`) that changes the run's config
    on this device, compiled ones last; the run's own `a_lol` row is the reference."""
    cuda = config.device.startswith("cuda")
    unit = mean_padded_tokens(pairs, config)
    variants = []
    for label, change in LEVERS:
        if words and not any(label.startswith(word) for word in words):
            continue
        change = dict(change)
        if "batch_size" in change:
            change["batch_size"] *= config.batch_size
        if "max_tokens" in change:
            change["max_tokens"] = max(64, round(change["max_tokens"] * unit / 64) * 64)
            label += f" = {change['max_tokens']:,} padded tokens"
        variant = replace(config, **change)
        gpu_only = variant.precision == "bf16" or not variant.fused_adamw
        if variant != config and (cuda or not gpu_only):
            variants.append((label, variant))
    return sorted(variants, key=lambda item: item[1].compile_layers)


def mean_padded_tokens(pairs: list[list[int]], config: BenchConfig) -> float:
    """Padded tokens (examples x longest length) of the run's fixed sequence batches, averaged
    over the pool: the unit the token-budget levers multiply."""
    fixed = replace(config, max_tokens=None, pad_to_multiple_of=None)
    _, lengths, batches = pool_batches(pairs, fixed, 1, np.random.default_rng(config.seed))
    return float(np.mean([len(batch) * max(lengths[i] for i in batch) for batch in batches]))


def run_levers(
    base, config: BenchConfig, args: argparse.Namespace, pairs: list[list[int]], report: dict, save
) -> None:
    """The a_lol step under each lever of `--levers`, appended to `report["levers"]` and saved
    after each; levers past the run's time budget are skipped (and said so)."""
    report["levers"] = []
    for label, variant in lever_configs(config, args.levers, pairs):
        late = args.compile_after_s if variant.compile_layers else args.lever_budget_s
        if time.perf_counter() - START > late:
            print(f"lever '{label}' skipped: the run is past its time budget", flush=True)
            continue
        lever_model = prepare_model(base, variant)
        row = run_case("a_lol", lever_model, method_batches("a_lol", variant, pairs), variant)
        del lever_model
        free_memory(config.device)
        row = add_mfu(row, report["parameters"], args.peak_tflops)
        report["levers"].append({"lever": label, "config": asdict(variant), **row})
        print(f"lever {label}: {describe(row)}", flush=True)
        save()


# ---------------------------------------------------------------------------------------------
# TRL


def trl_version() -> str | None:
    try:
        import trl
    except ImportError:
        return None
    return trl.__version__


def word_tokenizer():
    """Token i is the word `t{i}` and splits on spaces: texts with exact token counts for TRL,
    which tokenizes its own dataset."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<unk>": 1, "</s>": EOS_ID, "<s>": 3}
    vocab |= {f"t{i}": i for i in range(FIRST_WORD_ID, VOCAB_SIZE)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<s>",
        unk_token="<unk>",
    )


def trl_dpo(config: BenchConfig, pairs: list[list[int]]) -> dict:
    """TRL's DPOTrainer with precomputed reference log-probs on the same HH-length pairs:
    the precompute's wall time, then one epoch of `warmup + steps` steps timed from the end of
    the warm-up. Tokens are counted by wrapping TRL's collator."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rng = np.random.default_rng(config.seed + 3)
    count = config.batch_size * (config.warmup + config.steps)
    drawn = [pairs[i] for i in rng.choice(len(pairs), count)]

    def words(n: int) -> str:
        return "".join(f"t{i} " for i in rng.integers(FIRST_WORD_ID, VOCAB_SIZE, n))

    rows = [
        {"prompt": words(p), "chosen": words(c - 1), "rejected": words(r - 1)} for p, c, r in drawn
    ]
    model = build_model(config).to(torch.bfloat16 if config.precision == "bf16" else torch.float32)
    step_times: list[float] = []
    batch_tokens: list[int] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize(config.device)
            step_times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=config.batch_size,
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=config.batch_size,
            max_length=config.max_prompt_length + config.max_response_length,
            num_train_epochs=1,
            learning_rate=1e-5,
            max_grad_norm=1.0,
            bf16=config.precision in ("autocast", "bf16"),
            gradient_checkpointing=config.gradient_checkpointing,
            logging_steps=10**6,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=config.seed,
        )
        start = time.perf_counter()
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=word_tokenizer(),
            callbacks=[StepClock()],
        )
        setup_s = time.perf_counter() - start
        collate = trainer.data_collator

        def counting_collator(examples):
            batch = collate(examples)
            batch_tokens.append(int(batch["attention_mask"].sum()))
            return batch

        trainer.data_collator = counting_collator
        memory = PeakMemory(config.device)
        memory.reset()
        trainer.train()
    timed = slice(config.warmup, config.warmup + config.steps)
    seconds = step_times[-1] - step_times[config.warmup - 1]
    tokens = sum(batch_tokens[timed])
    precompute_tokens = sum(2 * p + c + r for p, c, r in drawn)
    return {
        "seconds_per_step": seconds / config.steps,
        "tokens_per_s": tokens / seconds,
        "examples_per_s": config.batch_size * config.steps / seconds,
        "peak_memory_mib": memory.peak_mib(),
        "setup_s": setup_s,
        "setup_tokens_per_s": precompute_tokens / setup_s,
        "setup_note": "DPOTrainer construction: tokenizing the dataset and the reference precompute",
        "flops_per_token_factor": 6,
    }


def trl_in_subprocess(config: BenchConfig, pairs_path: Path, timeout_s: float) -> dict:
    """TRL in a fresh process, so its model and optimizer do not share memory with ours."""
    command = [sys.executable, __file__, "--device", config.device, "--trl-worker"]
    command += [json.dumps(asdict(config)), str(pairs_path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout_s:.0f} s"}
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-25:] or ["failed"]
        return {"error": tail[-1], "stderr_tail": tail}  # the last line names the exception
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# The report


def add_mfu(row: dict, params: int, peak_tflops: float | None) -> dict:
    """Model FLOPs utilisation of the tokens the decoder actually ran."""
    if peak_tflops and "error" not in row:
        tokens_per_s = row.get("decoder_tokens_per_s", row["tokens_per_s"])
        flops = row["flops_per_token_factor"] * params * tokens_per_s
        row["mfu"] = flops / (peak_tflops * 1e12)
    return row


def describe(row: dict) -> str:
    if "error" in row:
        return f"failed: {row['error']}"
    return f"{row['tokens_per_s']:,.0f} tokens/s, {row['peak_memory_mib']:,.0f} MiB, MFU {_fmt(row.get('mfu'), '.1%')}"


def one_pass_projection(
    rows: dict[str, dict], trl: dict | None, lengths: dict, trl_bar_tokens_per_s: float | None
) -> dict:
    """Wall time of one pass over an HH-sized dataset (HH_TRAIN_PAIRS pairs, HH length mix),
    from the measured rates. A-LoL: the reference pass over both responses of every pair
    (2N sequences, each prompt run once for both: `precompute`'s rate, which counts the 2N
    sequences' tokens), which also gives V(x) from its prompt states, and training on the A > 0
    share of the 2N sequences, one per example. DPO: its reference pass over the N pairs (alol's
    shares prompts too), then one epoch over the N pairs (two sequences each)."""
    pairs = np.array(lengths["pairs"], dtype=np.float64)
    n, positive = HH_TRAIN_PAIRS, lengths["fraction_positive"]
    prompt, response = pairs[:, 0].mean(), pairs[:, 1:].mean()
    sequence_tokens = 2 * n * (prompt + response)
    pair_tokens = n * float((2 * pairs[:, 0] + pairs[:, 1] + pairs[:, 2]).mean())
    reference = rows["precompute"]["tokens_per_s"]
    alol = {
        "reference_pass_s": sequence_tokens / reference,
        "training_s": positive * sequence_tokens / rows["a_lol"]["tokens_per_s"],
    }
    alol["total_s"] = sum(alol.values())
    dpo_alol = {
        "reference_pass_s": pair_tokens / reference,
        "training_s": pair_tokens / rows["dpo"]["tokens_per_s"],
    }
    dpo_alol["total_s"] = sum(dpo_alol.values())
    projection = {
        "pairs": n,
        "fraction_positive": positive,
        "mean_prompt_tokens": prompt,
        "mean_response_tokens": response,
        "a_lol": alol,
        "dpo_alol": dpo_alol,
        "a_lol_over_dpo_alol": alol["total_s"] / dpo_alol["total_s"],
    }
    if "precompute_unshared" in rows:
        unshared = sequence_tokens / rows["precompute_unshared"]["tokens_per_s"]
        projection["a_lol_reference_pass_unshared_s"] = unshared
    if trl and "tokens_per_s" in trl:
        dpo_trl = {
            "reference_pass_s": pair_tokens / trl["setup_tokens_per_s"],
            "training_s": pair_tokens / trl["tokens_per_s"],
        }
        dpo_trl["total_s"] = sum(dpo_trl.values())
        projection["dpo_trl"] = dpo_trl
        projection["a_lol_over_dpo_trl"] = alol["total_s"] / dpo_trl["total_s"]
    elif trl_bar_tokens_per_s:
        # Figure measured earlier, not in this run; TRL's reference pass priced at alol's
        # per-row rate (TRL shares no prompts; its full logits would cost more still).
        per_row = rows.get("precompute_unshared", rows["precompute"])["tokens_per_s"]
        dpo_bar = {
            "reference_pass_s": pair_tokens / per_row,
            "training_s": pair_tokens / trl_bar_tokens_per_s,
        }
        dpo_bar["total_s"] = sum(dpo_bar.values())
        projection["dpo_trl_earlier_figure"] = dpo_bar
        projection["a_lol_over_dpo_trl_earlier_figure"] = alol["total_s"] / dpo_bar["total_s"]
    return projection


def targets(report: dict) -> list[dict]:
    """Each target whose rows the report holds (a run cut short, or a levers-only run, has
    fewer)."""
    rows = {row["method"]: row for row in report["methods"] if "error" not in row}
    fixed = {
        name: row for name, row in report.get("fixed_640_128", {}).items() if "error" not in row
    }
    return [
        *_step_targets(rows, "HH lengths"),
        *_interleaved_target(report.get("a_lol_vs_nll_interleaved")),
        *_step_targets(fixed, "640/128 rows"),
        *_precompute_target(fixed),
        *_mfu_targets(rows, fixed, report.get("levers", [])),
        *_one_pass_targets(report.get("one_pass", {})),
    ]


def _step_targets(rows: dict, shape: str) -> list[dict]:
    if not {"a_lol", "nll"} <= rows.keys():
        return []
    alol, nll = rows["a_lol"], rows["nll"]
    found = [
        _target(f"A-LoL step time / NLL step time, {shape}", alol["seconds_per_step"] / nll["seconds_per_step"], 1.05, "<="),
        _target(f"A-LoL peak memory / NLL peak memory, {shape}", alol["peak_memory_mib"] / nll["peak_memory_mib"], 1.05, "<="),
    ]  # fmt: skip
    if "hf_nll" in rows:
        ratio = alol["seconds_per_step"] / rows["hf_nll"]["seconds_per_step"]
        found.append(
            _target(f"A-LoL step time / HF-loss NLL step time, {shape}", ratio, 1.05, "<=")
        )
    return found


def _interleaved_target(interleaved: dict | None) -> list[dict]:
    if not interleaved:
        return []
    name = (
        "A-LoL step time / NLL step time, HH lengths, "
        f"{interleaved['rounds']} interleaved rounds (median)"
    )
    return [_target(name, interleaved["ratio"], 1.05, "<=")]


def _precompute_target(fixed: dict) -> list[dict]:
    """One row per shared-prompt pass the run measured, eager and compiled named apart; the
    full-logits baseline is eager in both (scoring as TRL does it)."""
    if "precompute_full_logits" not in fixed:
        return []
    full_logits_s = fixed["precompute_full_logits"]["seconds_per_step"]
    passes = {
        "precompute": "shared prompts, eager",
        "precompute_compiled": "shared prompts, compiled layers",
    }
    return [
        _target(
            f"precompute speed-up over full-logits scoring, 640/128 ({label})",
            full_logits_s / fixed[method]["seconds_per_step"],
            2.0,
            ">=",
        )
        for method, label in passes.items()
        if method in fixed
    ]


def _mfu_targets(rows: dict, fixed: dict, levers: list[dict]) -> list[dict]:
    found = [
        _target(f"A-LoL training MFU, {shape}", measured["a_lol"]["mfu"], 0.40, ">=")
        for shape, measured in (("HH lengths", rows), ("640/128 rows", fixed))
        if "mfu" in measured.get("a_lol", {})
    ]
    measured_levers = [row for row in levers if "mfu" in row]
    if measured_levers:
        best = max(measured_levers, key=lambda row: row["mfu"])
        found.append(
            _target(f"A-LoL training MFU, HH lengths, {best['lever']}", best["mfu"], 0.40, ">=")
        )
    return found


def _one_pass_targets(projection: dict) -> list[dict]:
    comparisons = {
        "a_lol_over_dpo_trl": "TRL's DPO, this run",
        "a_lol_over_dpo_trl_earlier_figure": "TRL's DPO, figure measured earlier",
        "a_lol_over_dpo_alol": "alol's DPO objective, this run",
    }
    return [
        _target(f"one HH pass: A-LoL wall time / {label}", projection[key], 0.5, "<=")
        for key, label in comparisons.items()
        if key in projection
    ]


def _target(name: str, value: float, bound: float, sense: str) -> dict:
    holds = value <= bound if sense == "<=" else value >= bound
    return {"target": name, "value": value, "bound": f"{sense} {bound:g}", "holds": holds}


def markdown(report: dict) -> str:
    """The report as Markdown: training methods, their 640/128 rows, the precompute cases (both
    shapes, one table), levers, the one-pass projection and the targets, each section only when
    the run has it (a `--cases levers` run has the a_lol row and the levers alone)."""
    config = report["config"]
    lines = [
        f"# Training throughput on {report['device']}",
        "",
        f"Random-init Llama `{config['model']}` ({report['parameters'] / 1e9:.3f}B parameters, "
        f"vocab {VOCAB_SIZE}), precision `{config['precision']}`, attention `{config['attention']}`, "
        f"{_batching(config)}, gradient checkpointing "
        f"{'on' if config['gradient_checkpointing'] else 'off'}, compiled layers "
        f"{'on' if config.get('compile_layers') else 'off'}; HH lengths capped at "
        f"{config['max_prompt_length']}/{config['max_response_length']}. Each case: one untimed pass "
        f"over its {config['warmup'] + config['steps']} batches (the biggest first), then "
        f"{config['steps']} timed. {report['versions']}. " + _load_and_peak(report),
        "",
        METHODS_HEADER,
    ]
    nll = next((row for row in report["methods"] if row["method"] == "nll"), None)
    for row in report["methods"]:
        if row["method"] not in PRECOMPUTE_METHODS:
            lines.append(_row(row["method"], row, nll))
    trl = report.get("trl_dpo")
    if trl:
        lines.append(_row("TRL DPOTrainer (precomputed reference)", trl, nll))
        if "setup_s" in trl:
            lines += ["", f"TRL's setup (tokenizing + reference precompute): {trl['setup_s']:.1f} s, "
                      f"{trl['setup_tokens_per_s']:,.0f} tokens/s."]  # fmt: skip
    if "fixed_640_128" in report:
        fixed = report["fixed_640_128"]
        lines += ["", f"Every row exactly {config['max_prompt_length']} + "
                  f"{config['max_response_length']} tokens (the paper's caps):", "", METHODS_HEADER]  # fmt: skip
        lines += [
            _row(name, row, fixed.get("nll"))
            for name, row in fixed.items()
            if name not in PRECOMPUTE_METHODS
        ]
    precompute = [
        ("HH lengths", {r["method"]: r for r in report["methods"] if r["method"] in PRECOMPUTE_METHODS}),
        ("640 + 2 x 128", {name: r for name, r in report.get("fixed_640_128", {}).items() if name in PRECOMPUTE_METHODS}),
    ]  # fmt: skip
    if any(rows for _, rows in precompute):
        lines += ["", "Reference precompute (HH pairs, and pairs of exactly "
                  f"{config['max_prompt_length']} + 2 x {config['max_response_length']} tokens):",
                  "", *_precompute_table(precompute), "", PRECOMPUTE_NOTE]  # fmt: skip
    if report.get("levers"):
        lines += _lever_table(report)
    if report.get("one_pass"):
        lines += _projection(report["one_pass"])
    if report.get("targets"):
        lines += _targets_table(report["targets"])
    lines += [f"\nNote: {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


METHODS_HEADER = (
    "| method | s/step | tokens/s | examples/s | examples/step | padding | peak MiB | MFU "
    "| vs nll time | vs nll mem |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _batching(config: dict) -> str:
    if config.get("max_tokens"):
        batching = f"token-budget batches of {config['max_tokens']:,} padded tokens"
    else:
        batching = f"batch {config['batch_size']}, `{config['grouping']}` grouping"
    if config.get("pad_to_multiple_of"):
        batching += f", padded to a multiple of {config['pad_to_multiple_of']}"
    return batching


def _lever_table(report: dict) -> list[str]:
    """Each lever's a_lol step beside the run's own a_lol row, with the ratios of both rates:
    a step holds a different number of examples under each lever, so s/step alone misleads."""
    alol = next((row for row in report["methods"] if row["method"] == "a_lol"), None)
    lines = ["", "Levers (`a_lol` step; each changes the settings it names from the run above; "
             "token budgets are multiples of the fixed batches' mean padded tokens; warm-up s "
             "holds the untimed pass, compiling included; ratios against the run's `a_lol` row):", "",
             "| lever | s/step | tokens/s | examples/s | examples/step | padding | peak MiB | MFU "
             "| warm-up s | tokens/s vs a_lol | examples/s vs a_lol |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    rows = ([("a_lol (the run's batches)", alol)] if alol else []) + [
        (row["lever"], row) for row in report["levers"]
    ]
    for name, row in rows:
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:90]} |" + " |" * 9)
            continue
        lines.append(
            f"| {name} | {row['seconds_per_step']:.4f} | {row['tokens_per_s']:,.0f} | "
            f"{row['examples_per_s']:,.1f} | {_fmt(row.get('examples_per_step'), '.1f')} | "
            f"{row['padding']:.1%} | {row['peak_memory_mib']:,.0f} | {_fmt(row.get('mfu'), '.1%')} "
            f"| {row['warmup_s']:.1f} | {_ratio(row, alol, 'tokens_per_s')} | "
            f"{_ratio(row, alol, 'examples_per_s')} |"
        )
    return lines


def _ratio(row: dict, reference: dict | None, key: str) -> str:
    if reference is None or "error" in reference:
        return "–"
    return f"{row[key] / reference[key]:.2f}x"


def _projection(projection: dict) -> list[str]:
    lines = ["", f"One pass over {projection['pairs']:,} HH pairs (projected from the rates above; "
             f"{projection['fraction_positive']:.0%} of responses with A > 0):", "",
             "A-LoL's reference pass gives V(x) too (the value head reads its prompt states) and "
             "runs each prompt once for both its responses" + _unshared_pass(projection) + ".", "",
             "| run | reference pass s | training s | total s |", "|---|---:|---:|---:|"]  # fmt: skip
    for name in ("a_lol", "dpo_alol", "dpo_trl", "dpo_trl_earlier_figure"):
        if name in projection:
            part = projection[name]
            lines.append(
                f"| {name} | {part['reference_pass_s']:.0f} | {part['training_s']:.0f} "
                f"| {part['total_s']:.0f} |"
            )
    return lines


def _targets_table(found: list[dict]) -> list[str]:
    lines = ["", "| target | value | bound | holds |", "|---|---:|---:|---|"]
    for target in found:
        lines.append(
            f"| {target['target']} | {target['value']:.3f} | {target['bound']} | "
            f"{'yes' if target['holds'] else 'NO'} |"
        )
    return lines


PRECOMPUTE_NOTE = (
    "Precompute rows score HH pairs (a prompt with its chosen and rejected response; "
    "`batch_size` rows = `batch_size / 2` pairs): tokens/s counts each pair's per-row input "
    "tokens (2p + c + r) for every method, so they compare as pairs/s; `precompute` and "
    "`precompute_compiled` feed their decoder p + c + r of them (decoder tokens/s) and their "
    "padding is that of their own inputs. `precompute_full_logits` runs eager, as TRL scores; "
    "`precompute_compiled` runs `precompute` on a weight-sharing copy of the model whose layers' "
    "cache-free parts (norms, MLP) are compiled, after the eager cases: its HH row's warm-up s (the untimed pass) "
    "holds the compile, its 640 + 2 x 128 row's only the recompiles of the new shapes. Speed-ups "
    "are ratios of s/step on the same batches."
)


def precompute_markdown(report: dict) -> str:
    """The precompute-only report: each model, HH lengths and 640/128, with the ratios."""
    config = report["config"]
    lines = [
        f"# Reference precompute on {report['device']}: each prompt once (eager, compiled) vs "
        "once per response vs full logits",
        "",
        f"Random-init Llama models (vocab {VOCAB_SIZE}), precision `{config['precision']}`, "
        f"attention `{config['attention']}`, batch {config['batch_size']} rows; HH lengths "
        f"capped at {config['max_prompt_length']}/{config['max_response_length']}, and pairs of "
        f"exactly {config['max_prompt_length']} + 2 x {config['max_response_length']} tokens. "
        f"Each case: one untimed pass over its {config['warmup'] + config['steps']} batches, then "
        f"{config['steps']} timed. {report['versions']}. " + _load_and_peak(report),
        "",
        PRECOMPUTE_NOTE,
    ]
    for run in report["runs"]:
        shapes = [("HH lengths", run["hh"]), ("640 + 2 x 128", run["fixed_640_128"])]
        lines += ["", f"## `{run['model']}` ({run['parameters'] / 1e6:.0f}M parameters)", ""]
        lines += _precompute_table(shapes)
    return "\n".join(lines) + "\n"


def _precompute_table(shapes: list[tuple[str, dict[str, dict]]]) -> list[str]:
    """One table of the precompute rows of each (label, {method: row}) shape, with each row's
    speed-up over full-logits scoring, over the per-row pass and over the eager shared pass."""
    lines = [
        "| pairs | method | s/step | pairs/s | tokens/s | decoder tokens/s | padding | peak MiB "
        "| MFU | warm-up s | speed-up vs full logits | vs unshared | vs shared eager |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in shapes:
        ordered = [method for method in PRECOMPUTE_METHODS if method in rows]  # JSON sorts keys
        lines += [_precompute_row(label, method, rows[method], rows) for method in ordered]
    for label, rows in shapes:
        compiled = rows.get("precompute_compiled", {})
        if "dynamo_graphs" in compiled:
            lines.append(
                f"\n`precompute_compiled`, {label}: graphs compiled {compiled['dynamo_graphs']}, "
                f"frames dynamo gave up on {compiled['dynamo_frames_given_up']}"
                + (GIVEN_UP_NOTE if compiled["dynamo_frames_given_up"] else ".")
            )
    return lines


GIVEN_UP_NOTE = (
    " (dynamo's recompile limit, shared by every layer: calls that none of the graphs fits, "
    "such as later layers' KV-cache calls, ran eager)."
)


def _precompute_row(label: str, method: str, row: dict, rows: dict) -> str:
    if "error" in row:
        return f"| {label} | {method} | failed: {row['error'][:90]} |" + " |" * 10

    def speed_over(other: str) -> str:
        if "error" in rows.get(other, {"error": ""}):
            return "–"
        return f"{rows[other]['seconds_per_step'] / row['seconds_per_step']:.2f}x"

    return (
        f"| {label} | {method} | {row['seconds_per_step']:.4f} | {row['examples_per_s']:,.2f} | "
        f"{row['tokens_per_s']:,.0f} | {_fmt(row.get('decoder_tokens_per_s'), ',.0f')} | "
        f"{row['padding']:.1%} | {row['peak_memory_mib']:,.0f} | {_fmt(row.get('mfu'), '.1%')} | "
        f"{row['warmup_s']:.1f} | {speed_over('precompute_full_logits')} | "
        f"{speed_over('precompute_unshared')} | {speed_over('precompute')} |"
    )


def _unshared_pass(projection: dict) -> str:
    if "a_lol_reference_pass_unshared_s" not in projection:
        return ""
    return f" (once per response: {projection['a_lol_reference_pass_unshared_s']:.0f} s)"


def _load_and_peak(report: dict) -> str:
    """The CPU's load (other processes slow a CPU run) or the GPU's MFU denominator."""
    if report.get("peak_tflops") is None:
        if "load_average_1min" not in report:
            return "The run stopped before its end."
        return f"1-minute load average {report['load_average_1min']:.1f} at the end."
    return (
        f"MFU against {report['peak_tflops']:.0f} TFLOP/s (measured bf16 matmul: "
        f"{report['measured_matmul_tflops']:.0f} TFLOP/s)."
    )


def _row(name: str, row: dict, nll: dict | None) -> str:
    if "error" in row:
        return f"| {name} | failed: {row['error'][:90]} | | | | | | | | |"
    ratios = (
        f"{row['seconds_per_step'] / nll['seconds_per_step']:.2f}x | "
        f"{row['peak_memory_mib'] / nll['peak_memory_mib']:.2f}x"
        if nll and "error" not in nll
        else " | "
    )
    return (
        f"| {name} | {row['seconds_per_step']:.4f} | {row['tokens_per_s']:,.0f} | "
        f"{row['examples_per_s']:,.1f} | {_fmt(row.get('examples_per_step'), '.1f')} | "
        f"{_fmt(row.get('padding'), '.1%')} | {row['peak_memory_mib']:,.0f} | "
        f"{_fmt(row.get('mfu'), '.1%')} | {ratios} |"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


# ---------------------------------------------------------------------------------------------
# Running it


def versions() -> str:
    found = f"torch {torch.__version__}, transformers {transformers.__version__}"
    return found + (f", trl {trl_version()}" if trl_version() else ", trl not installed")


def run_benchmark(config: BenchConfig, args: argparse.Namespace, out: Path) -> dict:
    lengths = load_lengths(args.lengths)
    pairs = lengths["pairs"]
    report: dict[str, Any] = {
        "device": device_name(config.device),
        "versions": versions(),
        "python": platform.python_version(),
        "config": asdict(config),
        "parameters": parameter_count(build_model(replace(config, device="meta"))),
        "peak_tflops": args.peak_tflops,
        "measured_matmul_tflops": measure_matmul_tflops(config.device),
        "lengths_source": lengths["source"],
        "methods": [],
    }

    def save() -> None:
        write_json(out, report)

    levers_only = args.cases == "levers"
    # TRL first, in its own process, while this one holds no model: the device is all its own.
    if trl_version() and not args.no_trl and not levers_only:
        trl = trl_in_subprocess(config, args.lengths, args.trl_timeout_s)
        report["trl_dpo"] = add_mfu(trl, report["parameters"], args.peak_tflops)
        print(f"trl dpo: {describe(trl)}", flush=True)
        save()
    base = build_model(config)
    model = prepare_model(base, config)
    methods = ["a_lol"] if levers_only else args.methods or [*TRAIN_METHODS, *PRECOMPUTE_METHODS]
    for method in (m for m in methods if m != "precompute_compiled"):
        row = run_case(method, model, method_batches(method, config, pairs), config)
        row = add_mfu({"method": method, **row}, report["parameters"], args.peak_tflops)
        report["methods"].append(row)
        print(f"{method}: {describe(row)}", flush=True)
        save()
    if not levers_only:
        batches = method_batches("a_lol", config, pairs)
        report["a_lol_vs_nll_interleaved"] = interleaved_step_ratio(model, batches, config)
        print(f"a_lol / nll interleaved: {report['a_lol_vs_nll_interleaved']}", flush=True)
        eager_precompute = [m for m in EAGER_PRECOMPUTE_METHODS if m in methods]
        fixed = run_fixed_shape(("nll", "a_lol", *eager_precompute), model, config)
        report["fixed_640_128"] = fixed
        for row in fixed.values():
            add_mfu(row, report["parameters"], args.peak_tflops)
        save()
    if "precompute_compiled" in methods and time.perf_counter() - START > args.compile_after_s:
        report.setdefault("notes", []).append(
            "precompute_compiled skipped: the run was past --compile-after-s when it came up."
        )
    elif "precompute_compiled" in methods:
        for shape, row in compiled_precompute_rows(model, config, pairs):
            row = add_mfu(row, report["parameters"], args.peak_tflops)
            if shape == "hh":
                report["methods"].append({"method": "precompute_compiled", **row})
            else:
                report["fixed_640_128"]["precompute_compiled"] = row
            save()
    if args.profile:
        report["profile"] = profile_steps(
            model, method_batches("a_lol", config, pairs), config, out
        )
        print(f"profile: {report['profile']}", flush=True)
        free_memory(config.device)
        save()
    if args.levers is not None or levers_only:
        run_levers(base, config, args, pairs, report, save)
    if not config.device.startswith("cuda"):
        report["load_average_1min"] = os.getloadavg()[0]  # other processes slow a CPU run
    return finish_report(report, lengths, args.trl_bar_tokens_per_s)


def compiled_precompute_rows(
    model, config: BenchConfig, pairs: list[list[int]]
) -> Iterator[tuple[str, dict]]:
    """`precompute_compiled` at HH lengths, then on 640/128 pairs, each row yielded as
    ("hh" | "fixed_640_128", row) when measured. Callers run it after every eager case, so a run
    cut short while compiling keeps those. Both cases run on one `compiled_layers_copy` of
    `model`: its compile lands in the HH case's untimed pass (warm-up s), and the 640/128 case's
    warm-up holds only what its new shapes recompile, as over a real dataset's lengths."""
    compiled = compiled_layers_copy(model)
    shapes = {
        "hh": precompute_batches(pairs, config),
        "fixed_640_128": fixed_shape_pair_batches(config, config.warmup + config.steps),
    }
    for shape, batches in shapes.items():
        before = dynamo_counts()
        row = run_case("precompute_compiled", compiled, batches, config)
        row |= {name: count - before[name] for name, count in dynamo_counts().items()}
        print(f"{config.model} {shape} precompute_compiled: {describe(row)}", flush=True)
        yield shape, row


def dynamo_counts() -> dict[str, int]:
    """Graphs dynamo has compiled, and frames it gave up on, so far in this process. It gives up
    on a frame at the recompile limit (`torch._dynamo.config.recompile_limit`, 8 graphs per code
    object, which every decoder layer shares) or on an error; from then on, calls that none of
    that code's graphs fits run eager. The KV-cache pass specializes graphs per layer (their
    guards read `cache.layers[layer_idx]`), so a deep model can hit the limit."""
    frames = counters["frames"]
    return {
        "dynamo_graphs": counters["stats"]["unique_graphs"],
        "dynamo_frames_given_up": frames["total"] - frames["ok"],
    }


def run_fixed_shape(methods: tuple[str, ...], model, config: BenchConfig) -> dict[str, dict]:
    """Each method on rows of exactly max_prompt + max_response tokens; the precompute on pairs
    of one such prompt and two such responses."""
    count = config.warmup + config.steps
    rows, pairs = fixed_shape_batches(config, count), fixed_shape_pair_batches(config, count)
    found = {}
    for method in methods:
        batches = pairs if method in PRECOMPUTE_METHODS else rows
        found[method] = run_case(method, model, batches, config)
        print(f"640/128 {method}: {describe(found[method])}", flush=True)
    return found


def run_precompute_benchmark(config: BenchConfig, models: list[str], args) -> dict:
    """The reference passes only (`PRECOMPUTE_METHODS`), at HH lengths and at 640/128, for each
    model in turn: the eager ones, then the compiled one."""
    lengths = load_lengths(args.lengths)
    report: dict[str, Any] = {
        "device": device_name(config.device),
        "versions": versions(),
        "python": platform.python_version(),
        "config": asdict(config),
        "peak_tflops": args.peak_tflops,
        "measured_matmul_tflops": measure_matmul_tflops(config.device),
        "lengths_source": lengths["source"],
        "runs": [],
    }
    for name in models:
        model_config = replace(config, model=name)
        model = prepare_model(build_model(model_config), model_config)
        run: dict[str, Any] = {"model": name, "parameters": parameter_count(model), "hh": {}}
        for method in EAGER_PRECOMPUTE_METHODS:
            batches = method_batches(method, model_config, lengths["pairs"])
            run["hh"][method] = run_case(method, model, batches, model_config)
            print(f"{name} HH {method}: {describe(run['hh'][method])}", flush=True)
        run["fixed_640_128"] = run_fixed_shape(EAGER_PRECOMPUTE_METHODS, model, model_config)
        for shape, row in compiled_precompute_rows(model, model_config, lengths["pairs"]):
            run[shape]["precompute_compiled"] = row
        for row in (*run["hh"].values(), *run["fixed_640_128"].values()):
            add_mfu(row, run["parameters"], args.peak_tflops)
        report["runs"].append(run)
        del model
        free_memory(config.device)
    if not config.device.startswith("cuda"):
        report["load_average_1min"] = os.getloadavg()[0]  # other processes slow a CPU run
    return report


def finish_report(report: dict, lengths: dict, trl_bar_tokens_per_s: float | None) -> dict:
    """Add the one-pass projection (when the run has its rows) and the targets, both computed
    from the measured rows."""
    rows = {row["method"]: row for row in report["methods"] if "error" not in row}
    if {"a_lol", "dpo", "precompute"} <= rows.keys():
        report["one_pass"] = one_pass_projection(
            rows, report.get("trl_dpo"), lengths, trl_bar_tokens_per_s
        )
    report["targets"] = targets(report)
    return report


START = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--model",
        nargs="+",
        default=None,
        choices=MODEL_SHAPES,
        help="default: tiny on CPU, 1b on CUDA; several only with --cases precompute",
    )
    parser.add_argument(
        "--cases",
        default="all",
        choices=("all", "precompute", "levers"),
        help="all (-> throughput_<device>.*); only the reference passes "
        "(PRECOMPUTE_METHODS, HH lengths and 640/128, each --model) -> precompute_<device>.*; "
        "or the a_lol step and its --levers (all of them if none named) -> "
        "throughput_levers_<device>.*",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="default: autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 16 on CUDA, 4 on CPU"
    )
    parser.add_argument("--grouping", default="length", choices=("length", "random"))
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="token-budget training batches of this many padded tokens instead of --batch-size "
        "examples (as --max-tokens-per-batch trains)",
    )
    parser.add_argument(
        "--pad-to-multiple-of", type=int, default=None, help="round training batch lengths up"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default: 12 on CUDA, 3 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default: 2 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--compile-layers",
        action="store_true",
        help="torch.compile each decoder layer (alol's --compile-layers) for every method",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="default: all")
    parser.add_argument(
        "--levers",
        nargs="*",
        default=None,
        help="also time the a_lol step under each lever (or the levers whose label starts with a word given)",
    )
    parser.add_argument(
        "--lever-budget-s",
        type=float,
        default=float("inf"),
        help="skip levers once the run is this old",
    )
    parser.add_argument(
        "--compile-after-s",
        type=float,
        default=float("inf"),
        help="skip compiled levers, and the compiled precompute of a --cases all run, once the "
        "run is this old",
    )
    parser.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    parser.add_argument("--trl-timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--trl-bar-tokens-per-s",
        type=float,
        default=None,
        help="TRL DPO training rate measured EARLIER on this card, used (and labelled so) when TRL cannot run here",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile three a_lol steps: host vs device time, top ops",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="MFU denominator (default: 989 on CUDA)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default on CPU: 1; two threads on a busy 2-core box fight other processes)",
    )
    parser.add_argument("--lengths", type=Path, default=LENGTHS_FILE)
    parser.add_argument("--out", type=Path, default=None, help="JSON path; the .md goes beside it")
    parser.add_argument(
        "--make-lengths", action="store_true", help=f"tokenize {HH_DIR} into --lengths and exit"
    )
    parser.add_argument(
        "--from-json", type=Path, help="rebuild --out's report from a saved (partial) JSON"
    )
    parser.add_argument("--trl-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()  # fmt: skip

    cuda = args.device.startswith("cuda")
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    if args.make_lengths:
        lengths = make_lengths(HH_DIR, args.lengths)
        print(f"{len(lengths['pairs'])} pairs -> {args.lengths}")
        return
    if args.trl_worker:
        config_json, lengths_path = args.trl_worker
        config = BenchConfig(**json.loads(config_json))
        print(json.dumps(trl_dpo(config, load_lengths(Path(lengths_path))["pairs"])))
        return

    config = BenchConfig(
        device=args.device,
        model=(args.model or ["1b" if cuda else "tiny"])[0],
        precision=args.precision or ("autocast" if cuda else "fp32"),
        batch_size=args.batch_size or (16 if cuda else 4),
        grouping=args.grouping,
        max_tokens=args.max_tokens,
        pad_to_multiple_of=args.pad_to_multiple_of,
        steps=args.steps or (12 if cuda else 3),
        warmup=args.warmup or (2 if cuda else 1),
        gradient_checkpointing=args.gradient_checkpointing,
        compile_layers=args.compile_layers,
    )
    if args.peak_tflops is None and cuda:
        args.peak_tflops = 989.0
    if not cuda and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # Large frees must go back to the OS for the resident set to follow the live tensors.
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
    if args.model and len(args.model) > 1 and args.cases != "precompute":
        parser.error("several --model values need --cases precompute")
    stem = {"all": "throughput", "precompute": "precompute", "levers": "throughput_levers"}
    out = args.out or RESULTS / f"{stem[args.cases]}_{args.device.split(':')[0]}.json"
    if args.cases == "precompute":
        report = run_precompute_benchmark(config, args.model or [config.model], args)
        write_json(out, report)
        table = precompute_markdown(report)
        write_text(out.with_suffix(".md"), table)
        print(table)
        return
    if args.from_json:
        # A run cut short by a time limit saves its JSON after every case: finish it here.
        report = json.loads(args.from_json.read_text())
        if "runs" in report:  # a `--cases precompute` report: only its Markdown to rebuild
            write_text(out.with_suffix(".md"), precompute_markdown(report))
            return
        report = finish_report(report, load_lengths(args.lengths), args.trl_bar_tokens_per_s)
    else:
        report = run_benchmark(config, args, out)
    write_json(out, report)
    table = markdown(report)
    write_text(out.with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
