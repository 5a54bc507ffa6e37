"""HH-shaped batches of random token ids: the HH lengths (`make_lengths`, saved in
`bench/hh_lengths.json`), the pools of draws cut into batches as the trainer cuts them, and
each method's batches in the form it reads.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from alol.atomic import write_json
from alol.data.batching import length_grouped_order, pack_to_token_budget
from alol.data.collate import (
    collate_pairs,
    collate_prompt_groups,
    locate_response_tokens,
    pack_pairs,
)
from alol.data.tokenize import TokenizedPair
from alol.method.objectives import OBJECTIVES
from bench.throughput.cases import PRECOMPUTE_METHODS, BenchConfig

BENCH = Path(__file__).resolve().parents[1]
LENGTHS_FILE = BENCH / "hh_lengths.json"
HH_DIR = BENCH.parent.parent / "shared" / "data" / "hh"
VOCAB_SIZE = 32_000
PAD_ID, EOS_ID, FIRST_WORD_ID = 0, 2, 4
MEGABATCH_FACTOR = 50
"""As the trainer's length grouping (sort 50 batches' worth of draws, cut, shuffle) and its
token-budget sampler (pack 50 budgets' worth)."""
DRAW_STREAM = 200_000
"""Length of the seeded stream of HH draws each batching mode takes a prefix of."""


# ---------------------------------------------------------------------------------------------
# HH lengths


def make_lengths(hh_dir: Path, out: Path, max_prompt: int = 640, max_response: int = 128) -> dict:
    """Tokenize the HH pairs with a 32k byte-level BPE trained on their own text and record each
    pair's (prompt, chosen, rejected) token counts, response counts including EOS."""
    from alol.data.formats import load_records
    from alol.data.tokenize import render_prompt, tokenize_pair
    from alol.demo.tiny_models import train_tokenizer

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
            f"{path} not found; run `python -m bench.throughput --make-lengths` once (it needs "
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
    if config.packing:
        batch.update(pack_pairs(pairs, batch["response_positions"]))
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
    batch["response_positions"] = locate_response_tokens(batch["response_mask"])
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
    """Share of the decoder's input that is padding: none in a packed batch's one row."""
    if all("packed_input_ids" in b for b in batches):
        return 0.0
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1.0 - real / sum(b["attention_mask"].numel() for b in batches)


def shared_tokens(batch: dict) -> tuple[int, int]:
    """(real, padded) tokens the prompt-shared pass feeds the decoder: each prompt once, then
    each response."""
    shared = batch["shared"]
    real = int(shared["prompt_attention_mask"].sum()) + int(shared["response_mask"].sum())
    return real, shared["prompt_attention_mask"].numel() + shared["response_mask"].numel()


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


def mean_padded_tokens(pairs: list[list[int]], config: BenchConfig) -> float:
    """Padded tokens (examples x longest length) of the run's fixed sequence batches, averaged
    over the pool: the unit the token-budget levers multiply."""
    fixed = replace(config, max_tokens=None, pad_to_multiple_of=None)
    _, lengths, batches = pool_batches(pairs, fixed, 1, np.random.default_rng(config.seed))
    return float(np.mean([len(batch) * max(lengths[i] for i in batch) for batch in batches]))
