"""The leftover lunch: A = R − V(x), the examples A-LoL keeps (A > 0), their sampling weights,
and A-LoL's step budget. Pure arithmetic on arrays; the reference pass that produces R and V(x)
is `alol.models.precompute`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from alol.errors import AlolError

if TYPE_CHECKING:
    from alol.data.table import AdvantageTable
    from alol.method.sampling import Sampling


def advantages(reward: np.ndarray, value: np.ndarray) -> np.ndarray:
    """A = R − V(x): how much better each training answer is than what π_ref earns on its
    prompt. The answers with A > 0 are the leftover lunch."""
    return np.asarray(reward, dtype=np.float64) - np.asarray(value, dtype=np.float64)


def length_neutral(advantage: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A less the part of it that answer length explains linearly (least squares over the
    training examples), so that A and length do not correlate and the mean A is unchanged.

    Reward models pay length (Singhal et al., 2023), and A-LoL draws ∝ A and weights by A
    again, so a reward's slight preference for long answers becomes a strong push towards
    them: on HH, answers of 48 tokens on average carry a gradient weight whose mean answer is
    69 tokens, and the policy learns to run its answers to the token budget. With A made
    length-neutral, which answers beat π_ref *at their length* decides what A-LoL learns.
    Nothing changes where all answers are of one length.
    """
    advantage = np.asarray(advantage, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.float64)
    if advantage.shape != lengths.shape:
        raise ValueError(f"{len(lengths)} lengths for {len(advantage)} advantages")
    centred = lengths - lengths.mean()
    spread = float(np.dot(centred, centred))
    if spread == 0:
        return advantage.copy()
    slope = float(np.dot(centred, advantage - advantage.mean())) / spread
    return advantage - slope * centred


def response_words(responses: list[str]) -> np.ndarray:
    """Each response's length in whitespace-separated words: a length any tokenizer agrees on,
    read before the examples are tokenized."""
    return np.array([len(response.split()) for response in responses], dtype=np.float64)


class NoPositiveAdvantageError(AlolError):
    """No training example has A > 0, or every reward is the same (so no response is better
    than another and the advantages hold nothing but V(x)'s errors): A-LoL has nothing to learn."""


def select_training_examples(
    table: AdvantageTable, positive_only: bool, sampling: Sampling
) -> tuple[np.ndarray, np.ndarray | None]:
    """The table's indices to train on and their sampling weights (see `select_examples`)."""
    return select_examples(table.reward, table.advantage, positive_only, sampling, table.value)


def select_examples(
    reward: np.ndarray,
    advantage: np.ndarray | None,
    positive_only: bool,
    sampling: Sampling,
    value: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The indices to train on and their sampling weights (None: uniform).

    `positive_only` keeps the leftover lunch, A > 0, and refuses rewards that are all equal.
    "advantage" weights each kept example by A (A-LoL's priority sampling), "reward" by R
    (rewards must be ≥ 0; they are not shifted, since a shift would change which examples
    matter). `value` only makes the no-positive-advantage error more telling.
    """
    indices = np.arange(len(reward), dtype=np.int64)
    if positive_only:
        if len(reward) > 1 and np.all(reward == reward[0]):
            raise NoPositiveAdvantageError(
                f"every reward equals {reward[0]:g} across the {len(reward)} training "
                "examples, so no response is better than another and A = R − V(x) only "
                "reflects the errors of V(x). Check that the reward function scores these "
                "responses differently (or that the data's 'reward' field varies)."
            )
        indices = indices[advantage > 0]
        if len(indices) == 0:
            raise NoPositiveAdvantageError(_no_positive_message(reward, advantage, value))
    if sampling == "uniform":
        return indices, None
    if sampling == "advantage":
        if not positive_only:
            raise ValueError(
                "sampling='advantage' needs positive_only=True: only A > 0 can be a probability"
            )
        return indices, advantage[indices]
    if sampling == "reward":
        weights = reward[indices]
        if np.any(weights < 0) or not np.any(weights > 0):
            raise ValueError(
                f"sampling='reward' needs rewards ≥ 0 with at least one > 0, but they range over "
                f"[{weights.min():g}, {weights.max():g}]; use a non-negative reward (e.g. the "
                "sigmoid of a logit) or sampling='uniform'"
            )
        return indices, weights
    raise ValueError(f"unknown sampling {sampling!r}; choose 'uniform', 'advantage' or 'reward'")


def balanced_by_group(
    weights: np.ndarray | None, kept: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Sampling weights of the `kept` examples rescaled so that each group's draws make up its
    share of all the training examples (`groups`: one label per example), as in the data that
    π_ref was fine-tuned on; within a group the weights keep their ratios (∝ A for A-LoL).

    Without it a group whose answers beat π_ref by most takes most of the draws: on HH,
    helpful-online holds half of the answers and 83% of A-LoL's gradient weight. A group with
    no kept example cannot be drawn; the others share its part. With one group nothing changes.
    """
    kept_weights = np.ones(len(kept)) if weights is None else np.asarray(weights, dtype=np.float64)
    kept_groups = groups[kept]
    balanced = np.zeros(len(kept), dtype=np.float64)
    for group in np.unique(kept_groups):
        members = kept_groups == group
        total = kept_weights[members].sum()
        if total > 0:
            share = np.mean(groups == group)
            balanced[members] = kept_weights[members] / total * share
    return balanced


def _no_positive_message(
    reward: np.ndarray, advantage: np.ndarray, value: np.ndarray | None
) -> str:
    values = "" if value is None else f", mean V(x) = {value.mean():.4g}"
    return (
        f"none of the {len(reward)} training examples has a positive advantage A = R − V(x) "
        f"(largest A = {advantage.max():.4g}, mean R = {reward.mean():.4g}{values}). Check "
        "that V was estimated with the same reward and on prompts like these, or "
        "train with an objective that needs no value ('wbc', 'r_lol', 'nll')."
    )


def budget_steps(nll_steps: int, fraction_positive: float) -> int:
    """A-LoL's step budget: `fraction_positive × nll_steps`, rounded up, at least 1."""
    if nll_steps < 1 or not 0.0 <= fraction_positive <= 1.0:
        raise ValueError(
            f"need nll_steps ≥ 1 and 0 ≤ fraction_positive ≤ 1, got {nll_steps}, {fraction_positive}"
        )
    # round() first so float noise (9000 × 0.3 = 2700.0000000000005) does not add a step
    return max(1, math.ceil(round(nll_steps * fraction_positive, 9)))
