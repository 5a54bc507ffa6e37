"""The batches the objectives read: log-probs that already carry the policy's gradient, and the
precomputed reference, reward and advantage tensors (conventions in docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
class ObjectiveOutput:
    loss: Tensor
    """Scalar: mean of the per-example losses, so gradient accumulation averages correctly."""
    metrics: dict[str, Tensor]
    """Detached scalars named as TRL names them (docs/method.md lists them). Still tensors: calling .item()
    here would force a device sync every step, so the caller decides when to read them."""
