"""Does the SmolLM2 demo's reward agree with people, and does it pay stock answers? Measured on
the demo file's own 319 HH pairs, whose prompts the shipped reward never saw.

    python -m bench.demo_reward

For each reward (the shipped MiniLM model of HH's OpenAssistant reward, the relevance plus
sentiment that the demo used before it, relevance to the question alone, and the stored
OpenAssistant logits): the share of pairs where it prefers the human's choice, the share where
it orders the pair as the stored OpenAssistant reward does, how often it prefers the human's
choice to another prompt's given to the same prompt (off-prompt accuracy: does it read the
question?), and how often a constant answer outscores the human's choice on the same prompt
(a reward that pays "I'm not sure." over real answers invites a policy to say it everywhere).

Then what the demo learns from: the instruct model's logged answers that ended to all the
demo's prompts (a seed trains on its training prompts' share), per HH subset,
with the share that refuse (the keyword count of `bench.demo_smollm2`), what the shipped reward
pays a refusal against the other answers to the same subset's prompts, and the safety judge's
mean. A-LoL keeps the answers the reward pays above V(x): if the red-team prompts' refusals
are rare and paid no more than complying, it learns to comply.

Prompts are rendered by SmolLM2's chat template, as the demo hands them to its reward.
Writes bench/results/demo_reward.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from alol.data.formats import load_records
from alol.data.records import RewardRecord
from alol.data.splits import prompt_key
from alol.data.tokenize import render_prompt
from alol.demo.smollm2 import (
    HH_ASSET,
    REWARD_ASSET,
    convert_smollm2,
    ended_logged_answers,
    hh_subsets,
    smol_reward,
    with_system_turn,
)
from alol.rewards import load_reward, score
from alol.rewards.reward_model import ScoredResponse
from alol.rewards.reward_model_metrics import off_prompt_accuracy
from bench.common import commit, write_results
from bench.demo_smollm2 import REFUSAL
from bench.frozen_judges import CONSTANT_ANSWERS
from bench.judge_agreement import agreement

OLD_REWARD = [{"spec": "relevance", "weight": 0.5}, {"spec": "sentiment", "weight": 0.5}]
"""The demo's reward before the shipped model: the mean of relevance and sentiment."""


def totals(reward, prompts: list[str], responses: list[str]) -> np.ndarray:
    return np.array([s["total"] for s in score(reward, prompts, responses, show_progress=False)])


def logged_answer_kinds(
    subsets: list[str], answers: list[str], rewards: np.ndarray, safety: np.ndarray
) -> dict[str, dict]:
    """Per HH subset of the logged answers: how many, the share that refuse, the reward's mean
    on the refusals and on the rest (None where there are none), and the safety judge's mean."""
    refuses = np.array([bool(REFUSAL.search(a)) for a in answers])
    kinds = {}
    for subset in sorted(set(subsets)):
        mine = np.array([s == subset for s in subsets])
        kinds[subset] = {
            "answers": int(mine.sum()),
            "refusal_share": float(refuses[mine].mean()),
            "reward_refusals": mean_or_none(rewards[mine & refuses]),
            "reward_others": mean_or_none(rewards[mine & ~refuses]),
            "safety": float(safety[mine].mean()),
        }
    return kinds


def mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def logged_subsets(logged: list[RewardRecord]) -> list[str]:
    """Each logged answer's HH subset, found by its prompt (the bundled record's prompt with the
    demo's system turn, as the answers were sampled)."""
    records = load_records(HH_ASSET).records
    subset_of = {
        prompt_key(RewardRecord(with_system_turn(record.prompt), "")): subset
        for record, subset in zip(records, hh_subsets(), strict=True)
    }
    return [subset_of[prompt_key(answer)] for answer in logged]


def main() -> int:
    records = [r for r in load_records(HH_ASSET).records if all(a.strip() for a in r.responses)]
    chosen = [r.responses[0] for r in records]  # the HH format puts the human's choice first
    other = [r.responses[1] for r in records]
    stored_chosen, stored_other = np.array([r.reward_logits for r in records]).T
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tokenizer = AutoTokenizer.from_pretrained(convert_smollm2(scratch / "base"))
        prompts = [render_prompt(r.prompt, tokenizer) for r in records]
        rewards = {
            "shipped HH reward model": smol_reward(scratch),
            "relevance + sentiment (the old demo reward)": OLD_REWARD,
            "relevance to the question": {"type": "relevance", "last_user_turn": True},
        }
        found, loaded = {}, {}
        for name, spec in rewards.items():
            reward = loaded[name] = load_reward(spec)
            first, second = totals(reward, prompts, chosen), totals(reward, prompts, other)
            found[name] = {
                "human": agreement(first, second),
                "openassistant": agreement(
                    np.where(stored_chosen > stored_other, first, second),
                    np.where(stored_chosen > stored_other, second, first),
                ),
                "off_prompt": off_prompt_accuracy(
                    [ScoredResponse(p, c, 0.0) for p, c in zip(prompts, chosen, strict=True)],
                    first,
                    lambda items, reward=reward: totals(
                        reward, [i.prompt for i in items], [i.response for i in items]
                    ),
                ),
                "constant_beats_human": {
                    answer: float(np.mean(totals(reward, prompts, [answer] * len(prompts)) > first))
                    for answer in CONSTANT_ANSWERS
                },
            }
        logged = ended_logged_answers()
        logged_prompts = [render_prompt(a.prompt, tokenizer) for a in logged]
        responses = [a.response for a in logged]
        kinds = logged_answer_kinds(
            logged_subsets(logged),
            responses,
            totals(loaded["shipped HH reward model"], logged_prompts, responses),
            totals(load_reward("safety"), logged_prompts, responses),
        )
    found["stored OpenAssistant reward"] = {"human": agreement(stored_chosen, stored_other)}
    fit = json.loads((REWARD_ASSET / "fit.json").read_text(encoding="utf-8"))
    result = {
        "commit": commit(),
        "pairs": len(records),
        "shipped_fit": fit,
        "rewards": found,
        "logged_answers": kinds,
    }
    write_results("demo_reward", result, markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    fit = result["shipped_fit"]
    lines = [
        "# The SmolLM2 demo's reward against people and against stock answers",
        "",
        f"`python -m bench.demo_reward` at commit {result['commit']}, on the demo file's "
        f"{result['pairs']} HH pairs (prompts the shipped reward never saw). The shipped "
        f"model's own held-out fit ({fit['n_heldout']} answers to HH prompts it did not train "
        f"on): pairwise accuracy {fit['pairwise_accuracy']:.3f}, Pearson {fit['pearson']:.3f} "
        "against the stored OpenAssistant logits.",
        "",
        "Columns: the share of pairs where the reward prefers the human's choice, and where it "
        "orders the pair as the stored OpenAssistant reward does (ties left out, pairs decided "
        "in brackets); how often it prefers the human's choice to another prompt's human "
        "choice given to the same prompt; then how often each constant answer outscores the "
        "human's choice.",
        "",
        "| reward | agrees with the human | agrees with OpenAssistant | off-prompt accuracy | "
        + " | ".join(f"“{a[:28]}”" for a in CONSTANT_ANSWERS)
        + " |",
        "|---|---|---|---|" + "---|" * len(CONSTANT_ANSWERS),
    ]
    for name, cells in result["rewards"].items():
        human, oa = cells["human"], cells.get("openassistant")
        constant = cells.get("constant_beats_human", {})
        lines.append(
            f"| {name} | {human['agrees']:.0%} ({human['pairs']}) | "
            + (f"{oa['agrees']:.0%} ({oa['pairs']})" if oa else "–")
            + (f" | {cells['off_prompt']:.0%} | " if "off_prompt" in cells else " | – | ")
            + " | ".join(f"{constant[a]:.0%}" if a in constant else "–" for a in CONSTANT_ANSWERS)
            + " |"
        )
    return "\n".join(lines + logged_markdown(result["logged_answers"])) + "\n"


def logged_markdown(kinds: dict[str, dict]) -> list[str]:
    lines = [
        "",
        "## What the demo learns from",
        "",
        "The instruct model's logged answers that ended, to all the demo's prompts (a seed "
        "trains on its training prompts' share), per HH subset (harmless-base holds HH's "
        "red-team requests): the share that refuse (a keyword count), the shipped reward's "
        "mean on those refusals and on the other answers, and the safety judge's mean.",
        "",
        "| subset | answers | refuse | reward, refusals | reward, the rest | safety |",
        "|---|---|---|---|---|---|",
    ]
    for subset, kind in kinds.items():
        paid = [kind["reward_refusals"], kind["reward_others"]]
        lines.append(
            f"| {subset} | {kind['answers']} | {kind['refusal_share']:.0%} | "
            + " | ".join("–" if v is None else f"{v:.3f}" for v in paid)
            + f" | {kind['safety']:.3f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
