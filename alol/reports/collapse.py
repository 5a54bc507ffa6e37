"""How far a model's answers have collapsed onto a few texts: the share of its most frequent
answer, distinct-n, length, and the shares cut at the token budget, looping and empty. The audit
(`alol.reports.audit`) and checkpoint selection read them; a reward gamed by one stock answer
shows here first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from alol.reports.metrics import distinct_n, mean_length, repeated_ngram_share

LOOP_REPEATED_SHARE = 0.5
"""An answer loops when this share (or more) of its word 4-grams repeat an earlier one of it:
a small model decoding greedily gets stuck repeating a phrase until the token budget."""


def normalise_answer(text: str) -> str:
    """An answer compared as users read it: case and runs of whitespace ignored."""
    return " ".join(text.lower().split())


def most_frequent_answers(responses: list[str], count: int) -> list[tuple[str, int]]:
    """The `count` most frequent answers (compared by `normalise_answer`), each as its first
    written form and the number of responses equal to it; answers given once are left out."""
    forms: dict[str, str] = {}
    for response in responses:
        forms.setdefault(normalise_answer(response), response)
    counts = Counter(normalise_answer(response) for response in responses)
    return [(forms[key], n) for key, n in counts.most_common(count) if n > 1]


@dataclass
class Collapse:
    """How far one model's answers have collapsed onto a few texts."""

    template_share: float
    """Share of answers equal to the most frequent one (after `normalise_answer`)."""
    top_answer: str
    """The most frequent answer, as first written."""
    distinct_1: float
    distinct_2: float
    mean_length_words: float
    cut_off_share: float | None
    """Share cut at the generation budget before EOS (None when unknown)."""
    empty_share: float
    loop_share: float
    """Share of answers that loop (`loops`)."""
    cut_looping_share: float | None
    """Share of answers both cut at the budget and looping: what of `cut_off_share` is a model
    stuck repeating itself rather than a long answer (None when the cuts are unknown)."""


def loops(text: str) -> bool:
    """Whether an answer is stuck repeating itself (`LOOP_REPEATED_SHARE`)."""
    return repeated_ngram_share(text, 4) >= LOOP_REPEATED_SHARE


def collapse_of(responses: list[str], finished: list[bool] | None) -> Collapse:
    """The collapse measures of one model's answers to the test (or validation) prompts."""
    if not responses:
        raise ValueError("collapse of no answers is undefined; pass at least one response")
    counts = Counter(normalise_answer(response) for response in responses)
    top, top_count = counts.most_common(1)[0]
    looping = [loops(response) for response in responses]
    return Collapse(
        template_share=top_count / len(responses),
        top_answer=next(r for r in responses if normalise_answer(r) == top),
        distinct_1=distinct_n(responses, 1),
        distinct_2=distinct_n(responses, 2),
        mean_length_words=mean_length(responses),
        cut_off_share=None if finished is None else float(np.mean([not f for f in finished])),
        empty_share=float(np.mean([not response.strip() for response in responses])),
        loop_share=float(np.mean(looping)),
        cut_looping_share=None
        if finished is None
        else float(np.mean([loop and not f for loop, f in zip(looping, finished, strict=True)])),
    )


def short_text(text: str, limit: int = 60) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
