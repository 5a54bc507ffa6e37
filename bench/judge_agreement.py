"""How often each judge agrees with the human's choice on HH pairs: a judge that agrees half of
the time says nothing about which answer is better, however its figures move.

    python -m bench.judge_agreement          # after `python -m bench.hh_smollm2 --prepare`

- On the judged HH benchmark's test pairs (`data/test_scored.jsonl`): the built-in judges it
  reports beside the learned ones (relevance, safety) and the stored OpenAssistant reward the
  training reward was fitted to, per subset. The learned judges' accuracy on the same pairs is
  in bench/results/hh_smollm2.md.
- On every pair of the four HH files: the scorers of the demo tasks that need no model
  (sentiment, safety, and the informativeness judge of `alol demo --model smollm2`: TF-IDF
  diversity, its IDF fitted on the same files' answers), and the answers' length.

A pair where a judge scores both answers alike counts for neither side and is left out.
Writes bench/results/judge_agreement.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from alol.data.formats import load_records
from alol.rewards import load_reward, score
from alol.rewards.scorers import DiversityScorer
from bench.common import commit, write_results
from bench.hh_smollm2 import FULL, HH, SUBSETS, base_config, pair_scores, split_data
from bench.hh_smollm2 import subset_of as subset_of_id

BENCHMARK_JUDGES = ("relevance", "safety")
NO_MODEL_SCORERS = ("sentiment", "safety")


def agreement(first: np.ndarray, second: np.ndarray) -> dict:
    """The share of pairs where the first (the human's choice) scores higher, ties left out."""
    decided = first != second
    return {
        "agrees": float(np.mean(first[decided] > second[decided])) if decided.any() else None,
        "pairs": int(decided.sum()),
    }


def per_subset(first: np.ndarray, second: np.ndarray, subsets: np.ndarray) -> dict:
    found = {"all": agreement(first, second)}
    for subset in sorted(set(subsets)):
        members = subsets == subset
        found[subset] = agreement(first[members], second[members])
    return found


def benchmark_test_pairs(out: Path) -> dict:
    """The benchmark's judges on its test pairs (the human's choice is the first candidate)."""
    paths = split_data(out, FULL, quick=False)
    cfg = base_config(out, out.parent / "smollm2", paths, quick=False)
    records = load_records(paths["test_scored"]).records
    subsets = np.array([subset_of_id(record) for record in records])
    found = {}
    for judge in BENCHMARK_JUDGES:
        scores = np.array(pair_scores(cfg, judge, records))
        found[judge] = per_subset(scores[:, 0], scores[:, 1], subsets)
    logits = np.array([record.reward_logits for record in records])
    found["stored OpenAssistant reward"] = per_subset(logits[:, 0], logits[:, 1], subsets)
    return found


def hh_file_pairs() -> dict:
    """The model-free scorers on every pair of the four HH files."""
    records, subsets = [], []
    for subset in (*SUBSETS, "sampled_dev"):
        loaded = load_records(HH / f"{subset}.json").records
        records += loaded
        subsets += [subset] * len(loaded)
    subsets = np.array(subsets)
    first = [record.responses[0] for record in records]
    second = [record.responses[1] for record in records]
    informativeness = DiversityScorer(corpus=first + second)  # the demo judge's IDF, on HH

    found = {}
    for scorer in NO_MODEL_SCORERS:
        reward = load_reward(scorer)
        scores = [
            np.array([s["total"] for s in score(reward, [""] * len(t), t, show_progress=False)])
            for t in (first, second)
        ]
        found[scorer] = per_subset(*scores, subsets)
    found["informativeness"] = per_subset(
        np.array(informativeness(first, first)), np.array(informativeness(second, second)), subsets
    )
    found["length (words)"] = per_subset(
        np.array([len(t.split()) for t in first]),
        np.array([len(t.split()) for t in second]),
        subsets,
    )
    found["stored OpenAssistant reward"] = per_subset(
        np.array([record.reward_logits[0] for record in records]),
        np.array([record.reward_logits[1] for record in records]),
        subsets,
    )
    return found


def markdown(result: dict) -> str:
    lines = [
        "# How often each judge agrees with the human's choice on HH pairs",
        "",
        f"`python -m bench.judge_agreement` at commit {result['commit']}. The share of pairs "
        "where the judge scores the answer the human chose higher (ties left out; the number "
        "of pairs it decided in brackets). 50% is a coin.",
    ]
    for part, title in (
        ("benchmark_test_pairs", "The judged HH benchmark's test pairs"),
        ("hh_files", "Every pair of the four HH files"),
    ):
        found = result[part]
        columns = list(next(iter(found.values())))
        lines += ["", f"## {title}", "", "| judge | " + " | ".join(columns) + " |"]
        lines.append("|---|" + "---|" * len(columns))
        for judge, cells in found.items():
            values = [
                "–"
                if cells[c]["agrees"] is None
                else f"{cells[c]['agrees']:.0%} ({cells[c]['pairs']})"
                for c in columns
            ]
            lines.append(f"| {judge} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/hh_smollm2")
    args = parser.parse_args()
    result = {
        "commit": commit(),
        "benchmark_test_pairs": benchmark_test_pairs(Path(args.out) / "judged"),
        "hh_files": hh_file_pairs(),
    }
    write_results("judge_agreement", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
