"""Judges of the HH benchmark that read the user's question rather than the rendered chat.

alol hands a reward the prompt as the policy saw it: SmolLM2's chat template, with its system
prompt and role tags. A sentence encoder compares whole texts, so prompt relevance is measured
here against the last user turn alone, as a reader would judge an answer to a question.
"""

from __future__ import annotations

import functools
import re

from alol.rewards.scorers import RelevanceScorer

_LAST_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)


def last_user_turn(rendered: str) -> str:
    """The last user message of a ChatML-rendered prompt (the text itself when it is not one)."""
    turns = _LAST_USER_TURN.findall(rendered)
    return turns[-1] if turns else rendered


@functools.cache
def _scorer() -> RelevanceScorer:
    return RelevanceScorer()


def relevance(prompts: list[str], responses: list[str]) -> list[float]:
    """MiniLM cosine of the answer and the user's last question."""
    return _scorer()([last_user_turn(p) for p in prompts], responses)
