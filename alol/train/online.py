"""The paper's online baseline through Hugging Face TRL: PPO, RLOO and GRPO on alol's rewards.

A-LoL's point is to reach the reward of online RL without generating new data every step.
These methods generate: every step samples responses from the policy and scores them. They
come from TRL, which maintains them (`pip install -e ".[online]"`, TRL 1.12: the last release
that ships PPO beside RLOO and GRPO).

- RLOO and GRPO take Python reward functions: any alol reward (a function, a built-in scorer,
  a classifier, a weighted sum) becomes one TRL reward function per component, weighted as in
  the reward's total, so each component is logged (`rewards/<name>/mean`). The components are
  scored once per batch, and the cost is counted: reward calls, generated tokens.
- PPO takes a sequence-classifier reward model that reads the policy's own token ids (TRL
  scores the token sequence, not text), so its tokenizer must be the policy's, e.g. one fitted
  by `alol reward-model --reward-model <the policy's base model>`; its value model starts from
  that reward model, as in TRL's examples.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from alol.errors import AlolError
from alol.rewards import Reward, score
from alol.rewards.classifier import ClassifierReward
from alol.rewards.scoring import refuse_a_missing_eos_component

TRL_RANGE = (1, 12)
"""The TRL release the online methods are built and tested against."""
INSTALL = 'pip install -e ".[online]"  (TRL 1.12: PPO, RLOO and GRPO)'


def require_trl() -> None:
    """Refuse without TRL, or with a TRL whose trainers alol was not built against."""
    try:
        version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        raise AlolError(
            f"online RL (ppo, rloo, grpo) runs through TRL, which is not installed: {INSTALL}"
        ) from None
    if tuple(int(part) for part in version.split(".")[:2]) != TRL_RANGE:
        raise AlolError(
            f"online RL is built against TRL {TRL_RANGE[0]}.{TRL_RANGE[1]}.x (the last release "
            f"with PPO), but TRL {version} is installed: {INSTALL}"
        )


@dataclass
class OnlineCost:
    """What the online run spent beyond what an offline objective does."""

    reward_calls: int = 0
    """Responses scored (an offline objective scores each training example once, before)."""
    generated_tokens: int = 0
    """Tokens the policy generated while training."""


class RewardFunctions:
    """An alol reward as TRL reward functions: one per component, each returning its column.

    TRL calls its reward functions one after another on the same batch; the first call scores
    every component and the others read the cached result.
    """

    def __init__(
        self,
        reward: Reward,
        tokenizer,
        probe: tuple[str, str],
        timeout: float | None = None,
        missing_eos_penalty: float | None = None,
    ):
        """`probe`, a (prompt, response) to score once: a Python function's components are
        known only from its output, and TRL needs one function per component up front.
        `missing_eos_penalty` adds the function `missing_eos`: −penalty for a completion whose
        token ids hold no EOS, which TRL's RLOO and GRPO cannot charge themselves."""
        self.reward = reward
        self.tokenizer = tokenizer
        self.timeout = timeout
        self.missing_eos_penalty = missing_eos_penalty
        self.cost = OnlineCost(reward_calls=1)
        score(reward, [probe[0]], [probe[1]], show_progress=False, timeout=timeout)
        if missing_eos_penalty:
            refuse_a_missing_eos_component(reward.components)
        self._key: str | None = None
        self._scores: list[dict[str, float]] = []

    @property
    def weights(self) -> list[float]:
        weights = getattr(self.reward, "weights", {})
        own = [float(weights.get(name, 1.0)) for name in self.reward.components]
        return own + ([1.0] if self.missing_eos_penalty else [])

    def functions(self) -> list:
        own = [self._component(name) for name in self.reward.components]
        return own + ([self.missing_eos] if self.missing_eos_penalty else [])

    def missing_eos(self, prompts: list[str], completion_ids: list, **_: Any) -> list[float]:
        eos = self.tokenizer.eos_token_id
        return [0.0 if eos in ids else -self.missing_eos_penalty for ids in completion_ids]

    def _component(self, name: str):
        def component(prompts: list[str], completions: list, **_: Any) -> list[float]:
            return [row[name] for row in self._scored(prompts, completions)]

        component.__name__ = name  # TRL logs rewards/<function name>/mean
        return component

    def _scored(self, prompts: list[str], completions: list) -> list[dict[str, float]]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        key = hashlib.sha256("\0".join(prompts + texts).encode()).hexdigest()
        if key != self._key:
            self._scores = score(
                self.reward, prompts, texts, show_progress=False, timeout=self.timeout
            )
            self._key = key
            self.cost.reward_calls += len(texts)
            self.cost.generated_tokens += sum(
                len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            )
        return self._scores


def ppo_reward_model(reward: Reward, policy_tokenizer):
    """The classifier a PPO run scores with: it must read the policy's token ids."""
    if not isinstance(reward, ClassifierReward):
        raise AlolError(
            "ppo needs a sequence-classifier reward model ({type: classifier, path: DIR} or one "
            "fitted by `alol reward-model`): TRL's PPO scores token ids, not text. For a Python "
            "or built-in reward, use rloo or grpo"
        )
    if reward.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        raise AlolError(
            f"ppo: the reward model {reward.name!r} has another tokenizer than the policy, but "
            "TRL's PPO feeds it the policy's token ids. Fit one on the policy's base model "
            "(`alol reward-model --reward-model <base model>`), or use rloo or grpo, which score text"
        )
    return reward.model
