"""The advantage audit: the share of training answers with A > 0 and the distributions of R,
V(x) and A, as JSON and a histogram, and the answers with the highest A. On its own a
data-quality report: it says how much of the data is better than what π_ref already does, and
what A-LoL will learn most from, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alol.atomic import write_json, write_text
from alol.data.records import Prompt, RewardRecord
from alol.data.table import AdvantageTable, cache_path
from alol.method.leftover import length_neutral, response_words
from alol.reports.collapse import short_text
from alol.reports.metrics import formatted
from alol.reports.plots import plot_advantage_histogram

_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)

TOP_ANSWERS = 20
"""How many of the highest-advantage answers top_advantages.md shows."""

TOP_SHARE = 0.1
"""The top share of the positive answers whose hold on A-LoL's draws the report gives."""


def advantage_stats(
    table: AdvantageTable,
    max_response_length: int,
    groups: list[str | None] | None = None,
    words: np.ndarray | None = None,
) -> dict[str, Any]:
    """Count, fraction with A > 0, mean/std (population)/percentiles of R, V(x) and A, how
    the top tenth of the positive answers hold A-LoL's draws and reach `max_response_length`,
    how the weighting shifts the mean answer length (and, given each answer's `words`, how it
    would under `length_neutral_advantage`), and, when every answer has a group (`groups`,
    aligned with the table), each group's part.

    Percentiles interpolate linearly between order statistics (numpy's default).
    """
    if len(table) == 0:
        raise ValueError("the advantage table is empty; there is nothing to summarise")
    return {
        "count": len(table),
        "fraction_positive": float(np.mean(table.advantage > 0)),
        "reward": _summary(table.reward),
        "value": _summary(table.value),
        "advantage": _summary(table.advantage),
        "components": {name: _summary(values) for name, values in sorted(table.components.items())},
        "top_positive_draw_share": top_draw_share(table.advantage, TOP_SHARE),
        "top_positive_at_length_limit": top_share_at_length_limit(
            table, max_response_length, TOP_SHARE
        ),
        "groups": group_shares(table.advantage, groups),
        "response_length": length_weighting(table.advantage, table.response_length),
        "response_length_neutral": (
            None
            if words is None
            else length_weighting(length_neutral(table.advantage, words), table.response_length)
        ),
    }


def length_weighting(advantage: np.ndarray, lengths: np.ndarray) -> dict[str, float | None]:
    """How A-LoL's weighting shifts training towards long or short answers: the mean response
    length (tokens) of all answers, of the positive ones, of A-LoL's draws (∝ A) and of its
    gradient weight (draws × A, so ∝ A²), and the Pearson correlation of A with length. A
    reward that pays length shows here as a mean that grows at each step, before any training
    lengthens the answers (None where there is nothing to average or nothing varies)."""
    lengths = lengths.astype(float)
    positive = np.clip(advantage, 0, None)
    varies = np.std(advantage) > 0 and np.std(lengths) > 0
    return {
        "all": float(lengths.mean()),
        "positive": float(lengths[advantage > 0].mean()) if positive.any() else None,
        "draws": _weighted_mean(lengths, positive),
        "gradient_weight": _weighted_mean(lengths, positive**2),
        "correlation_with_advantage": (
            float(np.corrcoef(advantage, lengths)[0, 1]) if varies else None
        ),
    }


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | None:
    total = weights.sum()
    return float((values * weights).sum() / total) if total > 0 else None


def group_shares(advantage: np.ndarray, groups: list[str | None] | None) -> dict | None:
    """Per group: its share of the answers, the share of them with A > 0, and its share of
    A-LoL's draws (∝ A) and of its gradient weight (draws × A, so ∝ A²) without
    `balance_groups`. A group far above its share of the answers is what A-LoL learns from
    most; None unless every answer has a group."""
    if not groups or any(group is None for group in groups):
        return None
    if len(groups) != len(advantage):
        raise ValueError(f"{len(groups)} groups for {len(advantage)} answers")
    labels = np.array(groups)
    positive = np.clip(advantage, 0, None)
    shares = {}
    for group in sorted(set(groups)):
        members = labels == group
        shares[group] = {
            "answers": float(members.mean()),
            "fraction_positive": float(np.mean(advantage[members] > 0)),
            "draws": _share(positive, members),
            "gradient_weight": _share(positive**2, members),
        }
    return shares


def _share(weights: np.ndarray, members: np.ndarray) -> float | None:
    total = weights.sum()
    return float(weights[members].sum() / total) if total > 0 else None


def top_positive(advantage: np.ndarray, share: float) -> np.ndarray:
    """The indices of the top `share` of the positive answers by A (at least one, when any)."""
    positive = np.flatnonzero(advantage > 0)
    order = positive[np.argsort(-advantage[positive], kind="stable")]
    return order[: max(1, round(share * len(positive)))] if len(positive) else order


def top_draw_share(advantage: np.ndarray, share: float) -> float | None:
    """The share of A-LoL's draws (∝ A over the positive answers) that the top `share` of the
    positive answers hold: 0.1 when A is spread evenly, near 1 when a few answers take the
    training; None without positive answers."""
    top = top_positive(advantage, share)
    if not len(top):
        return None
    return float(advantage[top].sum() / advantage[advantage > 0].sum())


def top_share_at_length_limit(table: AdvantageTable, limit: int, share: float) -> float | None:
    """The share of the top `share` of the positive answers that reach `limit` response
    tokens, so are cut before their end (or end exactly there); None without positive answers."""
    top = top_positive(table.advantage, share)
    if not len(top):
        return None
    return float(np.mean(table.response_length[top] >= limit))


def top_advantage_answers(
    table: AdvantageTable, records: list[RewardRecord], count: int = TOP_ANSWERS
) -> list[dict[str, Any]]:
    """The `count` training answers with the highest A, the ones A-LoL draws and weights
    most: where a reward that pays for filler, templates or evasions shows first."""
    if len(records) != len(table):
        raise ValueError(f"{len(records)} records for an advantage table of {len(table)} rows")
    order = np.argsort(-table.advantage, kind="stable")[:count]
    return [
        {
            "advantage": float(table.advantage[i]),
            "reward": float(table.reward[i]),
            "value": float(table.value[i]),
            "components": {name: float(v[i]) for name, v in sorted(table.components.items())},
            "tokens": int(table.response_length[i]),
            "question": question_of(records[i].prompt),
            "answer": records[i].response,
            "source": records[i].source,
        }
        for i in order
    ]


def question_of(prompt: Prompt) -> str:
    """The prompt as text, or a conversation's last user turn."""
    if isinstance(prompt, str):
        return prompt
    turns = [m["content"] for m in prompt if m.get("role") == "user"]
    return turns[-1] if turns else prompt[-1]["content"]


def top_answers_markdown(
    answers: list[dict[str, Any]], stats: dict[str, Any], max_response_length: int
) -> str:
    """top_advantages.md: the highest-advantage answers, with how much of the draws they hold
    and how many of them the length limit cuts."""
    # a reward of one component: its column would repeat R
    components = list(answers[0]["components"]) if answers else []
    components = components if len(components) > 1 else []
    share = stats["top_positive_draw_share"]
    at_limit = stats["top_positive_at_length_limit"]
    lines = [
        "# The training answers with the highest advantage",
        "",
        f"A-LoL trains on the answers with A > 0 ({stats['fraction_positive']:.0%} of "
        f"{stats['count']}), draws them with probability ∝ A (`sampling: advantage`, the "
        "default) and weights each by A again, so these are what it learns most from. Read "
        "them before training: if they are filler, a template or an evasion, the reward pays "
        "for it, and A-LoL will too.",
        "",
        f"The top {TOP_SHARE:.0%} of the positive answers hold "
        + ("no draws (no answer has A > 0)." if share is None else f"{share:.0%} of the draws.")
        + (
            f" {at_limit:.0%} of them reach max_response_length ({max_response_length} tokens), "
            "so are cut before their end: trained on, answers cut short teach the policy not to "
            "end its own; raise max_response_length, or leave them out with "
            "cut_responses: drop."
            if at_limit
            else ""
        ),
        "",
        "| A | R | V(x) | "
        + "".join(f"{c} | " for c in components)
        + "tokens | question | answer | record |",
        "|" + "---|" * (7 + len(components)),
    ]
    lines[-2:-2] = [
        *_length_lines(stats["response_length"], stats["response_length_neutral"]),
        *_group_lines(stats["groups"]),
    ]
    for row in answers:
        cells = [
            f"{row[k]:+.3f}" if k == "advantage" else f"{row[k]:.3f}"
            for k in ("advantage", "reward", "value")
        ]
        cells += [f"{row['components'][c]:.3f}" for c in components]
        cells += [str(row["tokens"]), _cell(row["question"], 60), _cell(row["answer"], 160)]
        cells.append(_cell(row["source"], 60) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _length_lines(
    shift: dict[str, float | None], neutral: dict[str, float | None] | None
) -> list[str]:
    """The mean answer length at each step of A-LoL's weighting, when any answer has A > 0,
    and the same under `length_neutral_advantage` when it was measured."""
    if shift["gradient_weight"] is None:
        return []
    sentence = (
        f"Mean answer length: {shift['all']:.1f} tokens over all the answers, "
        f"{shift['positive']:.1f} over those with A > 0, {shift['draws']:.1f} as A-LoL draws them "
        f"and {shift['gradient_weight']:.1f} by its gradient weight (∝ A²); A and length "
        f"correlate at {formatted(shift['correlation_with_advantage'], '.2f')}. A weight that "
        "grows with length trains the policy to answer at length whatever it says."
    )
    if neutral is not None and neutral["gradient_weight"] is not None:
        sentence += (
            f" With `length_neutral_advantage: true` (A less its linear fit on length in "
            f"words): {neutral['positive']:.1f}, {neutral['draws']:.1f} and "
            f"{neutral['gradient_weight']:.1f} tokens."
        )
    return [sentence, ""]


def _group_lines(groups: dict | None) -> list[str]:
    """The by-group table, when the records carry groups."""
    if not groups:
        return []
    lines = [
        "By group (the records' `group`): what A-LoL's draws ∝ A would take from each, and its "
        "gradient weight (draws × A). A group far above its share of the answers takes the "
        "training over; `balance_groups: true` keeps each at its share of the answers.",
        "",
        "| group | answers | A > 0 | draws | gradient weight |",
        "|---|---|---|---|---|",
    ]
    for name, found in groups.items():
        cells = [
            found["answers"],
            found["fraction_positive"],
            found["draws"],
            found["gradient_weight"],
        ]
        lines.append(
            f"| {_cell(name, 40)} | " + " | ".join(formatted(c, ".0%") for c in cells) + " |"
        )
    return [*lines, ""]


def _cell(text: str, limit: int) -> str:
    return short_text(text, limit).replace("|", "\\|")


def _summary(values: np.ndarray) -> dict[str, float]:
    summary = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    for percentile, quantile in zip(_PERCENTILES, np.percentile(values, _PERCENTILES), strict=True):
        summary[f"p{percentile}"] = float(quantile)
    return summary


def write_advantage_report(
    table: AdvantageTable,
    records: list[RewardRecord],
    directory: str | Path,
    max_response_length: int,
) -> dict[str, Any]:
    """Write `advantage_stats.json`, `advantage_hist.png` (R, V(x), A) and `top_advantages.md`
    (the answers of `records`, aligned with the table, that hold the highest A) into `directory`.

    This is a data-quality audit on its own: the fraction of pairs with A > 0 is the share
    of the data A-LoL will learn from, and the top answers are what it learns most from.
    """
    directory = Path(directory)
    groups = [record.group for record in records]
    words = response_words([record.response for record in records])
    stats = advantage_stats(table, max_response_length, groups, words)
    if table.key:  # the folder caches a table per set of inputs: the one these stats are of
        stats["table"] = cache_path(directory, table.key).name
    write_json(directory / "advantage_stats.json", stats)
    plot_advantage_histogram(table, stats["fraction_positive"], directory / "advantage_hist.png")
    answers = top_advantage_answers(table, records)
    markdown = top_answers_markdown(answers, stats, max_response_length)
    write_text(directory / "top_advantages.md", markdown)
    return stats
