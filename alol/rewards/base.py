"""What a reward is: the `Reward` protocol, a Python function as a reward, and the error every
reward failure becomes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from alol.errors import AlolError


class RewardError(AlolError):
    """A reward failed while scoring; the message names the reward, the batch or record, and the component."""


class Reward(Protocol):
    """Scores a batch: one dict of named, finite components per (prompt, response) record.

    alol's own rewards also carry `name` (used in messages) and `weights` (component → its
    weight in `"total"`); `score` treats a reward without `weights` as weighting all by 1.
    """

    components: tuple[str, ...]

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, float]]: ...


class CallableReward:
    """A Python function as a reward.

    A function returning floats has one component, the reward's name; a function returning
    dicts has one component per key, known from its first call on (`components` raises before).
    """

    def __init__(
        self,
        function: Callable[[list[str], list[str]], Any],
        name: str,
        components: tuple[str, ...] | None = None,
    ):
        self.function = function
        self.name = name
        self._components = components

    @property
    def components(self) -> tuple[str, ...]:
        if self._components is None:
            raise RewardError(
                f"the components of reward {self.name!r} are known only after its first call "
                "(its function may return dicts); score some records first"
            )
        return self._components

    @property
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.components, 1.0)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[dict[str, Any]]:
        outputs = self.function(prompts, responses)
        if hasattr(outputs, "tolist"):  # a numpy array or a tensor
            outputs = outputs.tolist()
        if not isinstance(outputs, list | tuple):
            raise RewardError(
                f"reward {self.name!r} returned a {type(outputs).__name__}; it must return a list "
                "with one float (or one dict of components) per record"
            )
        records = [dict(out) if isinstance(out, Mapping) else {self.name: out} for out in outputs]
        if self._components is None and records:
            self._components = tuple(records[0])
        return records


def call_reward(reward, prompts: list[str], responses: list[str], where: str) -> list[Mapping]:
    """A part of a composite reward called on a batch: any failure, a wrong count or a
    non-dict output becomes a `RewardError` that says `where` it happened."""
    try:
        outputs = reward(prompts, responses)
    except Exception as error:
        raise RewardError(f"{where} raised {type(error).__name__}: {error}") from error
    check_count(outputs, len(prompts), where)
    for output in outputs:
        if not isinstance(output, Mapping):
            raise RewardError(f"{where} gave a {type(output).__name__}; expected a dict per record")
    return outputs


def weights_of(reward) -> dict[str, float]:
    return getattr(reward, "weights", {})


def check_count(outputs, expected: int, where: str) -> None:
    if not isinstance(outputs, list | tuple):
        raise RewardError(
            f"{where} returned a {type(outputs).__name__}; expected a list with one entry per record"
        )
    if len(outputs) != expected:
        raise RewardError(f"{where} returned {len(outputs)} results for {expected} records")
