"""Quality measures of decoded responses: pure arithmetic on texts and scores."""

from __future__ import annotations

import numpy as np


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
