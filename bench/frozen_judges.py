"""Can a linear head on frozen MiniLM embeddings judge answers as HH's humans did? If it could,
alol could ship one pre-fitted, as a cheap helpfulness judge for `alol demo --model smollm2`.

    python -m bench.frozen_judges        # ~10 min on 2 cores, most of it embedding

Bradley–Terry heads (logistic regression on the feature difference of the two answers, no
intercept) are fitted on the human choices of helpful-base + helpful-online, split by prompt:
a fifth of the prompts held out, and the prompts of the demo's bundled HH file
(`alol/demo/assets/hh_demo.jsonl`) never fitted on. Features of an answer: its MiniLM
embedding (the relevance scorer's encoder), optionally with log2(1 + words) and its cosine to
the user's last turn. Reported per head and regularisation C: the share of held-out pairs
where the head prefers the human's choice, per subset and on the demo file's pairs, and how
often an answer the audit would give to every prompt outscores the human's choice there.
Writes bench/results/frozen_judges.{json,md}.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from alol.data.formats import load_records
from alol.data.splits import prompt_key
from alol.demo.smollm2 import HH_ASSET
from alol.rewards.scorers import RelevanceScorer
from bench.common import commit, write_results
from bench.hh_smollm2 import HH

FITTED_ON = ("helpful_base", "helpful_online")
CHECKED_ON = ("helpful_base", "helpful_online", "harmless_base")
FEATURE_SETS = ("length", "embedding", "embedding+length", "embedding+relevance+length")
REGULARISATION = (0.01, 0.1, 1.0)
CONSTANT_ANSWERS = (
    "I'm not sure.",
    "Yes.",
    "I'm sorry, I can't help with that.",
    "Meditation is a practice of focusing the mind on the present moment. It can reduce "
    "stress, improve sleep and help you feel calmer throughout the day.",
)


@dataclass
class Pairs:
    """One HH file's pairs, embedded: the user's last turn, the human's choice, the other."""

    keys: list[str]
    question: np.ndarray
    chosen: np.ndarray
    other: np.ndarray
    chosen_words: np.ndarray
    other_words: np.ndarray


def last_user_turn(prompt) -> str:
    return [turn["content"] for turn in prompt if turn["role"] == "user"][-1]


def load_pairs(encoder: RelevanceScorer, path: Path) -> Pairs:
    """The file's pairs with two non-empty answers (the human's choice comes first)."""
    records = [r for r in load_records(path).records if all(a.strip() for a in r.responses)]
    print(f"embedding {len(records)} pairs of {path.name}", flush=True)
    return Pairs(
        keys=[prompt_key(r) for r in records],
        question=encoder.embed([last_user_turn(r.prompt) for r in records]).numpy(),
        chosen=encoder.embed([r.responses[0] for r in records]).numpy(),
        other=encoder.embed([r.responses[1] for r in records]).numpy(),
        chosen_words=np.array([len(r.responses[0].split()) for r in records]),
        other_words=np.array([len(r.responses[1].split()) for r in records]),
    )


def features(kind: str, question: np.ndarray, answer: np.ndarray, words: np.ndarray) -> np.ndarray:
    length = np.log2(1 + words)[:, None]
    relevance = (question * answer).sum(1)[:, None]
    return {
        "length": length,
        "embedding": answer,
        "embedding+length": np.hstack([answer, length]),
        "embedding+relevance+length": np.hstack([answer, relevance, length]),
    }[kind]


def difference(kind: str, pairs: Pairs) -> np.ndarray:
    chosen = features(kind, pairs.question, pairs.chosen, pairs.chosen_words)
    return chosen - features(kind, pairs.question, pairs.other, pairs.other_words)


def held_out(keys: list[str]) -> np.ndarray:
    """A fifth of the prompts, by a hash of the prompt: the same ones on every machine."""
    return np.array([zlib.crc32(key.encode()) % 5 == 0 for key in keys])


def fit_head(kind: str, regularisation: float, files: dict[str, Pairs], demo: set[str]):
    rows = []
    for name in FITTED_ON:
        pairs = files[name]
        fitted = ~held_out(pairs.keys) & np.array([key not in demo for key in pairs.keys])
        rows.append(difference(kind, pairs)[fitted])
    x = np.vstack(rows)
    # Both orders of every pair, so the head learns no side and needs no intercept.
    model = LogisticRegression(C=regularisation, fit_intercept=False, max_iter=5000)
    model.fit(np.vstack([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))])
    return model.coef_[0]


def constants_beating_chosen(
    kind: str, weights: np.ndarray, demo: Pairs, constants: np.ndarray
) -> dict[str, float]:
    chosen = features(kind, demo.question, demo.chosen, demo.chosen_words) @ weights
    beats = {}
    for text, vector in zip(CONSTANT_ANSWERS, constants, strict=True):
        answer = np.repeat(vector[None], len(chosen), 0)
        words = np.full(len(chosen), len(text.split()))
        beats[text] = float(
            np.mean(features(kind, demo.question, answer, words) @ weights > chosen)
        )
    return beats


def study() -> dict:
    encoder = RelevanceScorer(batch_size=64)
    files = {name: load_pairs(encoder, HH / f"{name}.json") for name in CHECKED_ON}
    demo = load_pairs(encoder, HH_ASSET)
    constants = encoder.embed(list(CONSTANT_ANSWERS)).numpy()
    demo_keys = set(demo.keys)
    heads = []
    for kind in FEATURE_SETS:
        for regularisation in REGULARISATION:
            weights = fit_head(kind, regularisation, files, demo_keys)
            agrees = {
                name: float(np.mean(difference(kind, pairs)[held_out(pairs.keys)] @ weights > 0))
                for name, pairs in files.items()
            }
            agrees["demo"] = float(np.mean(difference(kind, demo) @ weights > 0))
            heads.append(
                {
                    "features": kind,
                    "C": regularisation,
                    "agrees": agrees,
                    "constant_beats_chosen": constants_beating_chosen(
                        kind, weights, demo, constants
                    ),
                }
            )
    held_out_pairs = {name: int(held_out(pairs.keys).sum()) for name, pairs in files.items()}
    return {"commit": commit(), "held_out_pairs": held_out_pairs | {"demo": len(demo.keys)},
            "heads": heads}  # fmt: skip


def markdown(result: dict) -> str:
    pairs = result["held_out_pairs"]
    columns = [*CHECKED_ON, "demo"]
    lines = [
        "# Linear heads on frozen MiniLM embeddings as helpfulness judges",
        "",
        f"`python -m bench.frozen_judges` at commit {result['commit']}. Bradley–Terry heads "
        "fitted on the human choices of helpful-base + helpful-online (the demo file's prompts "
        "and a held-out fifth of the prompts left out). The share of held-out pairs where the "
        "head prefers the human's choice (pairs in brackets); 50% is a coin. The last columns: "
        "how often a constant answer outscores the human's choice on the demo file's prompts.",
        "",
        "| features | C | "
        + " | ".join(f"{name} ({pairs[name]})" for name in columns)
        + " | "
        + " | ".join(f"“{text[:24]}”" for text in CONSTANT_ANSWERS)
        + " |",
        "|---|---|" + "---|" * (len(columns) + len(CONSTANT_ANSWERS)),
    ]
    for head in result["heads"]:
        agrees = " | ".join(f"{head['agrees'][name]:.0%}" for name in columns)
        beats = " | ".join(f"{share:.0%}" for share in head["constant_beats_chosen"].values())
        lines.append(f"| {head['features']} | {head['C']} | {agrees} | {beats} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    result = study()
    write_results("frozen_judges", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
