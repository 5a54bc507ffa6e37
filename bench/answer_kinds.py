"""The kinds of HH answer the collapse measurements count: evasive templates (an apology or
"I don't understand", short), short answers, and clarifying questions that ask back."""

from __future__ import annotations

import re

EVASIVE = re.compile(
    r"sorry|not sure what you mean|i don.t understand|what do you mean|i.m not sure|i don.t know",
    re.I,
)
EVASIVE_MAX_WORDS = 15
SHORT_MAX_WORDS = 8
QUESTION_MAX_WORDS = 25
"""A clarifying question: an answer of at most this many words that ends by asking back."""


def words(text: str) -> int:
    return len(text.split())


def is_evasive(text: str) -> bool:
    return words(text) <= EVASIVE_MAX_WORDS and bool(EVASIVE.search(text))


def is_clarifying_question(text: str) -> bool:
    return words(text) <= QUESTION_MAX_WORDS and text.rstrip().endswith("?")
