"""Constant answers: one text given as the answer to every test prompt. A reward that pays
one more than π_ref's own answers can be raised without answering; the flag says so, and which
components of a summed reward pay it."""

from __future__ import annotations

from dataclasses import dataclass, field

from alol.reports.collapse import short_text
from alol.reports.metrics import signed


@dataclass
class ConstantAnswer:
    """One text given as the answer to every test prompt, and what the reward and judges pay."""

    text: str
    origin: str
    """Where it comes from, e.g. "training data (12 times)", "probe" (one of `probe_answers`),
    "most frequent answer of a_lol"."""
    reward: float
    judges: dict[str, float]
    models: list[str] = field(default_factory=list)
    """The models whose most frequent answer it is."""
    components: dict[str, float] = field(default_factory=dict)
    """What each component of the reward adds to its mean total (times its weight in a sum)."""


def reward_flags(
    constants: list[ConstantAnswer], reference_reward: float, reference_components: dict[str, float]
) -> list[str]:
    """A flag for each constant answer the reward pays more than π_ref's answers."""
    return [
        f"the reward pays for a constant answer: “{short_text(c.text)}” ({c.origin}) given to every "
        f"test prompt scores {c.reward:.3f}, above π_ref's {reference_reward:.3f}"
        f"{_paid_by(c, reference_components)}; a model can raise the reward by giving it"
        for c in constants
        if c.reward > reference_reward
    ]


def _paid_by(constant: ConstantAnswer, reference_components: dict[str, float]) -> str:
    """Which components of a summed reward pay a constant answer more than π_ref's answers."""
    parts = described(changes_by_part(constant.components, reference_components))
    return f" (against π_ref's answers: {parts})" if parts else ""


def changes_by_part(
    components: dict[str, float], reference_components: dict[str, float]
) -> dict[str, float]:
    """Each component's change from π_ref's answers, the largest first, or none for a reward of
    one part (a component one side lacks, such as the missing-EOS penalty of π_ref's cut
    answers, counts as 0 there)."""
    names = components.keys() | reference_components.keys()
    if len(names) < 2:
        return {}
    changes = {
        name: components.get(name, 0.0) - reference_components.get(name, 0.0) for name in names
    }
    return dict(sorted(changes.items(), key=lambda item: -item[1]))


def described(changes: dict[str, float]) -> str:
    """The changes by part as the flags say them: "harmless_term +0.032, reward −0.046"."""
    return ", ".join(f"{name} {signed(change)}" for name, change in changes.items())


def reward_components(means: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """What each component of a reward's mean scores adds to the total (times its weight in a
    sum): where there are several (a sum, or a reward and the missing-EOS penalty), the audit
    says which of them pays a constant answer. A component of weight 0 (a gate) adds nothing
    and is left out."""
    return {
        name: weights.get(name, 1.0) * value
        for name, value in means.items()
        if name != "total" and weights.get(name, 1.0) != 0.0
    }
