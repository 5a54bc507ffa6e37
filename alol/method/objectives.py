"""Every training objective as a pure function of tensors, and the registry that names them.

Each loss takes log-probs that already carry the policy's gradient (see docs/architecture.md
for the tensor conventions) and returns the batch loss (mean over examples) plus detached
metrics. No loss here runs a model, so each one is exactly the formula in docs/method.md and
can be tested with hand-computed numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from alol.choices import OBJECTIVE_SUMMARIES
from alol.method.batches import ObjectiveOutput, PairBatch, SequenceBatch, masked_mean
from alol.method.config import ObjectiveConfig
from alol.method.kto import kto_loss
from alol.method.pro import pro_loss
from alol.method.sampling import Sampling
from alol.models.logprobs import sequence_logprobs

# With clip=None the weight exp(log π_θ − log π_ref) is not clipped, but a log-ratio of ±1000
# would overflow exp() to inf (and inf · 0 = NaN). Clamping the log-ratio to ±20 keeps the weight
# in [2e-9, 5e8]: finite in float32 and bfloat16, and far beyond any weight that still trains.
MAX_ABS_LOG_RATIO = 20.0


# ---------------------------------------------------------------------------------------------
# Building blocks


def _log_ratio_bounds(clip: float | None) -> tuple[float, float]:
    """[1−ε, 1+ε] in log space; ±MAX_ABS_LOG_RATIO when clipping is off."""
    if clip is None:
        return -MAX_ABS_LOG_RATIO, MAX_ABS_LOG_RATIO
    return math.log1p(-clip), math.log1p(clip)


def importance_weights(
    logps: Tensor, ref_logps: Tensor, clip: float | None
) -> tuple[Tensor, Tensor]:
    """Detached `w = clamp(π_θ/π_ref, 1−ε, 1+ε)` and a bool tensor marking the clipped entries.

    The ratio is clamped in log space before exp(), so no ratio overflows. This clamps a
    constant weight; it is not PPO's min(ratio·A, clip(ratio)·A) surrogate, and no gradient
    flows through w. Works elementwise: on [B] sequence log-probs for one weight per response,
    on [B, L] token log-probs for a_lol_seq's single-step per-token ratios.
    """
    log_ratio = (logps - ref_logps).detach()
    low, high = _log_ratio_bounds(clip)
    clipped = (log_ratio < low) | (log_ratio > high)
    return log_ratio.clamp(low, high).exp(), clipped


def _require(value: Tensor | None, field: str, objective: str, hint: str) -> Tensor:
    if value is None:
        raise ValueError(f"Objective '{objective}' needs batch.{field}, but it is None: {hint}")
    return value


_NEEDS_REFERENCE = "precompute reference log-probs first (`alol advantage`)."
_NEEDS_REWARD = "give the data a 'reward' field or a reward function to score it."
_NEEDS_ADVANTAGE = "precompute advantages first (`alol advantage`)."


def _pointwise_metrics(batch: SequenceBatch, logps: Tensor) -> dict[str, Tensor]:
    metrics = {"logps/mean": logps.detach().mean()}
    if batch.rewards is not None:
        metrics["reward/mean"] = batch.rewards.detach().float().mean()
    if batch.advantages is not None:
        metrics["advantage/mean"] = batch.advantages.detach().float().mean()
    return metrics


def _weight_metrics(
    weights: Tensor, clipped: Tensor, mask: Tensor | None = None
) -> dict[str, Tensor]:
    if mask is None:
        mask = torch.ones_like(clipped)
    return {
        "importance_weight/mean": masked_mean(weights, mask),
        "importance_weight/clip_frac": masked_mean(clipped.float(), mask),
    }


# ---------------------------------------------------------------------------------------------
# Pointwise objectives: one (prompt, response) per row


def nll_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`−log π_θ(y|x)`: behaviour cloning, and how π_ref itself is trained."""
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    return ObjectiveOutput((-logps).mean(), _pointwise_metrics(batch, logps))


def wbc_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`R · −log π_θ(y|x)`: reward-weighted behaviour cloning ("weighted SFT")."""
    rewards = _require(batch.rewards, "rewards", "wbc", _NEEDS_REWARD)
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    return ObjectiveOutput((rewards * -logps).mean(), _pointwise_metrics(batch, logps))


def r_gold_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`R · Σ_t sg(max(π_θ(y_t|·), floor)) · −log π_θ(y_t|·)`: GOLD with a sequence reward.

    Pang & He (2021) weight each token by its own (detached) probability, floored so that
    tokens the policy finds unlikely still get some gradient.
    """
    rewards = _require(batch.rewards, "rewards", "r_gold", _NEEDS_REWARD)
    token_weights = batch.token_logps.detach().exp().clamp(min=config.gold_floor)
    weighted_nll = (token_weights * -batch.token_logps * batch.response_mask).sum(-1)
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    return ObjectiveOutput((rewards * weighted_nll).mean(), _pointwise_metrics(batch, logps))


def r_lol_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`R · sg(w) · −log π_θ(y|x)`: reward-weighted, importance-weighted policy gradient."""
    rewards = _require(batch.rewards, "rewards", "r_lol", _NEEDS_REWARD)
    ref_token_logps = _require(batch.ref_token_logps, "ref_token_logps", "r_lol", _NEEDS_REFERENCE)
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    ref_logps = sequence_logprobs(ref_token_logps, batch.response_mask)
    weights, clipped = importance_weights(logps, ref_logps, config.clip)
    loss = (rewards * weights * -logps).mean()
    return ObjectiveOutput(
        loss, _pointwise_metrics(batch, logps) | _weight_metrics(weights, clipped)
    )


def _positive_advantages(batch: SequenceBatch, objective: str) -> Tensor:
    """max(A, 0): examples with A ≤ 0 get zero weight, hence zero gradient."""
    return _require(batch.advantages, "advantages", objective, _NEEDS_ADVANTAGE).clamp(min=0)


def a_lol_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`max(A,0) · sg(w) · −log π_θ(y|x)`: A-LoL, one sequence-level importance weight."""
    advantages = _positive_advantages(batch, "a_lol")
    ref_token_logps = _require(batch.ref_token_logps, "ref_token_logps", "a_lol", _NEEDS_REFERENCE)
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    ref_logps = sequence_logprobs(ref_token_logps, batch.response_mask)
    weights, clipped = importance_weights(logps, ref_logps, config.clip)
    loss = (advantages * weights * -logps).mean()
    return ObjectiveOutput(
        loss, _pointwise_metrics(batch, logps) | _weight_metrics(weights, clipped)
    )


def a_lol_ref_free_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`max(A,0) · −log π_θ(y|x)`: A-LoL with the importance weight fixed to 1."""
    advantages = _positive_advantages(batch, "a_lol_ref_free")
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    return ObjectiveOutput((advantages * -logps).mean(), _pointwise_metrics(batch, logps))


def a_lol_seq_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`max(A,0) · Σ_t sg(w_t) · −log π_θ(y_t|·)`: A-LoL with a clipped weight per token.

    w_t is the single-step ratio π_θ(y_t|·)/π_ref(y_t|·), not a cumulative product over the
    prefix. Weight metrics average over response tokens.
    """
    advantages = _positive_advantages(batch, "a_lol_seq")
    ref_token_logps = _require(
        batch.ref_token_logps, "ref_token_logps", "a_lol_seq", _NEEDS_REFERENCE
    )
    token_weights, clipped = importance_weights(batch.token_logps, ref_token_logps, config.clip)
    weighted_nll = (token_weights * -batch.token_logps * batch.response_mask).sum(-1)
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    metrics = _pointwise_metrics(batch, logps) | _weight_metrics(
        token_weights, clipped, batch.response_mask
    )
    return ObjectiveOutput((advantages * weighted_nll).mean(), metrics)


def a_lol_kl_loss(batch: SequenceBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """`max(A,0) · −log π_θ(y|x) + β · (log π_θ(y|x) − sg(log π_ref(y|x)))`.

    The reference term has no gradient, so this trains exactly like `(max(A,0) − β) · NLL`:
    β lowers every example's weight, and an example with A < β is pushed *down*. The
    reference only shifts the reported loss value.
    """
    advantages = _positive_advantages(batch, "a_lol_kl")
    ref_token_logps = _require(
        batch.ref_token_logps, "ref_token_logps", "a_lol_kl", _NEEDS_REFERENCE
    )
    logps = sequence_logprobs(batch.token_logps, batch.response_mask)
    ref_logps = sequence_logprobs(ref_token_logps, batch.response_mask).detach()
    loss = (advantages * -logps + config.beta * (logps - ref_logps)).mean()
    return ObjectiveOutput(loss, _pointwise_metrics(batch, logps))


# ---------------------------------------------------------------------------------------------
# Preference objectives


def _dpo(
    batch: PairBatch, beta: float, ref_chosen: Tensor, ref_rejected: Tensor
) -> ObjectiveOutput:
    """`−log σ(β[(log π_w − log π_l) − (log ref_w − log ref_l)])`, with TRL's metrics."""
    chosen_rewards = beta * (batch.chosen_logps - ref_chosen)
    rejected_rewards = beta * (batch.rejected_logps - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": batch.chosen_logps.detach().mean(),
        "logps/rejected": batch.rejected_logps.detach().mean(),
    }
    return ObjectiveOutput(loss, metrics)


def dpo_loss(batch: PairBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """DPO (Rafailov et al., 2023) against the precomputed reference log-probs."""
    ref_chosen = _require(batch.ref_chosen_logps, "ref_chosen_logps", "dpo", _NEEDS_REFERENCE)
    ref_rejected = _require(batch.ref_rejected_logps, "ref_rejected_logps", "dpo", _NEEDS_REFERENCE)
    return _dpo(batch, config.beta, ref_chosen.detach(), ref_rejected.detach())


def dpo_ref_free_loss(batch: PairBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """DPO with the reference term set to 0; any reference log-probs in the batch are ignored."""
    zeros = torch.zeros_like(batch.chosen_logps)
    return _dpo(batch, config.beta, zeros, zeros)


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Objective:
    """What the trainer and the CLI need to know about an objective besides its formula."""

    name: str
    loss: Callable[[Any, ObjectiveConfig], ObjectiveOutput]
    data: Literal["sequence", "pair", "ranked", "unpaired"] = "sequence"
    """Which batch the loss takes: SequenceBatch, PairBatch, RankedBatch or UnpairedBatch."""
    needs_reference: bool = False
    """Needs precomputed reference log-probs."""
    needs_reward: bool = False
    needs_advantage: bool = False
    """Trains only on examples with A > 0 (the leftover lunch), drawn ∝ A by default."""
    hyperparameters: tuple[str, ...] = ()
    """The `ObjectiveConfig` fields the loss reads: only they reach its training run (and
    its fingerprint), so changing another objective's setting never retrains this one."""

    @property
    def summary(self) -> str:
        """One line for --help (`alol.choices`, which the command line reads without torch)."""
        return OBJECTIVE_SUMMARIES[self.name]

    @property
    def positive_advantage_only(self) -> bool:
        return self.needs_advantage

    @property
    def default_sampling(self) -> Sampling:
        """Pointwise reward objectives sample ∝ R (as the paper's baselines did), A-LoL ones
        ∝ A on A > 0; NLL and the comparative objectives uniformly."""
        if self.data != "sequence":
            return "uniform"
        return "advantage" if self.needs_advantage else "reward" if self.needs_reward else "uniform"


OBJECTIVES: dict[str, Objective] = {
    objective.name: objective
    for objective in (
        Objective("nll", nll_loss),
        Objective("wbc", wbc_loss, needs_reward=True),
        Objective(
            "r_gold",
            r_gold_loss,
            needs_reward=True,
            hyperparameters=("gold_floor",),
        ),
        Objective(
            "r_lol",
            r_lol_loss,
            needs_reference=True,
            needs_reward=True,
            hyperparameters=("clip",),
        ),
        Objective(
            "a_lol",
            a_lol_loss,
            needs_reference=True,
            needs_advantage=True,
            hyperparameters=("clip",),
        ),
        Objective(
            "a_lol_ref_free",
            a_lol_ref_free_loss,
            needs_advantage=True,
        ),
        Objective(
            "a_lol_seq",
            a_lol_seq_loss,
            needs_reference=True,
            needs_advantage=True,
            hyperparameters=("clip",),
        ),
        Objective(
            "a_lol_kl",
            a_lol_kl_loss,
            needs_reference=True,
            needs_advantage=True,
            hyperparameters=("beta",),
        ),
        Objective(
            "dpo",
            dpo_loss,
            data="pair",
            needs_reference=True,
            hyperparameters=("beta",),
        ),
        Objective(
            "dpo_ref_free",
            dpo_ref_free_loss,
            data="pair",
            hyperparameters=("beta",),
        ),
        Objective(
            "kto",
            kto_loss,
            data="unpaired",
            needs_reference=True,
            hyperparameters=("beta", "desirable_weight", "undesirable_weight"),
        ),
        Objective(
            "pro",
            pro_loss,
            data="ranked",
            needs_reward=True,
            hyperparameters=("pro_sft_weight",),
        ),
    )
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(
            f"Unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}."
        ) from None
