"""Benchmark: response-token log-probs, full logits vs response-only vs response-only + chunks.

    pip install -e .                              # once: the script imports alol
    python -m bench.logprobs                      # CPU -> bench/results/logprobs_cpu.{json,md}
    python -m bench.logprobs --device cuda        # GPU -> bench/results/logprobs_cuda.{json,md}

A Llama-shaped, randomly initialised model scores a batch shaped like the paper's HH setup
(prompt 640 + response 128 tokens) in two modes: `no_grad` (the one-pass reference precompute)
and `forward_backward` (a training step without the optimizer).

Time: median over a few rounds that interleave all methods in one process. Peak memory: one
fresh subprocess per (method, mode), so one method's peak cannot hide under another's; the
high-water mark above the memory held once the model and batch exist. On CUDA that is
`torch.cuda.max_memory_allocated`; on CPU the process's peak resident set (VmHWM, reset
through /proc/self/clear_refs), with glibc told to return large frees to the OS at once so
that the resident set follows the tensors alive.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from alol.models.logprobs import (
    naive_response_token_logprobs,
    response_token_logprobs,
    sequence_logprobs,
)
from bench.common import RESULTS, PeakMemory, device_name, run_module, synchronize, write_results

METHODS = ("full_logits", "response_only", "response_only_chunked")
LIGER_METHOD = "liger_fused"
"""Liger-Kernel's fused linear cross-entropy on the response rows (reduction "none": one
log-prob per token, no [tokens, vocab] logits): a CUDA row when `liger_kernel` imports."""


def methods(device: str) -> tuple[str, ...]:
    if device.startswith("cuda") and importlib.util.find_spec("liger_kernel") is not None:
        return (*METHODS, LIGER_METHOD)
    return METHODS


MODES = ("no_grad", "forward_backward")


@dataclass
class BenchConfig:
    device: str = "cpu"
    dtype: str = "float32"
    """bfloat16 is the realistic choice on a GPU; float32 on CPU, where bf16 matmuls are slow."""
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    vocab_size: int = 32000
    batch_size: int = 4
    prompt_length: int = 640
    response_length: int = 128
    vocab_chunk_size: int = 8192
    """Does not divide 32000: the last slice is short, as it is for most real vocabularies."""
    reps: int = 3
    """Timed repetitions after one untimed warm-up; the median is reported."""


def build_model(config: BenchConfig) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.hidden_size * 4,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.prompt_length + config.response_length,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(model_config).to(config.device, getattr(torch, config.dtype))
    return model.eval()  # no dropout in Llama anyway; eval keeps both paths deterministic


def build_batch(config: BenchConfig) -> dict[str, torch.Tensor]:
    length = config.prompt_length + config.response_length
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(
        3, config.vocab_size, (config.batch_size, length), generator=generator
    )
    response_mask = torch.zeros(config.batch_size, length, dtype=torch.bool)
    response_mask[:, config.prompt_length :] = True
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "response_mask": response_mask,
    }
    return {key: value.to(config.device) for key, value in batch.items()}


def token_logprobs(method: str, model, batch, config: BenchConfig) -> torch.Tensor:
    if method == "full_logits":
        return naive_response_token_logprobs(model, **batch)
    if method == LIGER_METHOD:
        return liger_token_logprobs(model, batch)
    chunk = config.vocab_chunk_size if method == "response_only_chunked" else None
    return response_token_logprobs(model, **batch, vocab_chunk_size=chunk)


def liger_token_logprobs(model, batch) -> torch.Tensor:
    """The response tokens' log-probs as minus Liger's per-token cross-entropy of the hidden
    states that predict them, in the same [B, L] layout as alol's."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    hidden = model.model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
    rows, cols = batch["response_mask"].nonzero(as_tuple=True)
    losses = liger_fused_linear_cross_entropy(
        hidden[rows, cols - 1], model.lm_head.weight, batch["input_ids"][rows, cols],
        reduction="none", accum_dtype=torch.float32,
    )  # fmt: skip
    token_logps = torch.zeros(batch["input_ids"].shape, device=hidden.device)
    return token_logps.index_put((rows, cols), -losses.float())


def run_once(method: str, mode: str, model, batch, config: BenchConfig) -> None:
    if mode == "no_grad":
        with torch.no_grad():
            token_logprobs(method, model, batch, config)
        return
    model.zero_grad(set_to_none=True)
    nll = -sequence_logprobs(token_logprobs(method, model, batch, config), batch["response_mask"])
    nll.mean().backward()


def time_all(config: BenchConfig) -> dict[tuple[str, str], list[float]]:
    """Seconds per run of every (method, mode), one untimed warm-up each, then `reps` rounds
    that interleave the methods, so that load from other processes hits them alike."""
    model, batch = build_model(config), build_batch(config)
    cases = [(method, mode) for mode in MODES for method in methods(config.device)]
    for method, mode in cases:
        run_once(method, mode, model, batch, config)
    seconds = {case: [] for case in cases}
    for _ in range(config.reps):
        for method, mode in cases:
            synchronize(config.device)
            start = time.perf_counter()
            run_once(method, mode, model, batch, config)
            synchronize(config.device)
            seconds[method, mode].append(time.perf_counter() - start)
    return seconds


def agreement(config: BenchConfig) -> dict[str, float]:
    """Each method's largest |Δ log p| on the response tokens against full logits."""
    model, batch = build_model(config), build_batch(config)
    with torch.no_grad():
        logps = {m: token_logprobs(m, model, batch, config) for m in methods(config.device)}
    full = logps["full_logits"]
    return {m: float((v - full)[batch["response_mask"]].abs().max()) for m, v in logps.items()}


def peak_memory_mib(method: str, mode: str, config: BenchConfig) -> float:
    """Peak memory of one run above what the built model and batch hold."""
    model, batch = build_model(config), build_batch(config)
    memory = PeakMemory(config.device)
    memory.reset()
    run_once(method, mode, model, batch, config)
    return memory.peak_above_baseline_mib()


def peak_memory_in_subprocess(method: str, mode: str, config: BenchConfig) -> float:
    """A fresh process per measurement, so that a peak is this method's alone. glibc is told to
    give every large free back to the OS at once (which slows allocation, hence the separate
    timing run), so the resident set follows the tensors alive."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    config_json = json.dumps(asdict(config))
    result = run_module(
        "bench.logprobs", "--memory-worker", method, mode, "--config", config_json, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(f"peak memory of {method}/{mode} failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def markdown_table(report: dict) -> str:
    config = report["config"]
    tokens = config["batch_size"] * (config["prompt_length"] + config["response_length"])
    lines = [
        f"# Response-token log-probs on {report['device']}",
        "",
        f"Llama-shaped random model: hidden {config['hidden_size']}, {config['num_layers']} layers, "
        f"vocab {config['vocab_size']}, {config['dtype']}. Batch {config['batch_size']} x "
        f"(prompt {config['prompt_length']} + response {config['response_length']}) = {tokens} "
        f"tokens. Vocabulary chunk {config['vocab_chunk_size']}. Median of {config['reps']} reps; "
        "peak memory above the built model and batch.",
        f"torch {report['torch']}, transformers {report['transformers']}; "
        f"1-minute load average {report['load_average_1min']:.1f} at the end.",
        "",
        "| mode | method | median time (s) | vs full logits | peak memory (MiB) | vs full logits |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        rows = [row for row in report["results"] if row["mode"] == mode]
        full = next(row for row in rows if row["method"] == "full_logits")
        for row in rows:
            lines.append(
                f"| {mode} | {row['method']} | {row['median_s']:.3f} | "
                f"{row['median_s'] / full['median_s']:.2f}x | {row['peak_memory_mib']:.0f} | "
                f"{row['peak_memory_mib'] / full['peak_memory_mib']:.2f}x |"
            )
    diffs = ", ".join(f"{m} {d:.2e}" for m, d in report["max_abs_diff_vs_full_logits"].items())
    lines += ["", f"Largest |Δ log p| against full logits: {diffs}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--reps", type=int, default=BenchConfig.reps, help="timed rounds")
    parser.add_argument("--out", type=Path, default=None, help="JSON path; the .md goes beside it")
    parser.add_argument(
        "--memory-worker", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_worker:
        print(peak_memory_mib(*args.memory_worker, BenchConfig(**json.loads(args.config))))
        return

    is_cuda = args.device.startswith("cuda")
    config = BenchConfig(
        device=args.device,
        dtype=args.dtype or ("bfloat16" if is_cuda else "float32"),
        reps=args.reps,
    )
    out = args.out or RESULTS / f"logprobs_{args.device.split(':')[0]}.json"
    seconds = time_all(config)
    results = [
        {
            "method": method,
            "mode": mode,
            "median_s": statistics.median(runs),
            "seconds": runs,
            "peak_memory_mib": peak_memory_in_subprocess(method, mode, config),
        }
        for (method, mode), runs in seconds.items()
    ]
    report = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],  # other processes inflate CPU timings
        "config": asdict(config),
        "max_abs_diff_vs_full_logits": agreement(config),
        "results": results,
    }
    write_results(out.stem, report, markdown_table(report), out.parent)


if __name__ == "__main__":
    main()
