"""The batches the objectives read: log-probs that already carry the policy's gradient, and the
precomputed reference, reward and advantage tensors (conventions in docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alol.models.logprobs import sequence_logprobs


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` where `mask` is set (0 where nothing is): the losses' averages."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _check_shape(name: str, tensor: Tensor | None, shape: torch.Size) -> None:
    if tensor is not None and tensor.shape != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}.")


@dataclass
class SequenceBatch:
    """Inputs of the pointwise objectives: one (prompt, response) per row."""

    token_logps: Tensor
    """[B, L] policy log-prob of each token (with grad), 0 off-response."""
    response_mask: Tensor
    """[B, L] bool, True on response tokens (EOS included)."""
    ref_token_logps: Tensor | None = None
    """[B, L] reference log-probs, precomputed (no grad), 0 off-response."""
    rewards: Tensor | None = None
    """[B] sequence reward R(x, y)."""
    advantages: Tensor | None = None
    """[B] advantage A = R − V(x)."""

    def __post_init__(self) -> None:
        _check_shape("response_mask", self.response_mask, self.token_logps.shape)
        _check_shape("ref_token_logps", self.ref_token_logps, self.token_logps.shape)
        _check_shape("rewards", self.rewards, self.token_logps.shape[:1])
        _check_shape("advantages", self.advantages, self.token_logps.shape[:1])


@dataclass
class PairBatch:
    """Inputs of DPO: summed response log-probs of the chosen and rejected response per pair."""

    chosen_logps: Tensor
    """[B] policy log π_θ(y_w|x), with grad."""
    rejected_logps: Tensor
    """[B] policy log π_θ(y_l|x), with grad."""
    ref_chosen_logps: Tensor | None = None
    """[B] reference log π_ref(y_w|x), precomputed."""
    ref_rejected_logps: Tensor | None = None
    """[B] reference log π_ref(y_l|x), precomputed."""

    def __post_init__(self) -> None:
        for name in ("rejected_logps", "ref_chosen_logps", "ref_rejected_logps"):
            _check_shape(name, getattr(self, name), self.chosen_logps.shape)


@dataclass
class RankedBatch:
    """Inputs of PRO: K candidate responses per prompt, in any order."""

    logps: Tensor
    """[B, K] summed response log-probs, with grad."""
    lengths: Tensor
    """[B, K] response token counts (EOS included)."""
    rewards: Tensor
    """[B, K] reward of each candidate; higher is better."""
    candidate_mask: Tensor
    """[B, K] bool, False for the padding slots of prompts with fewer than K candidates."""

    def __post_init__(self) -> None:
        for name in ("lengths", "rewards", "candidate_mask"):
            _check_shape(name, getattr(self, name), self.logps.shape)


@dataclass
class UnpairedBatch:
    """Inputs of KTO: one labelled completion per row, and the row's mismatched pair (`alol.method.kto`)."""

    logps: Tensor
    """[B] policy log π_θ(y|x), with grad."""
    kl_logps: Tensor
    """[B] policy log π_θ(y'|x) of the mismatched pairs (no grad needed)."""
    labels: Tensor
    """[B] bool, True for a desirable completion."""
    ref_logps: Tensor
    """[B] π_ref's log-probs of the completions, precomputed."""
    ref_kl_logps: Tensor
    """[B] π_ref's log-probs of the mismatched pairs, precomputed."""
    kl: Tensor | None = None
    """The KL estimate averaged over every process's batch (TRL gathers it); None: this batch's."""


@dataclass
class ObjectiveOutput:
    loss: Tensor
    """Scalar: mean of the per-example losses, so gradient accumulation averages correctly."""
    metrics: dict[str, Tensor]
    """Detached scalars named as TRL names them (docs/method.md lists them). Still tensors: calling .item()
    here would force a device sync every step, so the caller decides when to read them."""


def objective_batch(
    family: str,
    token_logps: Tensor,
    inputs: dict[str, Tensor],
    mismatched_logps: Tensor | None = None,
    kl: Tensor | None = None,
) -> SequenceBatch | PairBatch | RankedBatch | UnpairedBatch:
    """The policy's token log-probs of a collated batch (`alol.data.collate.Collator`), shaped into
    the batch its objective `family` reads; KTO's also take the log-probs of the mismatched
    pairs and, under several processes, their gathered KL estimate."""
    mask = inputs["response_mask"]
    if family == "sequence":
        return SequenceBatch(
            token_logps=token_logps,
            response_mask=mask,
            ref_token_logps=inputs.get("ref_token_logps"),
            rewards=inputs.get("reward"),
            advantages=inputs.get("advantage"),
        )
    logps = sequence_logprobs(token_logps, mask)
    if family == "unpaired":
        return UnpairedBatch(
            logps=logps,
            kl_logps=mismatched_logps,
            labels=inputs["label"],
            ref_logps=inputs["ref_logp"],
            ref_kl_logps=inputs["ref_mismatched_logp"],
            kl=kl,
        )
    if family == "pair":
        chosen, rejected = logps.chunk(2)
        return PairBatch(
            chosen_logps=chosen,
            rejected_logps=rejected,
            ref_chosen_logps=inputs.get("ref_chosen_logp"),
            ref_rejected_logps=inputs.get("ref_rejected_logp"),
        )
    rewards = inputs["rewards"]
    return RankedBatch(
        logps=logps.view(rewards.shape),
        lengths=mask.sum(-1).view(rewards.shape),
        rewards=rewards,
        candidate_mask=inputs["candidate_mask"],
    )
