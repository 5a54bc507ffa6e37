"""The record kinds that offline RL data for language models comes in.

- `RewardRecord`: a prompt, one response and its sequence reward. alol's native kind; TRL's
  prompt/completion, conversational and unpaired-preference (`label`) forms load as this kind.
- `PreferenceRecord`: a prompt with a chosen and a rejected response (TRL/DPO pairs).
- `RankedRecord`: a prompt with several responses and their rewards (PRO; the paper's HH files).
- `PromptRecord`: a prompt alone, for evaluation and value fitting.

`alol.data.formats` reads and validates them from files; `alol.data.conversions` turns one kind into another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Prompt = str | list[dict[str, str]]  # plain text, or chat messages [{"role", "content"}]


CHOSEN_REWARD = (
    1.0  # the reward a chosen response gets when a preference pair becomes reward records
)


REJECTED_REWARD = 0.0  # ... and the rejected one: all a bare preference says is "chosen is better"


@dataclass
class RewardRecord:
    """One response to one prompt and its sequence reward (`None` until a reward function scores it)."""

    prompt: Prompt
    response: str
    reward: float | dict[str, float] | None = None
    id: str | None = None
    source: str = field(
        default="", compare=False
    )  # "file:line": where it came from, not what it is
    label: bool | None = None
    """TRL's unpaired preference: whether the response is desirable (its reward is then
    CHOSEN_REWARD or REJECTED_REWARD). KTO trains on it as given."""
    group: str | None = field(default=None, compare=False)
    """The source it belongs to in a mix (an HH subset, one of several datasets); with
    `balance_groups` each group keeps its share of the data in A-LoL's draws; on test records,
    `alol eval` reports each group's part of a change."""

    @property
    def total_reward(self) -> float | None:
        """The reward, or the sum of its components: rewards from several scorers add unweighted."""
        if isinstance(self.reward, dict):
            return float(sum(self.reward.values()))
        return self.reward


@dataclass
class PreferenceRecord:
    prompt: Prompt
    chosen: str
    rejected: str
    id: str | None = None
    source: str = field(default="", compare=False)
    group: str | None = field(default=None, compare=False)
    """The source it belongs to in a mix (an HH subset, one of several datasets); with
    `balance_groups` each group keeps its share of the data in A-LoL's draws; on test records,
    `alol eval` reports each group's part of a change."""


@dataclass
class RankedRecord:
    """Several responses to one prompt, in the order given, each with its reward."""

    prompt: Prompt
    responses: list[str]
    rewards: list[float]
    id: str | None = None
    source: str = field(default="", compare=False)
    reward_logits: list[float] | None = None
    """The reward model's raw logits, when the rewards are their sigmoid (HH/PRO files).
    PRO's reward-gap temperatures read them, as PRO's and the A-LoL authors' code do."""
    group: str | None = field(default=None, compare=False)
    """The source it belongs to in a mix (an HH subset, one of several datasets); with
    `balance_groups` each group keeps its share of the data in A-LoL's draws; on test records,
    `alol eval` reports each group's part of a change."""


@dataclass
class PromptRecord:
    """A prompt alone: what evaluation and value fitting decode from."""

    prompt: Prompt
    id: str | None = None
    source: str = field(default="", compare=False)
    group: str | None = field(default=None, compare=False)
    """The source it belongs to in a mix; `alol eval` reports each group's part of a change."""


Record = RewardRecord | PreferenceRecord | RankedRecord | PromptRecord


@dataclass
class LoadedData:
    records: list
    kind: str  # "reward", "preference" or "ranked"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    duplicates: int = 0
    """Records equal to an earlier one in everything but id and source. They are kept (a
    repeated response weighs more, as in the file), and counted so the repetition shows."""
