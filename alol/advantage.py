"""A-LoL's one precompute pass: reference log-probs, V(x), R and A = R − V(x) for every pair.

Training then keeps no reference model in memory: this table holds everything the objectives
read from π_ref. It is cached on disk under a content hash of every input (model, data, reward,
value head, the settings that change the numbers), so a changed input never reuses a stale
cache. The same module selects the "leftover lunch" (A > 0) and draws training examples from it
with probability ∝ A (priority sampling), reproducibly and shardable across ranks.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import itertools
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from alol.compilation import compile_cache_free_parts, compile_decoder_layers
from alol.data import (
    DataError,
    RewardRecord,
    TokenizedPair,
    collate_pairs,
    render_prompt,
    tokenize_pair,
)
from alol.errors import AlolError
from alol.io import gather_in_order, on_main_process, write_atomic, write_json
from alol.logprobs import (
    causal_lm,
    position_ids_from_attention_mask,
    response_token_logprobs_and_hidden_states,
    token_logprobs_from_hidden_states,
)
from alol.rewards import RewardError, score
from alol.value import values_from_sequence_states

if TYPE_CHECKING:
    from alol.rewards import Reward
    from alol.value import ValueHead

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when the table's layout or meaning changes: it is part of every cache key."""

REFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The weight dtypes the reference may run in, by the names configs and cache keys use."""

_SCALAR_ARRAYS = ("reward", "value", "advantage", "ref_logp")
_COMPONENT_PREFIX = "component/"


class AdvantageCacheError(AlolError):
    """An advantage cache file is missing or unreadable."""


class PromptCacheError(AlolError):
    """The reference's KV cache cannot be re-indexed, so a prompt's cache cannot be copied to
    each of its responses (`AdvantageConfig.share_prompts`)."""


class NoPositiveAdvantageError(AlolError):
    """No training example has A > 0, or every reward is the same (so no response is better
    than another and the advantages hold nothing but V(x)'s errors): A-LoL has nothing to learn."""


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class AdvantageTable:
    """Per-example results of the precompute pass, aligned with the training records.

    Per-example arrays are float64 `[N]`. The reference log-prob of every response token
    (EOS included, in response order) is stored flat in float32: example `i` owns
    `ref_token_logps[offsets[i]:offsets[i + 1]]`, so ragged responses need no padding.
    """

    reward: np.ndarray
    value: np.ndarray
    advantage: np.ndarray
    ref_logp: np.ndarray
    ref_token_logps: np.ndarray
    offsets: np.ndarray
    response_length: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""
    """The cache key of the inputs this table was computed from ("" when not cached)."""

    def __post_init__(self) -> None:
        count = len(self.reward)
        for name in _SCALAR_ARRAYS + ("response_length",):
            if getattr(self, name).shape != (count,):
                raise ValueError(
                    f"'{name}' has shape {getattr(self, name).shape}, expected ({count},)"
                )
        for name, values in self.components.items():
            if values.shape != (count,):
                raise ValueError(
                    f"component '{name}' has shape {values.shape}, expected ({count},)"
                )
        if self.offsets.shape != (count + 1,) or self.offsets[0] != 0:
            raise ValueError(f"'offsets' must have shape ({count + 1},) and start at 0")
        if self.offsets[-1] != len(self.ref_token_logps):
            raise ValueError("'offsets' do not cover 'ref_token_logps' exactly")
        if not np.array_equal(np.diff(self.offsets), self.response_length):
            raise ValueError("'offsets' disagree with 'response_length'")

    @classmethod
    def from_examples(
        cls,
        reward: Sequence[float] | np.ndarray,
        value: Sequence[float] | np.ndarray,
        token_logps: Sequence[np.ndarray],
        components: dict[str, Sequence[float]] | None = None,
    ) -> AdvantageTable:
        """Assemble the table from per-example results; A = R − V(x) is computed here, once."""
        reward = np.asarray(reward, dtype=np.float64)
        value = np.asarray(value, dtype=np.float64)
        response_length = np.array([len(t) for t in token_logps], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(response_length)]).astype(np.int64)
        flat = [np.asarray(t, dtype=np.float32) for t in token_logps]
        return cls(
            reward=reward,
            value=value,
            advantage=reward - value,
            ref_logp=np.array([t.sum(dtype=np.float64) for t in flat], dtype=np.float64),
            ref_token_logps=np.concatenate(flat) if flat else np.zeros(0, np.float32),
            offsets=offsets,
            response_length=response_length,
            components={k: np.asarray(v, dtype=np.float64) for k, v in (components or {}).items()},
        )

    def __len__(self) -> int:
        return len(self.reward)

    def token_logps(self, index: int) -> np.ndarray:
        """Reference log-probs of example `index`'s response tokens, in order, EOS last."""
        return self.ref_token_logps[self.offsets[index] : self.offsets[index + 1]]

    def save(self, path: str | Path) -> Path:
        """Write the arrays as safetensors and a small JSON sidecar for humans, each atomically.

        The key is stored in both; `load` refuses a pair that disagrees (a write interrupted
        between the two files).
        """
        path = Path(path)
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in _array_names()}
        for name, values in self.components.items():
            arrays[_COMPONENT_PREFIX + name] = np.ascontiguousarray(values)
        metadata = {"key": self.key, "format_version": str(FORMAT_VERSION)}
        write_atomic(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))
        write_json(
            sidecar_path(path),
            {
                "key": self.key,
                "format_version": FORMAT_VERSION,
                "count": len(self),
                "components": sorted(self.components),
                "fraction_positive": float(np.mean(self.advantage > 0)) if len(self) else 0.0,
            },
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> AdvantageTable:
        """Read a table written by `save`; a missing or damaged cache says how to rebuild it."""
        path = Path(path)
        sidecar = sidecar_path(path)
        for required in (path, sidecar):
            if not required.is_file():
                raise AdvantageCacheError(
                    f"advantage cache file {required} not found; run `alol advantage` to compute it"
                )
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            info = json.loads(sidecar.read_text(encoding="utf-8"))
            return cls._from_stored(arrays, metadata, info)
        except (OSError, ValueError, SafetensorError) as error:
            raise AdvantageCacheError(
                f"advantage cache {path} is unreadable ({error}); delete it and {sidecar.name}, "
                "then rerun `alol advantage` to recompute it"
            ) from error

    @classmethod
    def _from_stored(
        cls, arrays: dict[str, np.ndarray], metadata: dict[str, str], info: dict[str, Any]
    ) -> AdvantageTable:
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(
                f"written in format {metadata.get('format_version')}, this alol reads {FORMAT_VERSION}"
            )
        if info.get("key") != metadata.get("key"):
            raise ValueError("the JSON sidecar and the tensors name different keys")
        missing = [name for name in _array_names() if name not in arrays]
        if missing:
            raise ValueError(f"arrays {missing} are missing")
        components = {
            name.removeprefix(_COMPONENT_PREFIX): values
            for name, values in arrays.items()
            if name.startswith(_COMPONENT_PREFIX)
        }
        return cls(
            **{name: arrays[name] for name in _array_names()},
            components=components,
            key=metadata["key"],
        )


def _array_names() -> tuple[str, ...]:
    return _SCALAR_ARRAYS + ("ref_token_logps", "offsets", "response_length")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar that sits beside a table's safetensors file."""
    return Path(path).with_suffix(".json")


# ---------------------------------------------------------------------------------------------
# Fingerprints and the cache

# Config, weights, tokenizer, chat template, and the modules of trust_remote_code models.
_MODEL_FILE_SUFFIXES = {
    ".json",
    ".safetensors",
    ".bin",
    ".model",
    ".txt",
    ".jinja",
    ".tiktoken",
    ".py",
}
_NOT_MODEL_FILES = {"trainer_state.json", "training_args.bin"}


def fingerprint_model(path_or_model: str | Path | torch.nn.Module, tokenizer: Any = None) -> str:
    """A sha256 of everything that determines a model's outputs.

    - A directory: the full content of its top-level config, weight and tokenizer files
      (`*.json`, `*.safetensors`, `*.bin`, `*.model`, `*.txt`, `*.jinja`, `*.tiktoken`, `*.py`,
      but not a Trainer checkpoint's `trainer_state.json`/`training_args.bin`), keyed by file
      name, so a copied or moved directory keeps its fingerprint. Hashing reads every byte
      once (about 1 GB/s); the per-file digests are memoised by path, size and mtime, so later
      calls in the same process are free.
    - A hub id: the same, on its snapshot in the local Hugging Face cache.
    - An in-memory module (a model, a PEFT model, a value head): its config (if any) and every
      tensor of its state_dict. This copies GPU tensors to the CPU; prefer paths for big models.

    `tokenizer`, when given, is hashed in too (needed for in-memory models; a directory
    already holds its tokenizer files).
    """
    digest = hashlib.sha256()
    if isinstance(path_or_model, torch.nn.Module):
        _update_with_module(digest, path_or_model)
    else:
        digest.update(_directory_fingerprint(_model_directory(path_or_model)).encode())
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as directory:
            tokenizer.save_pretrained(directory)
            digest.update(_directory_fingerprint(Path(directory)).encode())
    return digest.hexdigest()


def _model_directory(name: str | Path) -> Path:
    path = Path(name)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name), local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"model {name!r} is neither a directory nor a model in the local Hugging Face cache; "
            "pass the path of a saved model"
        ) from error


def _directory_fingerprint(directory: Path) -> str:
    files = sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and path.suffix in _MODEL_FILE_SUFFIXES
        and path.name not in _NOT_MODEL_FILES
    )
    if not files:
        raise FileNotFoundError(
            f"{directory} holds no model, config or tokenizer files to fingerprint"
        )
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        file_digest = _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        digest.update(f"{path.name}\0{file_digest}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1024)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """`size` and `mtime_ns` are part of the memo key only: a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def _update_with_module(digest: Any, module: torch.nn.Module) -> None:
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{flat.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the buffer, not a copy


def fingerprint_records(records: Sequence[RewardRecord]) -> str:
    """A sha256 of what the precompute reads from each record, in order: prompt, response, reward.

    `id` and `source` do not change any number, so they do not change the fingerprint.
    """
    digest = hashlib.sha256()
    for record in records:
        line = json.dumps(
            [record.prompt, record.response, record.reward], sort_keys=True, ensure_ascii=False
        )
        # JSON escapes newlines inside strings, so a newline separates records unambiguously.
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def cache_key(
    model_fp: str,
    data_fp: str,
    reward_fp: str | None,
    config_dict: dict[str, Any],
    value_fp: str | None = None,
) -> str:
    """The sha256 that names an advantage table: it changes with every input and only with them.

    `reward_fp` is None when rewards come from the data, `value_fp` (the value head's
    `fingerprint_model`) None when V(x) = 0; `config_dict` holds the settings that change the
    numbers (`AdvantageConfig.key_fields()`).
    """
    inputs = {
        "format_version": FORMAT_VERSION,
        "model": model_fp,
        "data": data_fp,
        "reward": reward_fp,
        "value": value_fp,
        "config": config_dict,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"advantages-{key[:16]}.safetensors"


def load_or_compute(
    cache_dir: str | Path, key: str, compute: Callable[[], AdvantageTable]
) -> AdvantageTable:
    """Reuse the cached table for `key` when there is one, else compute it and cache it.

    Under several processes all of them compute (each its share, see `compute_advantages`),
    the main process writes the cache, and the others wait until it is in place.
    """
    path = cache_path(cache_dir, key)
    if path.exists():
        try:
            table = AdvantageTable.load(path)
        except AdvantageCacheError as error:
            logger.warning("recomputing advantages: %s", error)
        else:
            if table.key == key:
                logger.info("reusing advantage cache %s", path)
                return table
            logger.info("advantage cache %s was computed from other inputs; recomputing", path)
    table = replace(compute(), key=key)
    on_main_process(lambda: table.save(path))
    logger.info("computed advantages for %d examples and cached them in %s", len(table), path)
    return table


# ---------------------------------------------------------------------------------------------
# The precompute pass


@dataclass
class AdvantageConfig:
    """How the precompute pass runs; only the length limits and the dtype change its numbers."""

    batch_size: int = 16
    """Pairs per reference forward pass (batches are grouped by length, so padding is small)."""
    max_prompt_length: int = 640
    """Prompt tokens kept (the paper's HHA setting); must match training's tokenization."""
    max_response_length: int = 128
    """Response tokens kept, EOS included; must match training's tokenization."""
    vocab_chunk_size: int | None = None
    """Vocabulary slice per LM-head matmul (None: whole vocabulary); lowers peak memory."""
    reference_dtype: str = "float32"
    """The dtype of the reference's weights ("float32", "bfloat16" or "float16"). It changes
    the log-probs and V(x), so it enters the cache key; `compute_advantages` checks that the
    model it is given is in it. A policy trained in bf16 is compared with a bf16 reference."""
    show_progress: bool = True
    """Show progress bars."""
    reward_timeout: float | None = None
    """Seconds one reward batch may take before the pass stops with an error (None: no limit)."""
    compile_layers: bool = False
    """torch.compile the reference's decoder layers in place before the pass
    (`alol.compilation`): with `share_prompts`, their cache-free parts (norms, MLP; see
    `compile_cache_free_parts`), else whole layers. A one-off compile wait; the numbers change
    by float rounding only, so it is not in the cache key either."""
    compile_mode: str | None = None
    """torch.compile mode for `compile_layers` (None: "default")."""
    share_prompts: bool = True
    """Score all responses of a prompt from ONE forward over it: the prompt's KV cache is copied
    to each response, which then runs alone (HH's two responses per prompt cost p + 2r tokens
    instead of 2(p + r)). Same numbers up to float rounding, hence not in the cache key. Memory:
    the copied cache holds every layer's keys and values of each response's prompt + response
    (the per-pair pass keeps none), e.g. ~0.5 MB per token for a 7B multi-head model in bf16.
    A model whose cache has no `batch_select_indices` (legacy tuple caches, some remote-code
    models) falls back to one forward per pair with a logged warning rather than an error: the
    setting changes speed only, and a run that the slower path completes correctly should not
    stop."""

    def __post_init__(self) -> None:
        if self.reference_dtype not in REFERENCE_DTYPES:
            raise ValueError(
                f"AdvantageConfig.reference_dtype must be one of {sorted(REFERENCE_DTYPES)}, "
                f"got {self.reference_dtype!r}"
            )

    def key_fields(self) -> dict[str, Any]:
        """The settings that change the table's numbers, for `cache_key` (batching does not)."""
        return {
            "max_prompt_length": self.max_prompt_length,
            "max_response_length": self.max_response_length,
            "reference_dtype": self.reference_dtype,
        }


def compute_advantages(
    model: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[RewardRecord],
    config: AdvantageConfig,
    value_head: ValueHead | None = None,
    reward: Reward | None = None,
) -> AdvantageTable:
    """One pass of the frozen reference model over the training pairs: log-probs, V(x), R, A.

    Rewards come from `reward` (all components kept) when given, else from each record's
    stored reward. Without a value head V(x) = 0, which is what objectives that use the reward
    alone (`wbc`, `r_lol`, …) need; with one, V(x) is read off the same forward pass that
    scores the response (see `score_reference_batch`). With `config.share_prompts`, records
    whose rendered prompts are equal form a group, and each group's prompt runs once (see
    `score_shared_prompt_batch`). Under several processes (`accelerate launch`), each process
    computes every world_size-th group (or pair) and every process returns the whole table,
    in record order.
    """
    if not records:
        raise ValueError("no training records to compute advantages for")
    _check_reference_dtype(model, config)
    if config.compile_layers:
        if config.share_prompts:  # the prompt-shared pass runs the layers with a KV cache
            compile_cache_free_parts(model, config.compile_mode)
        else:
            compile_decoder_layers(model, config.compile_mode)
    if reward is None:
        _check_stored_rewards(records)
    prompts = [render_prompt(record.prompt, tokenizer) for record in records]
    responses = [record.response for record in records]
    # A process computes whole units: a prompt group is never split between two processes.
    units = _prompt_groups(prompts) if config.share_prompts else [[i] for i in range(len(prompts))]

    def compute(unit_numbers: list[int]) -> list[list[tuple[dict[str, float], float, np.ndarray]]]:
        indices = [i for number in unit_numbers for i in units[number]]
        part_prompts = [prompts[i] for i in indices]
        part_responses = [responses[i] for i in indices]
        if reward is None:
            scores = [_stored_scores(records[i]) for i in indices]
        else:
            scores = _score(
                reward, [records[i] for i in indices], part_prompts, part_responses, config
            )
        token_logps, values = _reference_pass(
            model, tokenizer, part_prompts, part_responses, value_head, config
        )
        results = iter(zip(scores, values, token_logps, strict=True))
        return [[next(results) for _ in units[number]] for number in unit_numbers]

    results: list[Any] = [None] * len(records)
    for unit, unit_results in zip(units, gather_in_order(len(units), compute), strict=True):
        for index, result in zip(unit, unit_results, strict=True):
            results[index] = result
    scores = [s for s, _, _ in results]
    return AdvantageTable.from_examples(
        reward=[s["total"] for s in scores],
        value=[v for _, v, _ in results],
        token_logps=[t for _, _, t in results],
        components=_shared_components(scores),
    )


def _prompt_groups(prompts: list[str]) -> list[list[int]]:
    """Indices of the records of each distinct prompt text, groups in order of first appearance.
    Equal texts tokenize alike, so a group shares its prompt ids (checked at collation)."""
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(index)
    return list(groups.values())


def _check_reference_dtype(model: torch.nn.Module, config: AdvantageConfig) -> None:
    """The cache key names `config.reference_dtype`: a model in another dtype would cache
    numbers under the wrong name."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if dtype != REFERENCE_DTYPES[config.reference_dtype]:
        name = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"the reference model's weights are {name} but AdvantageConfig.reference_dtype is "
            f"{config.reference_dtype!r}; set reference_dtype={name!r}, or load the model with "
            f"dtype=torch.{config.reference_dtype}"
        )


def _check_stored_rewards(records: Sequence[RewardRecord]) -> None:
    for number, record in enumerate(records):
        if record.total_reward is None:
            raise DataError(
                f"record {number} has no reward; give every record a reward, or pass a reward "
                "function to score them",
                file=record.source or None,
                field="reward",
            )


def _stored_scores(record: RewardRecord) -> dict[str, float]:
    """The record's reward as score() returns one: its components, if any, and "total"."""
    components = record.reward if isinstance(record.reward, dict) else {}
    return {**{k: float(v) for k, v in components.items()}, "total": float(record.total_reward)}


def _shared_components(scores: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-component rewards, kept only when every record has the same components."""
    names = {tuple(sorted(name for name in s if name != "total")) for s in scores}
    if len(names) != 1:
        return {}
    return {name: [s[name] for s in scores] for name in next(iter(names))}


def _score(
    reward: Reward,
    records: Sequence[RewardRecord],
    prompts: list[str],
    responses: list[str],
    config: AdvantageConfig,
) -> list[dict[str, float]]:
    """Score batch by batch; a failing batch is named with the data lines of its records."""
    scores: list[dict[str, float]] = []
    starts = range(0, len(records), config.batch_size)
    for number, start in enumerate(tqdm(starts, desc="rewards", disable=not config.show_progress)):
        batch = slice(start, start + config.batch_size)
        try:
            scores += score(
                reward,
                prompts[batch],
                responses[batch],
                batch_size=config.batch_size,
                show_progress=False,
                timeout=config.reward_timeout,
            )
        except RewardError as error:
            sources = ", ".join(r.source or "(no source)" for r in records[batch])
            raise RewardError(
                f"{error}. In this process's precompute that is batch {number}, whose records "
                f"are, in order: {sources}"
            ) from error
    return scores


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


def _reference_pass(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    value_head: ValueHead | None,
    config: AdvantageConfig,
) -> tuple[list[np.ndarray], list[float]]:
    """Each pair's response-token log-probs under `model` and V(x) of its prompt, in eval mode."""
    pairs = [
        tokenize_pair(
            tokenizer, prompt, response, config.max_prompt_length, config.max_response_length
        )
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    pad_token_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    if value_head is not None:
        # A copy of the (tiny) head on the model's device: the hidden states stay where they are.
        value_head = copy.deepcopy(value_head).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()  # no dropout: the reference must score each pair deterministically
    try:
        if config.share_prompts:
            try:
                return _score_prompt_groups(
                    model, pairs, _prompt_groups(prompts), pad_token_id, value_head, config
                )
            except PromptCacheError as error:
                logger.warning("%s. Scoring every pair with its own prompt forward instead", error)
        return _score_pairs(model, pairs, pad_token_id, value_head, config)
    finally:
        model.train(was_training)


def _score_pairs(
    model: torch.nn.Module,
    pairs: list[TokenizedPair],
    pad_token_id: int,
    value_head: ValueHead | None,
    config: AdvantageConfig,
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
    config: AdvantageConfig,
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


def collate_prompt_groups(
    groups: list[list[TokenizedPair]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Pad a batch of prompt groups (pairs that share their prompt) for `score_shared_prompt_batch`.

    Returns the distinct prompts, left-padded so each ends in the last column, whose state
    predicts the first response token: `prompt_input_ids` / `prompt_attention_mask` `[G, P]`
    long; the responses, right-padded and group by group: `response_input_ids` `[R, Lr]` long
    and `response_mask` `[R, Lr]` bool (True on response tokens, EOS included); and `owner`
    `[R]` long, the prompt row of each response.
    """
    if not groups or not all(groups):
        raise ValueError("no prompt groups to collate, or an empty group")
    prompts = [group[0].prompt_ids for group in groups]
    for prompt_ids, group in zip(prompts, groups, strict=True):
        if any(pair.prompt_ids != prompt_ids for pair in group):
            raise ValueError(
                "the pairs of one prompt group hold different prompt ids; group only pairs whose "
                "rendered prompt text is equal and that were tokenized with the same limits"
            )
    responses = [pair.response_ids for group in groups for pair in group]
    prompt_width, response_width = max(map(len, prompts)), max(map(len, responses))
    prompt_input_ids = torch.full((len(prompts), prompt_width), pad_token_id, dtype=torch.long)
    prompt_attention_mask = torch.zeros((len(prompts), prompt_width), dtype=torch.long)
    for row, prompt_ids in enumerate(prompts):
        prompt_input_ids[row, prompt_width - len(prompt_ids) :] = torch.tensor(prompt_ids)
        prompt_attention_mask[row, prompt_width - len(prompt_ids) :] = 1
    response_input_ids = torch.full(
        (len(responses), response_width), pad_token_id, dtype=torch.long
    )
    response_mask = torch.zeros((len(responses), response_width), dtype=torch.bool)
    for row, response_ids in enumerate(responses):
        response_input_ids[row, : len(response_ids)] = torch.tensor(response_ids)
        response_mask[row, : len(response_ids)] = True
    owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(list(map(len, groups))))
    return {
        "prompt_input_ids": prompt_input_ids,
        "prompt_attention_mask": prompt_attention_mask,
        "response_input_ids": response_input_ids,
        "response_mask": response_mask,
        "owner": owner,
    }


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
            "a prompt's cache cannot be copied to each of its responses; set "
            "AdvantageConfig.share_prompts=False to score each pair with its own prompt forward"
        )
    cache.batch_select_indices(owner)
    return cache


# ---------------------------------------------------------------------------------------------
# Statistics and the report

_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def advantage_stats(table: AdvantageTable) -> dict[str, Any]:
    """Count, fraction with A > 0, and mean/std (population)/percentiles of R, V(x) and A.

    Percentiles interpolate linearly between order statistics (numpy's default).
    """
    if len(table) == 0:
        raise ValueError("the advantage table is empty; there is nothing to summarise")
    return {
        "count": len(table),
        "fraction_positive": float(np.mean(table.advantage > 0)),
        "reward": _summary(table.reward),
        "value": _summary(table.value),
        "advantage": _summary(table.advantage),
        "components": {name: _summary(values) for name, values in sorted(table.components.items())},
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    summary = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    for percentile, quantile in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True):
        summary[f"p{percentile}"] = float(quantile)
    return summary


def write_advantage_report(table: AdvantageTable, directory: str | Path) -> dict[str, Any]:
    """Write `advantage_stats.json` and `advantage_hist.png` (R, V(x), A) into `directory`.

    This is a data-quality audit on its own: the fraction of pairs with A > 0 is the share
    of the data A-LoL will learn from.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    stats = advantage_stats(table)
    write_json(directory / "advantage_stats.json", stats)

    figure = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    reward_axes, value_axes, advantage_axes = figure.subplots(1, 3)
    bins = min(50, max(10, len(table) // 20))
    reward_axes.hist(table.reward, bins=bins, color="tab:green")
    reward_axes.set(title="reward R", xlabel="R", ylabel="examples")
    value_axes.hist(table.value, bins=bins, color="tab:blue")
    value_axes.set(title="value V(x)", xlabel="V(x)")
    advantage_axes.hist(table.advantage, bins=bins, color="tab:orange")
    advantage_axes.axvline(0.0, color="black", linestyle="--", linewidth=1)
    advantage_axes.set(
        title=f"advantage A = R − V(x): {stats['fraction_positive']:.1%} positive", xlabel="A"
    )
    write_atomic(
        directory / "advantage_hist.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100)
    )
    return stats


# ---------------------------------------------------------------------------------------------
# Choosing and drawing training examples

Sampling = Literal["uniform", "advantage", "reward"]


def select_training_examples(
    table: AdvantageTable, positive_only: bool, sampling: Sampling
) -> tuple[np.ndarray, np.ndarray | None]:
    """The dataset indices to train on and their sampling weights (None: uniform).

    `positive_only` keeps the leftover lunch, A > 0, and refuses rewards that are all equal.
    "advantage" weights each kept example by
    A (A-LoL's priority sampling), "reward" by R (rewards must be ≥ 0; they are not shifted,
    since a shift would change which examples matter).
    """
    indices = np.arange(len(table), dtype=np.int64)
    if positive_only:
        if len(table) > 1 and np.all(table.reward == table.reward[0]):
            raise NoPositiveAdvantageError(
                f"every reward equals {table.reward[0]:g} across the {len(table)} training "
                "examples, so no response is better than another and A = R − V(x) only "
                "reflects the errors of V(x). Check that the reward function scores these "
                "responses differently (or that the data's 'reward' field varies)."
            )
        indices = indices[table.advantage > 0]
        if len(indices) == 0:
            raise NoPositiveAdvantageError(_no_positive_message(table))
    if sampling == "uniform":
        return indices, None
    if sampling == "advantage":
        if not positive_only:
            raise ValueError(
                "sampling='advantage' needs positive_only=True: only A > 0 can be a probability"
            )
        return indices, table.advantage[indices]
    if sampling == "reward":
        weights = table.reward[indices]
        if np.any(weights < 0) or not np.any(weights > 0):
            raise ValueError(
                f"sampling='reward' needs rewards ≥ 0 with at least one > 0, but they range over "
                f"[{weights.min():g}, {weights.max():g}]; use a non-negative reward (e.g. the "
                "sigmoid of a logit) or sampling='uniform'"
            )
        return indices, weights
    raise ValueError(f"unknown sampling {sampling!r}; choose 'uniform', 'advantage' or 'reward'")


def _no_positive_message(table: AdvantageTable) -> str:
    return (
        f"none of the {len(table)} training examples has a positive advantage A = R − V(x) "
        f"(largest A = {table.advantage.max():.4g}, mean R = {table.reward.mean():.4g}, "
        f"mean V(x) = {table.value.mean():.4g}). Check that the value head was fitted with the "
        "same reward and on prompts like these, or train with an objective that needs no value "
        "('wbc', 'r_lol', 'nll')."
    )


def budget_steps(nll_steps: int, fraction_positive: float) -> int:
    """A-LoL's step budget: `fraction_positive × nll_steps`, rounded up, at least 1."""
    if nll_steps < 1 or not 0.0 <= fraction_positive <= 1.0:
        raise ValueError(
            f"need nll_steps ≥ 1 and 0 ≤ fraction_positive ≤ 1, got {nll_steps}, {fraction_positive}"
        )
    # round() first so float noise (9000 × 0.3 = 2700.0000000000005) does not add a step
    return max(1, math.ceil(round(nll_steps * fraction_positive, 9)))


class PrioritySampler(torch.utils.data.Sampler[int]):
    """Draw dataset indices with replacement, with probability ∝ weight, reproducibly.

    The draw depends only on (seed, epoch): iterating twice gives the same order, so a resumed
    run that skips its first k batches sees exactly the batches it would have seen. With
    `world_size > 1` every rank makes the same global draw, padded to a multiple of
    `world_size` by drawing further, and takes the strided share `rank::world_size`.
    """

    _CHUNK = 1 << 16
    """Draws are made in fixed-size chunks, so a longer draw extends a shorter one."""

    def __init__(
        self,
        indices: Sequence[int] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None,
        num_samples: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        if len(self.indices) == 0:
            raise ValueError("PrioritySampler needs at least one index to draw from")
        if weights is None:
            self.weights = torch.ones(len(self.indices), dtype=torch.float64)
        else:
            self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if self.weights.shape != self.indices.shape:
                raise ValueError(f"got {len(self.indices)} indices but {len(self.weights)} weights")
            if (
                not torch.all(torch.isfinite(self.weights) & (self.weights >= 0))
                or self.weights.sum() <= 0
            ):
                raise ValueError("sampling weights must be finite, ≥ 0, and not all 0")
        if num_samples < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need num_samples ≥ 1 and 0 ≤ rank < world_size, got {num_samples}, {rank}, {world_size}"
            )
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def __iter__(self) -> Iterator[int]:
        global_draw = self._global_draw(len(self) * self.world_size)
        return iter(global_draw[self.rank :: self.world_size].tolist())

    def _global_draw(self, count: int) -> torch.Tensor:
        return torch.tensor(list(itertools.islice(self.draws(), count)), dtype=torch.long)

    def draws(self) -> Iterator[int]:
        """The endless global draw of this (seed, epoch), chunk by chunk: every rank's share and
        any token-budget batching read the same stream."""
        # SeedSequence mixes (seed, epoch), so seed 0 epoch 1 and seed 1 epoch 0 differ.
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[
            0
        ]
        generator = torch.Generator().manual_seed(int(state))
        while True:
            chunk = torch.multinomial(
                self.weights, self._CHUNK, replacement=True, generator=generator
            )
            yield from self.indices[chunk].tolist()
