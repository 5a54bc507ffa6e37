"""Benchmark: a reward-model fit step with the backbone's dropout on and off.

    python -m bench.reward_model_dropout      # -> bench/results/reward_model_dropout.{json,md}

The HH benchmark's reward model (examples/hh_smollm2.yaml): the offline MiniLM, 32 scored
answers and their 32 off-prompt rows per step, 256 tokens, bf16 autocast, a quarter of the rows
padded. One fit step is a forward and backward pass in training mode and an AdamW update.
Time: the median over rounds that alternate the two settings in one process; the ratio is the
figure to read (on a CPU, attention dropout sends scaled-dot-product attention to its unfused
path).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import transformers
from transformers import AutoModelForSequenceClassification

from alol.models.dropout import without_dropout
from alol.rewards.reward_model import backbone_path
from bench.common import device_name, write_results

ROWS, LENGTH = 64, 256


def fit_step_seconds(model: torch.nn.Module, batch: dict, optimizer) -> float:
    """One timed fit step: forward, backward and update, as the reward model's Trainer runs it."""
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).logits.float().square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def padded_batch(vocab_size: int) -> dict:
    """ROWS rows of LENGTH tokens, a quarter of them padded after 3/4 of their length."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, vocab_size, (ROWS, LENGTH), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::4, LENGTH * 3 // 4 :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def models_with_and_without_dropout() -> dict[str, torch.nn.Module]:
    """The backbone as shipped, and as alol fits it (`without_dropout`), in training mode."""
    path = backbone_path("minilm")
    on = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    off = without_dropout(AutoModelForSequenceClassification.from_pretrained(path, num_labels=1))
    return {"dropout on": on.train(), "dropout off": off.train()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = models_with_and_without_dropout()
    batch = padded_batch(models["dropout off"].config.vocab_size)
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in models.items()}
    for name, model in models.items():  # warm-up
        fit_step_seconds(model, batch, optimizers[name])
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            seconds[name].append(fit_step_seconds(model, batch, optimizers[name]))
    median = {name: statistics.median(times) for name, times in seconds.items()}
    ratio = median["dropout on"] / median["dropout off"]
    result = {
        "device": device_name("cpu"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rows": ROWS,
        "tokens": LENGTH,
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": median,
        "dropout_on_over_off": ratio,
    }
    table = "\n".join(
        [
            "# A reward-model fit step, the backbone's dropout on and off",
            "",
            f"`python -m bench.reward_model_dropout` on {result['device']}, torch "
            f"{torch.__version__}: MiniLM, {ROWS} rows of {LENGTH} tokens, bf16 autocast, "
            f"training mode, median of {args.rounds} rounds.",
            "",
            "| backbone | seconds per step |",
            "|---|---|",
            *(f"| {name} | {value:.2f} |" for name, value in median.items()),
            "",
            f"With dropout a step takes {ratio:.1f} times as long.",
            "",
        ]
    )
    write_results("reward_model_dropout", result, table)


if __name__ == "__main__":
    main()
