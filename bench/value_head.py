"""alol's value-head defaults against the A-LoL authors', on the same π_ref and value data.

    python -m bench.value_head RUN_DIR        # a run with sft/model and value/value_samples.jsonl

The authors' head: 8 attention heads, dropout 0.1 (left on when it predicts), lr 1e-5, and
the epoch with the lowest *training* MSE. alol's: 1 head, no dropout, lr 1e-3, the epoch with
the lowest MSE on held-out prompts. Each is fitted on 70% of the value prompts (π_ref's
scored answers) and judged on the other 30%, for three splits. Writes
bench/results/value_head.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from alol.models.value_fit import fit_value_head, prompt_features, split_holdout
from alol.models.value_io import ValueConfig
from alol.pipeline.inputs import load_model_for_inference
from alol.reports.metrics import explained_variance, pearson
from bench.common import mean_and_sd, plus_minus, write_results

SETTINGS = {
    "alol: 1 head, lr 1e-3, held-out epoch": dict(num_heads=1, learning_rate=1e-3),
    "8 heads, lr 1e-3, held-out epoch": dict(num_heads=8, learning_rate=1e-3),
    "authors: 8 heads, dropout 0.1, lr 1e-5, training-MSE epoch, read with dropout": dict(
        num_heads=8, learning_rate=1e-5, dropout=0.1, holdout_fraction=0.0, read_with_dropout=True
    ),
    "authors' head, read without dropout": dict(
        num_heads=8, learning_rate=1e-5, dropout=0.1, holdout_fraction=0.0
    ),
}


def judge(head, features, targets: np.ndarray, with_dropout: bool) -> dict[str, float]:
    head.train(with_dropout)
    length = max(f.shape[0] for f in features)
    hidden = torch.zeros(len(features), length, features[0].shape[1])
    mask = torch.zeros(len(features), length, dtype=torch.long)
    for i, f in enumerate(features):
        hidden[i, : f.shape[0]], mask[i, : f.shape[0]] = f.float(), 1
    with torch.no_grad():
        predicted = head(hidden, mask).numpy()
    head.eval()
    return {
        "mse": float(np.mean((predicted - targets) ** 2)),
        "explained_variance": explained_variance(predicted, targets),
        "pearson": pearson(predicted, targets),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    samples = [json.loads(line) for line in (args.run_dir / "value/value_samples.jsonl").open()]
    prompts = [s["prompt"] for s in samples]
    targets = np.array([s["reward"]["total"] for s in samples])
    model, tokenizer = load_model_for_inference(args.run_dir / "sft/model")
    features = prompt_features(model, tokenizer, prompts, batch_size=16, max_prompt_length=256)
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for split in range(args.splits):
        fit, test = split_holdout(prompts, 0.3, seed=100 + split)
        for name, setting in SETTINGS.items():
            setting = dict(setting)
            with_dropout = setting.pop("read_with_dropout", False)
            config = ValueConfig(epochs=10, seed=split, max_prompt_length=256, **setting)
            head, _ = fit_value_head(
                model, tokenizer, [prompts[i] for i in fit], targets[fit].tolist(), config
            )
            results[name].append(
                judge(head.cpu(), [features[i] for i in test], targets[test], with_dropout)
            )
    summary = {
        name: {
            key: dict(zip(("mean", "sd"), mean_and_sd(r[key] for r in runs), strict=True))
            for key in runs[0]
        }
        for name, runs in results.items()
    }
    lines = [
        "# Value head: alol's defaults against the A-LoL authors'",
        "",
        f"`python -m bench.value_head {args.run_dir}`: {len(samples)} value samples "
        f"(π_ref's greedy answers, scored by the reward); 70% of the prompts fit, 30% judge; "
        f"mean ± sd over {args.splits} splits. Explained variance above 0 means V predicts the "
        "reward better than a constant.",
        "",
        "| head | held-out MSE | explained variance | Pearson |",
        "|---|---|---|---|",
    ]
    for name, measures in summary.items():
        cells = [
            plus_minus(measures[k]["mean"], measures[k]["sd"], ".4f")
            for k in ("mse", "explained_variance", "pearson")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_results(
        "value_head",
        {"run_dir": str(args.run_dir), "n": len(samples), "splits": results, "summary": summary},
        "\n".join(lines) + "\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
