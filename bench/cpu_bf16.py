"""Benchmark: a training step under bf16 autocast against float32 on this CPU, for the two
models the HH recipe trains (the MiniLM reward model, a SmolLM2-135M-shaped policy), and
whether the CPU has native bf16. Behind `alol.train.precision`: where it has not, alol trains
a config that asks for bf16 in float32.

    python -m bench.cpu_bf16        # -> bench/results/cpu_bf16_<cpu>.{json,md}

Time: the median of a few steps (forward, backward, AdamW) after one untimed step, the
settings interleaved in one process; randomly initialised models, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from alol.train.precision import cpu_has_native_bf16
from bench.common import commit, cpu_results_name, device_name, write_results

MINILM = BertConfig(
    vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, num_labels=1,
)  # fmt: skip
"""all-MiniLM-L6-v2's shape, the reward model's backbone."""

SMOLLM2_135M = LlamaConfig(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
)  # fmt: skip
"""SmolLM2-135M's shape, the HH policy."""


def step_of(model: torch.nn.Module, batch: torch.Tensor, bf16: bool) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch).logits.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def seconds_per_step(step: Callable[[], None], rounds: int) -> float:
    step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, model: torch.nn.Module, shape: tuple[int, int], rounds: int) -> dict:
    batch = torch.randint(0, 1000, shape)
    seconds = {
        precision: seconds_per_step(step_of(model, batch, precision == "bf16"), rounds)
        for precision in ("float32", "bf16")
    }
    return {
        "model": name,
        "batch": list(shape),
        "float32_s": seconds["float32"],
        "bf16_s": seconds["bf16"],
        "bf16_over_float32": seconds["bf16"] / seconds["float32"],
    }


def markdown(result: dict) -> str:
    lines = [
        f"# A training step under bf16 autocast against float32 ({result['device']})",
        "",
        f"Native bf16 on this CPU: {'yes' if result['native_bf16'] else 'no'}. "
        f"Commit {result['commit']}, torch {result['torch']}.",
        "",
        "| model | batch × tokens | float32 s/step | bf16 s/step | bf16 / float32 |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['model']} | {row['batch'][0]} × {row['batch'][1]} | {row['float32_s']:.2f} "
            f"| {row['bf16_s']:.2f} | {row['bf16_over_float32']:.1f}× |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [
        measure("MiniLM (reward model)", BertForSequenceClassification(MINILM), (8, 128), args.rounds),
        measure("SmolLM2-135M shape (policy)", LlamaForCausalLM(SMOLLM2_135M), (2, 128), args.rounds),
    ]  # fmt: skip
    result = {
        "commit": commit(),
        "device": device_name("cpu"),
        "machine": platform.machine(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "rows": rows,
    }
    write_results(cpu_results_name("cpu_bf16"), result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
