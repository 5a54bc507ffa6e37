"""Models and the measured steps: the random-init model, a training step of each method and the
reference pass, how a case is timed (`measure`, `run_case`), the model variants and levers on
the A-LoL step, and the cases run outside the main loop (compiled precompute, 640/128 rows).
"""

from __future__ import annotations

import argparse
import copy
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM

from alol.atomic import write_text
from alol.data.batching import example_weight
from alol.method.batches import objective_batch
from alol.method.objectives import OBJECTIVES, ObjectiveConfig
from alol.method.value_head import ValueHead
from alol.models.compilation import compile_cache_free_parts, compile_decoder_layers
from alol.models.logprobs import (
    naive_response_token_logprobs,
    packed_response_token_logprobs,
    response_token_logprobs,
)
from alol.models.reference import score_reference_batch, score_shared_prompt_batch
from bench.common import PeakMemory, synchronize
from bench.throughput.cases import (
    MODEL_SHAPES,
    PRECOMPUTE_METHODS,
    SHARED_PROMPT_METHODS,
    BenchConfig,
)
from bench.throughput.hh_batches import (
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    examples_in,
    fixed_shape_batches,
    fixed_shape_pair_batches,
    mean_padded_tokens,
    method_batches,
    padding_fraction,
    precompute_batches,
    shared_tokens,
)
from bench.throughput.report import add_mfu, describe

INTERLEAVED_ROUNDS = 7
"""Alternating timings of A-LoL's and NLL's step for the step-time target (median of each)."""
SEQUENCE_KEYS = ("input_ids", "attention_mask", "response_mask", "response_positions")


START = time.perf_counter()
"""When the run began (this module's import): the clock that `--lever-budget-s` and
`--compile-after-s` read."""


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
    sync_free = {"response_positions": batch["response_positions"], "right_padded": True}
    with autocast(config):
        if config.packing:
            token_logps = packed_response_token_logprobs(
                model,
                batch["packed_input_ids"],
                batch["packed_position_ids"],
                batch["packed_response_columns"],
                batch["response_positions"],
                batch["response_mask"].shape,
            )
            output = OBJECTIVES[method].loss(
                objective_batch(OBJECTIVES[method].data, token_logps, batch), ObjectiveConfig()
            )
            return output.loss
        token_logps = response_token_logprobs(
            model,
            batch["input_ids"],
            batch["attention_mask"],
            batch["response_mask"],
            **(sync_free if config.sync_free else {}),
        )
    output = OBJECTIVES[method].loss(
        objective_batch(OBJECTIVES[method].data, token_logps, batch), ObjectiveConfig()
    )
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
    """The reference pass as `alol.models.precompute` runs it: eval, inference mode, token log-probs and
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
                        token_logps = naive_response_token_logprobs(
                            model, rows["input_ids"], rows["attention_mask"], mask
                        )
                    else:
                        token_logps, values = score_reference_batch(
                            model, rows, head, right_padded=True
                        )
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
    ("masked decoder, positions found on the device (3 more syncs)", {"sync_free": False}),
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
    ("packing (padding-free, block-causal mask)", {"packing": True}),
    ("packing, flex attention", {"packing": True, "attention": "flex_attention"}),
    ("packing, token budget 4x", {"packing": True, "max_tokens": 4}),
    ("packing, flex attention, token budget 4x", {"packing": True, "attention": "flex_attention", "max_tokens": 4}),
    ("bf16 weights, micro-batch x2, compiled layers", {"precision": "bf16", "batch_size": 2, "compile_layers": True}),
]  # fmt: skip
"""Changes to the run's config, one lever at a time unless named together. `batch_size` is a
multiplier of the run's; `max_tokens` a multiple of the run's fixed batches' mean padded tokens
(`mean_padded_tokens`, rounded to 64), and the label then names the budget. bf16 weights, the
fused AdamW and flex attention are CUDA-only here (slow, absent or without backward on a CPU). Compiled cases run after every
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
        gpu_only = (
            variant.precision == "bf16"
            or not variant.fused_adamw
            or variant.attention == "flex_attention"  # no backward on a CPU
        )
        if variant != config and (cuda or not gpu_only):
            variants.append((label, variant))
    return sorted(variants, key=lambda item: item[1].compile_layers)


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
# Compiled precompute and 640/128 rows


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
