"""PRO, Preference Ranking Optimization (Song et al., 2023): a listwise ranking loss over the
length-normalised log-probs of several ranked candidates, plus an SFT term on the best."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from alol.method.batches import ObjectiveOutput, RankedBatch, masked_mean

if TYPE_CHECKING:
    from alol.method.objectives import ObjectiveConfig


def _sort_by_reward(batch: RankedBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidates in descending reward order, padding slots last; padding rewards set to 0."""
    sort_key = batch.rewards.float().masked_fill(~batch.candidate_mask, -math.inf)
    order = sort_key.argsort(dim=-1, descending=True, stable=True)
    mask = batch.candidate_mask.gather(-1, order)
    logps = batch.logps.gather(-1, order)
    lengths = batch.lengths.gather(-1, order)
    rewards = batch.rewards.float().gather(-1, order).masked_fill(~mask, 0.0)
    return logps, lengths, rewards, mask


def pro_loss(batch: RankedBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """PRO, Preference Ranking Optimization (Song et al., 2023, Eq. 5 with reward temperatures).

    Per prompt, with its n candidates sorted so that R_1 ≥ … ≥ R_n and length-normalised
    scores s_i = log π_θ(y_i|x) / |y_i|:

        L_rank = Σ_{k=1}^{n−1} −log( exp(s_k·τ_k^k) / Σ_{i=k}^{n} exp(s_i·τ_k^i) )
        τ_k^i  = R_k − R_i  for i > k        (the inverse temperature 1/T_k^i)
        τ_k^k  = max_{i>k} τ_k^i             (so the best candidate gets the lowest temperature)
        loss   = L_rank + pro_sft_weight · (n−1)² · (−log π_θ(y_1|x))

    As in PRO's released code, the SFT term is the *summed* NLL of the best candidate and its
    weight grows with (n−1)²; the ranking terms are summed over k. With n = 2 the loss is
    −log σ((s_1 − s_2)(R_1 − R_2)) + pro_sft_weight · NLL(y_1). Padding slots
    (candidate_mask False) take part in no term; a prompt needs at least 2 candidates, which
    the collator checks on the host (here it would cost a device sync per step).
    """
    logps, lengths, rewards, mask = _sort_by_reward(batch)
    scores = (logps / lengths.clamp(min=1)).masked_fill(~mask, 0.0)

    num_candidates = logps.shape[-1]
    later = torch.ones(num_candidates, num_candidates, dtype=torch.bool, device=logps.device)
    later = later.triu(diagonal=1)  # later[k, i]: candidate i is ranked below candidate k
    diagonal = torch.eye(num_candidates, dtype=torch.bool, device=logps.device)
    # [B, k, i]: pairs (k, i) with i below k, both real candidates
    contrasted = later & mask[:, :, None] & mask[:, None, :]
    gaps = rewards[:, :, None] - rewards[:, None, :]
    top_gap = gaps.masked_fill(~contrasted, -math.inf).amax(-1)
    stage_active = contrasted.any(-1)  # [B, k]: candidate k has someone below it
    top_gap = torch.where(stage_active, top_gap, 0.0)
    inverse_temperatures = torch.where(contrasted, gaps, 0.0) + diagonal * top_gap[:, :, None]

    logits = (scores[:, None, :] * inverse_temperatures).masked_fill(
        ~(contrasted | diagonal), -math.inf
    )
    stage_losses = logits.logsumexp(-1) - logits.diagonal(dim1=-2, dim2=-1)
    ranking_loss = torch.where(stage_active, stage_losses, 0.0).sum(-1)

    num_real = mask.sum(-1).to(logps.dtype)
    sft_loss = config.pro_sft_weight * (num_real - 1) ** 2 * -logps[:, 0]

    metrics = {
        "logps/mean": masked_mean(batch.logps.detach(), batch.candidate_mask),
        "reward/mean": masked_mean(batch.rewards.detach().float(), batch.candidate_mask),
        "loss/ranking": ranking_loss.detach().mean(),
        "loss/sft": sft_loss.detach().mean(),
    }
    return ObjectiveOutput((ranking_loss + sft_loss).mean(), metrics)
