"""KTO (Ethayarajh et al., 2024), as Hugging Face TRL's `KTOTrainer` computes it: the loss, the
desirable/undesirable labels of alol's records, and the mismatched pairs of its KL estimate.

KTO trains on single responses marked desirable or undesirable. Its implied reward is
r = β·(log π_θ(y|x) − log π_ref(y|x)); its reference point z0 is a KL estimate, the mean of
log π_θ(y'|x) − log π_ref(y'|x) over *mismatched* pairs (x, y') of the batch (each prompt with
another example's completion), detached and clamped at 0:

    desirable:   loss = w_D · (1 − σ(r − β·z0))
    undesirable: loss = w_U · (1 − σ(β·z0 − r))

As in TRL, the mismatched completion of row i is the completion of row i − 1 of the same
batch (the first row takes the last's), so the KL completions of a batch are its own
completions. TRL gets such batches by sampling the data in order; alol cuts a seeded shuffle of
the examples into blocks of one batch each (`alol.data.examples.kl_blocks`) and samples whole blocks
(`alol.method.sampling.BlockSampler`), so the pairing holds with shuffled data too. π_ref's log-probs of both the completions and the
mismatched pairs come from the one precompute pass, so no reference model is kept in memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from alol.data.conversions import to_preference_records, to_reward_records
from alol.data.records import PreferenceRecord, Prompt, RankedRecord, RewardRecord
from alol.errors import AlolError
from alol.method.batches import ObjectiveOutput, UnpairedBatch, masked_mean

if TYPE_CHECKING:
    from alol.method.objectives import ObjectiveConfig

logger = logging.getLogger(__name__)

# --- the loss ---------------------------------------------------------------------------


def kto_loss(batch: UnpairedBatch, config: ObjectiveConfig) -> ObjectiveOutput:
    """The KTO loss (module docstring) with β = `config.beta` and the class weights of
    `config`, the mean over the batch's examples, with TRL's metrics: `rewards/chosen`,
    `rewards/rejected` (mean β·log-ratio of each class), `rewards/margins`, `logps/chosen`,
    `logps/rejected` and `kl`. A class absent from the batch reports NaN."""
    beta = config.beta
    desirable_weight, undesirable_weight = config.desirable_weight, config.undesirable_weight
    kl = batch.kl if batch.kl is not None else (batch.kl_logps - batch.ref_kl_logps).mean()
    kl = kl.detach().clamp(min=0)
    log_ratios = batch.logps - batch.ref_logps.detach()
    desirable = batch.labels.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (log_ratios - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - log_ratios))),
    )
    rewards = beta * log_ratios.detach()
    chosen = _class_mean(rewards, desirable)
    rejected = _class_mean(rewards, ~desirable)
    metrics = {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "logps/chosen": _class_mean(batch.logps.detach(), desirable),
        "logps/rejected": _class_mean(batch.logps.detach(), ~desirable),
        "kl": kl,
    }
    return ObjectiveOutput(losses.mean(), metrics)


def _class_mean(values: Tensor, members: Tensor) -> Tensor:
    """The mean over one class's rows; NaN when the batch has none, which the trainer's
    averages leave out (TRL logs a class's metrics only when the batch has it)."""
    return torch.where(members.any(), masked_mean(values, members), torch.nan)


# --- the labels ----------------------------------------------------------------------


def labels_above(rewards: np.ndarray, threshold: float | None) -> tuple[np.ndarray, float]:
    """Desirable: a reward above `threshold` (default: the median)."""
    threshold = float(np.median(rewards)) if threshold is None else threshold
    return rewards > threshold, threshold


def check_classes(labels: np.ndarray, rule: str) -> None:
    """One class only gives KTO nothing to contrast: refused, saying what to change."""
    desirable = int(labels.sum())
    if desirable in (0, len(labels)):
        kind = "desirable" if desirable else "undesirable"
        raise AlolError(
            f"KTO needs desirable and undesirable examples, but all {len(labels)} are {kind} "
            f"(kto_label {rule!r}); set --kto-threshold, choose another --kto-label, or give "
            "data with both kinds"
        )


def report_balance(labels: np.ndarray, desirable_weight: float, undesirable_weight: float) -> None:
    """Log the class balance, and warn, as TRL does, when neither weight lies in the range
    the KTO paper recommends for it (its Eq. 8)."""
    desirable = max(int(labels.sum()), 1)
    undesirable = max(len(labels) - int(labels.sum()), 1)
    logger.info(
        "kto: %d desirable and %d undesirable examples (%.0f%% desirable)",
        int(labels.sum()),
        len(labels) - int(labels.sum()),
        100 * labels.mean(),
    )
    if desirable == undesirable:
        return
    desirable_range = (
        round(undesirable * undesirable_weight / desirable, 2),
        round(undesirable * undesirable_weight / desirable * 1.33, 2),
    )
    undesirable_range = (
        round(desirable * desirable_weight / undesirable / 1.33, 2),
        round(desirable * desirable_weight / undesirable, 2),
    )
    if not (
        desirable_range[0] <= desirable_weight <= desirable_range[1]
        or undesirable_range[0] <= undesirable_weight <= undesirable_range[1]
    ):
        logger.warning(
            "kto: %d desirable against %d undesirable examples, and the weights are outside the "
            "range the KTO paper recommends: set either --desirable-weight in [%g, %g] or "
            "--undesirable-weight in [%g, %g] (not both)",
            desirable,
            undesirable,
            *desirable_range,
            *undesirable_range,
        )


def kto_rows(
    records: list,
    rule: str,
    threshold: float | None = None,
    advantages: np.ndarray | None = None,
) -> list[tuple[Prompt, str, bool]]:
    """(prompt, response, desirable) rows from training records, by `rule` (`alol.kto_settings`):

    - 'auto': preference pairs and ranked records are split as TRL's
      `unpair_preference_dataset` splits pairs (per chunk of 1,000 pairs, every chosen response
      desirable, then every rejected one undesirable); records with TRL's unpaired `label` keep
      it; scalar rewards follow 'reward_above';
    - 'reward_above': every response, desirable when its reward exceeds `threshold`;
    - 'advantage_positive': reward records aligned with `advantages` (A = R − V(x)), desirable
      when A > 0.
    """
    if rule == "advantage_positive":
        if advantages is None or len(advantages) != len(records):
            raise AlolError("kto_label 'advantage_positive' needs A = R − V(x) for every record")
        return _labelled(records, np.asarray(advantages) > 0, rule)
    if rule == "auto" and any(isinstance(r, PreferenceRecord | RankedRecord) for r in records):
        return _unpaired(to_preference_records(records))
    pointwise = to_reward_records(records)
    if rule == "auto" and all(r.label is not None for r in pointwise):
        return _labelled(pointwise, np.array([bool(r.label) for r in pointwise]), "label")
    rewards = np.array([np.nan if r.total_reward is None else r.total_reward for r in pointwise])
    if np.isnan(rewards).any():
        raise AlolError(
            "kto_label 'reward_above' needs a reward on every record: give the data a 'reward' "
            "field, a reward function (--reward), or TRL's unpaired 'label'"
        )
    labels, used = labels_above(rewards, threshold)
    logger.info("kto: desirable = reward above %.4g", used)
    return _labelled(pointwise, labels, rule)


UNPAIR_CHUNK = 1000
"""Pairs per chunk when pairs are split, as `datasets.map` batches TRL's unpairing."""


def _unpaired(pairs: list[PreferenceRecord]) -> list[tuple[Prompt, str, bool]]:
    rows: list[tuple[Prompt, str, bool]] = []
    for start in range(0, len(pairs), UNPAIR_CHUNK):
        chunk = pairs[start : start + UNPAIR_CHUNK]
        rows += [(p.prompt, p.chosen, True) for p in chunk]
        rows += [(p.prompt, p.rejected, False) for p in chunk]
    if not rows:
        raise AlolError("kto: the preference data yields no pairs to split")
    return rows


def _labelled(
    records: list[RewardRecord], labels: np.ndarray, rule: str
) -> list[tuple[Prompt, str, bool]]:
    check_classes(labels, rule)
    return [(r.prompt, r.response, bool(label)) for r, label in zip(records, labels, strict=True)]
