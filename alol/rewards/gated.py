"""A reward that counts only where it applies: a term multiplied by a gate in [0, 1].

A term fitted on one kind of prompt can pay a behaviour everywhere: a harmlessness reward
learned from red-team requests pays a polite non-answer to any question. Gating it by the
probability that the prompt is such a request (a prompt classifier) keeps what it knows where
it knows it, and leaves every other prompt to the rest of the reward.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from alol.rewards.base import RewardError, call_reward, weights_of


class GatedReward:
    """Each of `term`'s components times the value of `gate` on the same record.

    The gate's value is its weighted total (one component, usually), which must lie in
    [0, 1]. It stays visible as a component of weight 0 under the gate's name, so logs and
    reports show where the term counted without it entering the total.
    """

    def __init__(self, term: Any, gate: Any, name: str = "gated"):
        self.term = term
        self.gate = gate
        self.name = name

    @property
    def components(self) -> tuple[str, ...]:
        return (*self._term_components(), self.gate.name)

    @property
    def weights(self) -> dict[str, float]:
        inner = weights_of(self.term)
        return {**{c: inner.get(c, 1.0) for c in self._term_components()}, self.gate.name: 0.0}

    def _term_components(self) -> tuple[str, ...]:
        term = tuple(self.term.components)
        if self.gate.name in term:
            raise RewardError(
                f"gated reward {self.name!r}: its gate and a component of its term are both "
                f"named {self.gate.name!r}; give the gate another 'name'"
            )
        return term

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        gates = self._gate_values(prompts, responses)
        where = f"the term of gated reward {self.name!r}"
        outputs = call_reward(self.term, prompts, responses, where)
        self._term_components()  # a function's components are known from its first call on
        return [
            {
                **{key: gate * _number(value, where, key) for key, value in output.items()},
                self.gate.name: gate,
            }
            for gate, output in zip(gates, outputs, strict=True)
        ]

    def _gate_values(self, prompts: list[str], responses: list[str]) -> list[float]:
        where = f"the gate {self.gate.name!r} of gated reward {self.name!r}"
        outputs = call_reward(self.gate, prompts, responses, where)
        weights = weights_of(self.gate)
        values = []
        for record, output in enumerate(outputs):
            value = sum(weights.get(key, 1.0) * _number(v, where, key) for key, v in output.items())
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise RewardError(
                    f"{where} gave {value!r} for record {record} of its batch; a gate is a "
                    "probability in [0, 1]: a classifier with activation 'sigmoid' or "
                    "'softmax', or a function returning values in [0, 1]"
                )
            values.append(value)
        return values


def _number(value: Any, where: str, component: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardError(
            f"{where} gave {value!r} as its component {component!r}; expected a number"
        )
    return float(value)
