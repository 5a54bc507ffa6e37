"""Benchmark: where a CPU's time goes when alol decodes with a SmolLM2-135M-shaped policy, as
the value stage and the evaluation do (`alol.models.generate`): the float32 matrix products
it is made of, at the row counts of decoding and of training, and the decoding of the SmolLM2
demo's 79 test prompts at two generation batches, split into the prompts' forward (prefill)
and the steps after it. Behind the SmolLM2 demo's times on a CPU without native bf16
(docs/results.md).

    python -m bench.cpu_decode        # -> bench/results/cpu_decode_<cpu>.{json,md}

A randomly initialised model, so nothing is downloaded; it almost never ends an answer early,
so nearly every prompt decodes the whole budget (π_ref runs to it on about a third of the
demo's prompts, and a batch decodes until its last answer ends).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from alol.models.generate import GenerationConfig, generate_answers
from alol.train.precision import cpu_has_native_bf16
from bench.common import commit, cpu_results_name, device_name, write_results
from bench.cpu_bf16 import SMOLLM2_135M

LINEAR_SHAPES = {"MLP up (576 → 1536)": 1536, "vocabulary head (576 → 49152)": 49152}
ROWS = (20, 80, 480)
"""Rows of one product: a decoding step at generation batch 20 and 80, and a training batch
(4 answers of about 120 tokens)."""


def gflops_of_linear(rows: int, outputs: int, seconds: float = 1.0) -> float:
    """Float32 GFLOP/s of `x @ W.T` with `rows` rows, 576 inputs and `outputs` outputs."""
    x, weight = torch.randn(rows, 576), torch.randn(outputs, 576)
    torch.nn.functional.linear(x, weight)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(x, weight)
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return 2 * rows * 576 * outputs / per_call / 1e9


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer whose every id is one 'word', so a prompt of n ids is n tokens long."""
    vocab = {f"w{i}": i for i in range(1000)} | {"<eos>": 1000, "<pad>": 1001}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>")


def demo_like_prompts(count: int, generator: torch.Generator) -> list[str]:
    """`count` prompts of 60 to 120 tokens: the demo's system turn and an HH question."""
    lengths = torch.randint(60, 121, (count,), generator=generator).tolist()
    return [" ".join(f"w{i}" for i in torch.randint(0, 1000, (n,)).tolist()) for n in lengths]


def decoding_seconds(model, tokenizer, prompts: list[str], batch: int, new_tokens: int) -> float:
    config = GenerationConfig(
        max_new_tokens=new_tokens, do_sample=False, batch_size=batch, max_prompt_length=128
    )
    start = time.perf_counter()
    generate_answers(model, tokenizer, prompts, config, show_progress=False)
    return time.perf_counter() - start


def decoding_row(model, tokenizer, prompts: list[str], batch: int, new_tokens: int) -> dict:
    whole = decoding_seconds(model, tokenizer, prompts, batch, new_tokens)
    prefill = decoding_seconds(model, tokenizer, prompts, batch, 1)
    steps = -(-len(prompts) // batch) * (new_tokens - 1)
    return {
        "batch": batch,
        "seconds": whole,
        "prefill_s": prefill,
        "per_step_ms": 1000 * (whole - prefill) / steps,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Where decoding's time goes on this CPU ({result['device']})",
        "",
        f"Native bf16: {'yes' if result['native_bf16'] else 'no'}; float32 throughout. "
        f"{result['threads']} threads, commit {result['commit']}, torch {result['torch']}.",
        "",
        "Float32 matrix products (GFLOP/s), by rows per product:",
        "",
        "| product | " + " | ".join(f"{rows} rows" for rows in ROWS) + " |",
        "|---|" + "---|" * len(ROWS),
    ]
    for name, by_rows in result["linear_gflops"].items():
        lines.append(f"| {name} | " + " | ".join(f"{by_rows[str(r)]:.0f}" for r in ROWS) + " |")
    decoding = result["decoding"]
    lines += [
        "",
        f"Decoding {decoding['prompts']} prompts of 60–120 tokens, {decoding['new_tokens']} new "
        "tokens each (SmolLM2-135M's shape, greedy):",
        "",
        "| generation batch | seconds | prompts' forward (s) | per step after it (ms) |",
        "|---|---|---|---|",
    ]
    for row in decoding["rows"]:
        lines.append(
            f"| {row['batch']} | {row['seconds']:.1f} | {row['prefill_s']:.1f} "
            f"| {row['per_step_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=79)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--batches", type=int, nargs="+", default=[20, 80])
    args = parser.parse_args()
    torch.manual_seed(0)
    linear = {
        name: {str(rows): gflops_of_linear(rows, outputs) for rows in ROWS}
        for name, outputs in LINEAR_SHAPES.items()
    }
    model = LlamaForCausalLM(SMOLLM2_135M).eval()
    tokenizer = word_tokenizer()
    prompts = demo_like_prompts(args.prompts, torch.Generator().manual_seed(0))
    rows = [decoding_row(model, tokenizer, prompts, b, args.new_tokens) for b in args.batches]
    result = {
        "commit": commit(),
        "device": device_name("cpu"),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "linear_gflops": linear,
        "decoding": {"prompts": args.prompts, "new_tokens": args.new_tokens, "rows": rows},
    }
    write_results(cpu_results_name("cpu_decode"), result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
