"""A reward that counts only where it applies: a term multiplied by a gate in [0, 1].

A term fitted on one kind of prompt can pay a behaviour everywhere: a harmlessness reward
learned from red-team requests pays a polite non-answer to any question. Gating it by the
probability that the prompt is such a request (a prompt classifier) keeps what it knows where
it knows it, and leaves every other prompt to the rest of the reward.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from alol.rewards.base import RewardError, call_reward, weights_of

ROUNDING = 1e-9
"""How far past [0, 1] a gate's weighted total may stray by floating-point rounding alone."""


class GatedReward:
    """Each of `term`'s components times the value of `gate` on the same record (a component
    of weight 0 in the term, such as an inner gate, is a report and stays as it is).

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
        self._check_gate_name(term)
        return term

    def _check_gate_name(self, term_components) -> None:
        if self.gate.name in term_components:
            raise RewardError(
                f"gated reward {self.name!r}: its gate and a component of its term are both "
                f"named {self.gate.name!r}; give the gate another 'name'"
            )

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        gates = self._gate_values(prompts, responses)
        where = f"the term of gated reward {self.name!r}"
        outputs = call_reward(self.term, prompts, responses, where)
        inner = weights_of(self.term)  # a function's components are known from its first call
        return [
            self._gated(output, gate, inner, where)
            for gate, output in zip(gates, outputs, strict=True)
        ]

    def _gated(self, output: Mapping, gate: float, inner: dict[str, float], where: str) -> dict:
        """The term's components scaled by the gate; a component of weight 0 in the term (an
        inner gate) is a report, kept as it is."""
        self._check_gate_name(output)
        scaled = {
            key: _number(value, where, key) * (gate if inner.get(key, 1.0) else 1.0)
            for key, value in output.items()
        }
        return {**scaled, self.gate.name: gate}

    def _gate_values(self, prompts: list[str], responses: list[str]) -> list[float]:
        where = f"the gate {self.gate.name!r} of gated reward {self.name!r}"
        outputs = call_reward(self.gate, prompts, responses, where)
        weights = weights_of(self.gate)
        return [
            _probability(output, weights, where, record) for record, output in enumerate(outputs)
        ]


def _probability(output: Mapping, weights: dict[str, float], where: str, record: int) -> float:
    """The gate's weighted total on one record, which must be a probability; a value past 0 or
    1 by rounding alone (a weighted mean of confident sigmoids) is taken as the bound."""
    value = sum(weights.get(key, 1.0) * _number(v, where, key) for key, v in output.items())
    if not (math.isfinite(value) and -ROUNDING <= value <= 1.0 + ROUNDING):
        raise RewardError(
            f"{where} gave {value!r} for record {record} of its batch; a gate is a "
            "probability in [0, 1]: a classifier with activation 'sigmoid' or 'softmax', or a "
            "function returning values in [0, 1]"
        )
    return min(max(value, 0.0), 1.0)


def _number(value: Any, where: str, component: str) -> float:
    """A component's value as a float, or an error that names the part and the component."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardError(
            f"{where} gave {value!r} as its component {component!r}; expected a number"
        )
    return float(value)
