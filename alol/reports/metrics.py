"""Measures of decoded responses (distinct-n, length, win-rate) and of fits (correlations,
explained variance): pure arithmetic on texts and scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


def distinct_n(texts: list[str], n: int) -> float:
    """Corpus-level unique n-grams / total n-grams over whitespace tokens (0.0 when there are none).

    n-grams never span two texts. Low values mean the model repeats itself across prompts.
    """
    ngrams = [
        tuple(words[i : i + n])
        for words in (text.split() for text in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of an answer's word n-grams that repeat an earlier n-gram of the same answer
    (seq-rep-n, Welleck et al. 2019): near 0 for prose, near 1 for an answer stuck repeating one
    phrase. An answer of under 2n words is read as characters (2n-grams), so a run with no
    spaces ("........", "hahahaha") counts too; 0.0 when it is shorter than that as well."""
    words = text.split()
    if len(words) >= 2 * n:
        units, size = words, n
    else:
        units, size = list(text), 2 * n
    ngrams = [tuple(units[i : i + size]) for i in range(len(units) - size + 1)]
    return 1.0 - len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def mean_length(texts: list[str], tokenizer=None) -> float:
    """Mean length in whitespace words, or in tokens when a tokenizer is given (0.0 for no texts)."""
    if not texts:
        return 0.0
    if tokenizer is None:
        return float(np.mean([len(text.split()) for text in texts]))
    return float(
        np.mean([len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts])
    )


def win_rate(scores: list[float], reference_scores: list[float]) -> float:
    """Fraction of examples where the score beats the reference's; a tie counts half."""
    if len(scores) != len(reference_scores):
        raise ValueError(
            f"win_rate needs one reference score per score, got {len(scores)} and {len(reference_scores)}"
        )
    if not scores:
        raise ValueError("win_rate of no examples is undefined; pass at least one score")
    outcomes = [
        1.0 if s > r else 0.5 if s == r else 0.0
        for s, r in zip(scores, reference_scores, strict=True)
    ]
    return float(np.mean(outcomes))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when there are < 2 points or either side is constant."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the ranks (ties share their average rank)."""
    return pearson(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 − Var(target − prediction) / Var(target): 1 is perfect, 0 is no better than a constant."""
    if len(targets) < 2 or np.var(targets) == 0:
        return float("nan")
    return float(1 - np.var(targets - predictions) / np.var(targets))


def explained_variance_interval(
    predictions: np.ndarray,
    targets: np.ndarray,
    groups: list | None = None,
    draws: int = 2000,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """A bootstrap interval of `explained_variance`, resampling whole groups (the prompts, whose
    several samples are not independent) with replacement: on the 20 held-out prompts of a
    small validation set, a value head's 0.2 can as well be −0.5 or 0.6. None when fewer than
    two groups, or no resample has spread."""
    predictions, targets = np.asarray(predictions, float), np.asarray(targets, float)
    keys = list(range(len(targets))) if groups is None else list(groups)
    members = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    clusters = list(members.values())
    if len(clusters) < 2:
        return None
    rng = np.random.default_rng(0)
    values = []
    for _ in range(draws):
        chosen = rng.integers(0, len(clusters), len(clusters))
        rows = np.concatenate([clusters[c] for c in chosen])
        value = explained_variance(predictions[rows], targets[rows])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def formatted(value: float | None, spec: str) -> str:
    """A figure for a table or a log line; an undefined one (None, NaN) is a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def with_change(
    value: float | None,
    change: float | None,
    bold: bool = False,
    standard_error: float | None = None,
) -> str:
    """ "0.506 (+0.036)": a figure and its change against π_ref's, when known;
    "0.506 (+0.036 ± 0.012)" with the change's standard error."""
    if value is None:
        return "–"
    text = f"**{value:.3f}**" if bold else f"{value:.3f}"
    if change is None:
        return text
    spread = "" if standard_error is None else f" ± {standard_error:.3f}"
    return f"{text} ({signed(change)}{spread})"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """A count and its noun in the right number: "1 record", "2 records", "1 record repeats"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def signed(value: float, spec: str = ".3f") -> str:
    """A change with its sign, minus as the typographic "−" tables use: "+0.036", "−0.119"."""
    return format(value, "+" + spec).replace("-", "−")


def paired_change(model: list[float], reference: list[float]) -> tuple[float, float]:
    """The mean per-prompt difference model − π_ref and its standard error."""
    difference = np.asarray(model, dtype=float) - np.asarray(reference, dtype=float)
    if len(difference) < 2:
        return float(difference.mean()), 0.0
    return float(difference.mean()), float(np.std(difference, ddof=1) / math.sqrt(len(difference)))


@dataclass(frozen=True)
class LengthControlledChange:
    """A per-prompt measure's change from π_ref's answers to a model's at equal answer length.

    Longer answers move many rewards and judges whatever they say, so a gain can be length
    alone. Per prompt, the change Δ is fitted as `change + per_doubling · log2(ratio)`, where
    ratio = (1 + model's words) / (1 + π_ref's words): `change` is what is left when both
    answers have the same length, `per_doubling` what doubling an answer's length is worth.
    """

    change: float
    standard_error: float
    per_doubling: float


def length_controlled_change(
    model: list[float],
    reference: list[float],
    model_words: list[int],
    reference_words: list[int],
) -> LengthControlledChange | None:
    """The paired regression of `LengthControlledChange`; None when the length ratios do not
    vary (nothing to tell length from the rest) or there are under three prompts."""
    difference = np.asarray(model, dtype=float) - np.asarray(reference, dtype=float)
    log_ratio = np.log2((1.0 + np.asarray(model_words)) / (1.0 + np.asarray(reference_words)))
    if len(difference) < 3 or np.ptp(log_ratio) == 0:
        return None
    design = np.column_stack([np.ones_like(log_ratio), log_ratio])
    coefficients, *_ = np.linalg.lstsq(design, difference, rcond=None)
    residual = difference - design @ coefficients
    covariance = (residual @ residual / (len(difference) - 2)) * np.linalg.inv(design.T @ design)
    return LengthControlledChange(
        change=float(coefficients[0]),
        standard_error=float(math.sqrt(covariance[0, 0])),
        per_doubling=float(coefficients[1]),
    )


@dataclass(frozen=True)
class HeldOutAgreement:
    """How often a fitted model orders held-out pairs as its labels do: the human's choice for
    a Bradley–Terry fit, the stored scores for a regression. A judge near 50% is a coin, and its
    rises and falls say little about what its labels measure. The pairs are taken as
    independent; a regression's pairs that share an answer are not, so there the standard
    errors are too small."""

    accuracy: float
    pairs: int

    @property
    def standard_error(self) -> float:
        """Of the accuracy measured: what the reports print beside it."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.pairs)

    @property
    def coin_standard_error(self) -> float:
        """Of a coin's 50% on as many pairs: what an accuracy is told from chance by (unlike
        `standard_error`, not 0 for a judge that got its two held-out pairs right)."""
        return 0.5 / math.sqrt(self.pairs)


def agreement_of(report: dict) -> HeldOutAgreement | None:
    """The held-out agreement in a fit's metrics (`alol.rewards.reward_model.heldout_metrics`):
    pairs are the score pairs a regression was checked on, else the held-out preference pairs;
    None without held-out pairs."""
    pairs = report.get("pairs", report.get("n_heldout", 0))
    accuracy = report.get("pairwise_accuracy")
    if not pairs or accuracy is None or math.isnan(accuracy):
        return None
    return HeldOutAgreement(float(accuracy), int(pairs))
