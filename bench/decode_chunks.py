"""Benchmark: decoding in chunks, the answers that ended leaving the batch between chunks
(`GenerationConfig.chunk_tokens`), against one `generate` call per batch that decodes every row
until the last answer of the batch ends. SmolLM2-135M-Instruct, greedy, on the SmolLM2 demo's
HH prompts with its system turn: real answers, which end at many lengths.

    python -m bench.decode_chunks      # -> bench/results/decode_chunks_<cpu|device>.{json,md}

Both ways run side by side in one process on the same prompts, each budget's pair in turn, and
must give the same answers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.data.formats import load_records
from alol.data.tokenize import render_prompt
from alol.demo.smollm2 import HH_ASSET, convert_smollm2, with_system_turn
from alol.models.generate import GenerationConfig, generate_answers
from bench.common import commit, cpu_results_name, device_name, write_results


def decode(model, tokenizer, prompts: list[str], config: GenerationConfig) -> tuple[list, float]:
    start = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, config, show_progress=False)
    return [a for (a,) in answers], time.perf_counter() - start


def budget_row(model, tokenizer, prompts: list[str], config: GenerationConfig) -> dict:
    """One call per batch, then chunks of `config.chunk_tokens`: seconds, their ratio, and how
    long the answers were (what the chunks save on)."""
    whole, whole_s = decode(
        model, tokenizer, prompts, replace(config, chunk_tokens=config.max_new_tokens)
    )
    chunked, chunked_s = decode(model, tokenizer, prompts, config)
    return {
        "max_new_tokens": config.max_new_tokens,
        "one_call_s": whole_s,
        "chunked_s": chunked_s,
        "time_ratio": chunked_s / whole_s,
        "same_answers": sum(a == b for a, b in zip(whole, chunked, strict=True)),
        "mean_answer_tokens": statistics.fmean(len(a.token_ids) for a in whole),
        "cut_at_budget": sum(not a.finished for a in whole) / len(whole),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Decoding in chunks of {result['chunk_tokens']} tokens against one call per batch",
        "",
        f"SmolLM2-135M-Instruct ({result['dtype']}), greedy, {result['prompts']} of the SmolLM2 "
        f"demo's HH prompts, generation batch {result['batch_size']}; {result['device']}, "
        f"commit {result['commit']}, torch {result['torch']}. Both ways side by side in one "
        "process; the ratio is the chunked time over the one-call time.",
        "",
        "| budget (new tokens) | one call (s) | chunked (s) | ratio | same answers | "
        "answer tokens (mean) | cut at the budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['max_new_tokens']} | {row['one_call_s']:.1f} | {row['chunked_s']:.1f} | "
            f"{row['time_ratio']:.2f} | {row['same_answers']}/{result['prompts']} | "
            f"{row['mean_answer_tokens']:.0f} | {row['cut_at_budget']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=80)
    parser.add_argument("--budgets", type=int, nargs="+", default=[96, 192])
    parser.add_argument("--batch-size", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = convert_smollm2(Path(scratch) / "smollm2")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device)
    records = load_records(HH_ASSET).records[: args.prompts]
    prompts = [render_prompt(with_system_turn(r.prompt), tokenizer) for r in records]
    base = GenerationConfig(do_sample=False, batch_size=args.batch_size, max_prompt_length=128)
    rows = [
        budget_row(model, tokenizer, prompts, replace(base, max_new_tokens=budget))
        for budget in args.budgets
    ]
    result = {
        "commit": commit(),
        "device": device_name(args.device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "chunk_tokens": base.chunk_tokens,
        "rows": rows,
    }
    stem = (
        "decode_chunks_cuda"
        if args.device.startswith("cuda")
        else cpu_results_name("decode_chunks")
    )
    write_results(stem, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
