"""A reward that counts only where it applies: a term multiplied by a gate in [0, 1].

A term fitted on one kind of prompt can pay a behaviour everywhere: a harmlessness reward
learned from red-team requests pays a polite non-answer to any question. Gating it by the
probability that the prompt is such a request (a prompt classifier) keeps what it knows where
it knows it, and leaves every other prompt to the rest of the reward.
"""

from __future__ import annotations

from typing import Any

from alol.rewards.base import RewardError, call_reward, weights_of
from alol.rewards.scoring import with_total

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
        components = self._term_components()  # a function's are known from its first call on
        weights = weights_of(self.term)
        return [
            self._gated(
                with_total(output, str(i), components, weights, self.term.name), gate, weights
            )
            for i, (gate, output) in enumerate(zip(gates, outputs, strict=True))
        ]

    def _gated(self, record: dict[str, float], gate: float, weights: dict[str, float]) -> dict:
        """The term's components scaled by the gate; a component of weight 0 in the term (an
        inner gate) is a report, kept as it is."""
        del record["total"]
        scaled = {
            key: value * (gate if weights.get(key, 1.0) else 1.0) for key, value in record.items()
        }
        return {**scaled, self.gate.name: gate}

    def _gate_values(self, prompts: list[str], responses: list[str]) -> list[float]:
        where = f"the gate {self.gate.name!r} of gated reward {self.name!r}"
        outputs = call_reward(self.gate, prompts, responses, where)
        components, weights = tuple(self.gate.components), weights_of(self.gate)
        totals = [
            with_total(output, str(i), components, weights, self.gate.name)["total"]
            for i, output in enumerate(outputs)
        ]
        return [_probability(total, where, record) for record, total in enumerate(totals)]


def _probability(value: float, where: str, record: int) -> float:
    """The gate's weighted total on one record, which must be a probability; a value past 0 or
    1 by rounding alone (a weighted mean of confident sigmoids) is taken as the bound."""
    if not -ROUNDING <= value <= 1.0 + ROUNDING:
        raise RewardError(
            f"{where} gave {value!r} for record {record} of its batch; a gate is a "
            "probability in [0, 1]: a classifier with activation 'sigmoid' or 'softmax', or a "
            "function returning values in [0, 1]"
        )
    return min(max(value, 0.0), 1.0)
