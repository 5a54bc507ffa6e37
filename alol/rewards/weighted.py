"""A weighted sum of rewards whose components stay visible in every log and report."""

from __future__ import annotations

from collections import Counter
from typing import Any

from alol.rewards.base import RewardError, call_reward, weights_of


class WeightedSum:
    """A weighted sum of rewards whose components stay visible.

    Each term contributes its components under their own names; a name that two terms share
    is prefixed by its term's name ("term/component"), except a term's own name, which stays.
    """

    def __init__(self, terms: list[tuple[Any, float]], name: str = "sum"):
        if not terms:
            raise ValueError("a sum reward needs at least one component")
        duplicates = _duplicates(reward.name for reward, _ in terms)
        if duplicates:
            raise ValueError(
                f"sum reward {name!r}: more than one component is named {duplicates}; give each "
                "a distinct 'name'"
            )
        self.terms = terms
        self.name = name

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(new for renames in self._renames() for new in renames.values())

    @property
    def weights(self) -> dict[str, float]:
        weights = {}
        for (reward, weight), renames in zip(self.terms, self._renames(), strict=True):
            inner = weights_of(reward)
            for old, new in renames.items():
                weights[new] = weight * inner.get(old, 1.0)
        return weights

    def _renames(self) -> list[dict[str, str]]:
        """Per term, its component name → the sum's component name."""
        shared = Counter(c for reward, _ in self.terms for c in reward.components)
        renames = [_term_renames(reward, shared) for reward, _ in self.terms]
        duplicates = _duplicates(new for r in renames for new in r.values())
        if duplicates:
            raise RewardError(
                f"sum reward {self.name!r}: components {duplicates} still clash after prefixing "
                "with their terms' names; rename the terms or the dict keys"
            )
        return renames

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        outputs = [
            call_reward(reward, prompts, responses, f"component {reward.name!r}")
            for reward, _ in self.terms
        ]
        records: list[dict[str, Any]] = [{} for _ in prompts]
        for renames, term_outputs in zip(self._renames(), outputs, strict=True):
            for record, output in zip(records, term_outputs, strict=True):
                record.update((renames.get(key, key), value) for key, value in output.items())
        return records


def _term_renames(reward, shared: Counter) -> dict[str, str]:
    """A term keeps its own name and every unshared key; a shared key gets the term's name as prefix."""
    keeps_all = reward.components == (reward.name,)
    return {
        c: c if keeps_all or shared[c] == 1 else f"{reward.name}/{c}" for c in reward.components
    }


def _duplicates(names) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)
