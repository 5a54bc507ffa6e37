"""Fitting the value head: the frozen reference runs once over the value prompts, its hidden
states stay on the CPU, and the head trains for many epochs at the cost of a tiny attention
layer per step; the epoch with the lowest held-out MSE is kept."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from torch import Tensor, nn
from tqdm.auto import tqdm

from alol.data.collate import pad_token_rows
from alol.data.settings import RecordSettings
from alol.data.splits import held_out_count, split_by_prompt
from alol.data.tokenize import encode_prompt, pad_token_id_of
from alol.distributed import gather_in_order
from alol.method.value_head import ValueHead, device_of, eval_mode
from alol.models.dtypes import DTYPES
from alol.models.value_io import ValueConfig
from alol.reports.metrics import (
    explained_variance,
    explained_variance_interval,
    pearson,
    spearman,
)

logger = logging.getLogger(__name__)

MIN_HELDOUT_PROMPTS = 10
"""Fewer held-out prompts give no meaningful correlation or explained variance."""


def _backbone(model: nn.Module) -> nn.Module:
    """The transformer body without the LM head (skips the [L, vocab] logits we don't need).

    A peft model is unwrapped to its base model; its adapters stay in place and active.
    """
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return model.base_model


@torch.no_grad()
def _hidden_state_batches(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_prompt_length: int,
    show_progress: bool = False,
) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Yield (prompt indices, hidden states [B, L, H], attention mask [B, L]) batches.

    Prompts are sorted longest first, so batches carry little padding and an out-of-memory
    error shows up on the first batch rather than the last. Right padding keeps every real
    token at its usual position, so a causal model computes the same states as unpadded.
    """
    token_ids = [encode_prompt(tokenizer, p, max_prompt_length) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    pad_id = pad_token_id_of(tokenizer)
    backbone = _backbone(model)
    device = device_of(model)
    starts = range(0, len(order), batch_size)
    with eval_mode(model):
        for start in tqdm(starts, desc="value features", disable=not show_progress):
            indices = order[start : start + batch_size]
            input_ids, attention_mask = pad_token_rows([token_ids[i] for i in indices], pad_id)
            attention_mask = attention_mask.to(device)
            outputs = backbone(
                input_ids=input_ids.to(device), attention_mask=attention_mask, use_cache=False
            )
            yield indices, outputs.last_hidden_state, attention_mask


def prompt_features(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    batch_size: int = 16,
    max_prompt_length: int = RecordSettings.max_prompt_length,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Each prompt's last-layer hidden states, [prompt_tokens, H] on the CPU, in prompt order.

    Memory cost: prompt_tokens × H × bytes(dtype) per prompt (a 640-token prompt of a
    4096-wide model is 5 MiB in float16).
    """
    features: list[Tensor | None] = [None] * len(prompts)
    for indices, hidden, mask in _hidden_state_batches(
        model, tokenizer, prompts, batch_size, max_prompt_length
    ):
        lengths = mask.sum(dim=1).tolist()
        hidden = hidden.to("cpu", dtype)
        for row, (index, length) in enumerate(zip(indices, lengths, strict=True)):
            features[index] = hidden[row, :length].clone()
    return features


def _pad_features(features: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack [len_i, H] features into [B, L, H] float32 (zeros after each row) and a mask."""
    length = max(f.shape[0] for f in features)
    hidden = torch.zeros(len(features), length, features[0].shape[1])
    mask = torch.zeros(len(features), length, dtype=torch.long)
    for i, f in enumerate(features):
        hidden[i, : f.shape[0]] = f.float()
        mask[i, : f.shape[0]] = 1
    return hidden, mask


def split_holdout(
    prompts: list[str], holdout_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) indices, split by prompt (`alol.data.splits`): all samples of a
    prompt (k sampled responses, or several stored ones) fall on the same side, so the held-out
    MSE is measured on prompts the head never saw. At least one prompt is held out when there
    are 2 or more and the fraction is positive, and at least one is kept."""
    held_out = held_out_count(len(set(prompts)), holdout_fraction)
    return split_by_prompt(prompts, held_out, seed)


def _batches(indices: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


@torch.no_grad()
def _predict_features(
    head: ValueHead, features: list[Tensor], indices: list[int], batch_size: int
) -> Tensor:
    device = device_of(head)
    predictions = []
    with eval_mode(head):
        for batch in _batches(indices, batch_size):
            hidden, mask = _pad_features([features[i] for i in batch])
            predictions.append(head(hidden.to(device), mask.to(device)).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0)


def _mse(
    head: ValueHead, features: list[Tensor], targets: Tensor, indices: list[int], batch_size: int
) -> float:
    if not indices:
        return float("nan")
    predictions = _predict_features(head, features, indices, batch_size)
    return torch.mean((predictions - targets[indices]) ** 2).item()


def _train_one_epoch(
    head: ValueHead,
    optimizer: torch.optim.Optimizer,
    features: list[Tensor],
    targets: Tensor,
    train_indices: list[int],
    batch_size: int,
    generator: torch.Generator,
) -> None:
    device = device_of(head)
    head.train()
    shuffled = [train_indices[i] for i in torch.randperm(len(train_indices), generator=generator)]
    for batch in _batches(shuffled, batch_size):
        hidden, mask = _pad_features([features[i] for i in batch])
        predictions = head(hidden.to(device), mask.to(device))
        loss = nn.functional.mse_loss(predictions, targets[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _check_fit_inputs(prompts: list[str], targets: list[float]) -> None:
    if len(prompts) != len(targets):
        raise ValueError(
            f"got {len(prompts)} prompts but {len(targets)} targets; pass one target per prompt"
        )
    if not prompts:
        raise ValueError("no value data: pass at least one (prompt, target) pair")
    for i, target in enumerate(targets):
        if not math.isfinite(target):
            raise ValueError(f"target {i} is {target}; every value target must be a finite number")


def head_bound(max_value: float | str | None, targets: list[float]) -> float | None:
    """The head's output bound for these targets: `sigmoid · bound`, or None (unbounded).

    "auto" bounds the head to (0, 1) when every target lies in [0, 1] (sigmoid rewards, the
    paper's setting) and leaves it unbounded otherwise. A given bound must cover the targets:
    a head capped below the rewards would fit every advantage too high.
    """
    low, high = min(targets), max(targets)
    if max_value == "auto":
        return 1.0 if low >= 0.0 and high <= 1.0 else None
    if max_value is not None and not 0.0 <= low <= high <= max_value:
        raise ValueError(
            f"the value targets (rewards) span [{low:.4g}, {high:.4g}], but the value head's "
            f"output is bounded to (0, {max_value:g}), so V cannot fit them; set value_max to "
            f"at least {high:.4g} for rewards in [0, {high:.4g}], or to 'none' (or 'auto') for "
            "an unbounded head"
        )
    return max_value


def fit_warnings(report: dict[str, Any]) -> list[str]:
    """What makes a fit hard to trust, in plain words (empty when nothing does)."""
    warnings = []
    if report["n_heldout_prompts"] < MIN_HELDOUT_PROMPTS:
        warnings.append(
            f"only {report['n_heldout_prompts']} held-out prompts: too few to judge the fit "
            f"(Pearson and explained variance need ~{MIN_HELDOUT_PROMPTS}); give more "
            "validation prompts (--val-data, or a larger --val-fraction)"
        )
    if report["targets_constant"]:
        warnings.append(
            "every value target (reward) is the same, so V(x) is that constant: A = R − V then "
            "only shifts the rewards. Legitimate, but the value head learns nothing from prompts"
        )
    elif report["explained_variance"] is not None and report["explained_variance"] <= 0:
        warnings.append(
            f"held-out explained variance is {report['explained_variance']:.2f}: V(x) predicts "
            "π_ref's reward no better than a constant, so A = R − V(x) mostly measures R. More "
            "validation prompts (or --value-samples k > 1) usually help"
        )
    elif _interval_reaches_zero(report):
        low, high = report["explained_variance_interval"]
        warnings.append(
            f"held-out explained variance is {report['explained_variance']:.2f}, but its 95% "
            f"interval over the {report['n_heldout_prompts']} held-out prompts runs from "
            f"{low:.2f} to {high:.2f}: V(x) may predict π_ref's reward no better than a "
            "constant, and then A = R − V(x) mostly measures R. More validation prompts "
            "narrow it (or --value-estimate per_prompt gives each training prompt its own)"
        )
    return warnings


def _interval_reaches_zero(report: dict[str, Any]) -> bool:
    interval = report.get("explained_variance_interval")
    return interval is not None and interval[0] <= 0


def _heldout_interval(
    predictions: np.ndarray, targets: np.ndarray, prompts: list[str]
) -> tuple[float, float] | None:
    """The explained variance's 95% interval over held-out prompts, or None with too few of
    them: resampling eight prompts gives an interval such as −314.92 to −0.05, which says
    nothing the count does not already say."""
    if len(set(prompts)) < MIN_HELDOUT_PROMPTS:
        return None
    return explained_variance_interval(predictions, targets, prompts)


def fit_value_head(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    targets: list[float],
    config: ValueConfig | None = None,
) -> tuple[ValueHead, dict[str, Any]]:
    """Fit V(x) ≈ target on the frozen `model`'s prompt hidden states.

    `prompts` are rendered prompt strings; `targets` are the rewards of the reference's own
    responses to them. Returns the head from the epoch with the lowest held-out MSE (training
    MSE when nothing is held out), in eval mode on the model's device, and a report of the fit.
    """
    config = config or ValueConfig()
    _check_fit_inputs(prompts, targets)
    max_value = head_bound(config.max_value, targets)
    # Under several processes each runs the reference on its share of the prompts; all of them
    # then fit the same head on the gathered features (cheap), and the caller saves one.
    features = gather_in_order(
        len(prompts),
        lambda indices: prompt_features(
            model,
            tokenizer,
            [prompts[i] for i in indices],
            config.prompt_batch_size,
            config.max_prompt_length,
            DTYPES[config.feature_dtype],
        ),
    )
    feature_bytes = sum(f.numel() * f.element_size() for f in features)
    logger.debug(
        "cached reference features of %d prompts (%.1f MiB on CPU)",
        len(prompts),
        feature_bytes / 2**20,
    )

    target_tensor = torch.tensor(targets, dtype=torch.float32)
    train_indices, heldout_indices = split_holdout(prompts, config.holdout_fraction, config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = ValueHead(features[0].shape[1], config.num_heads, max_value, config.dropout)
    head.start_at(target_tensor[train_indices].mean().item())
    head.to(device_of(model))
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)

    train_curve: list[float] = []
    heldout_curve: list[float] = []
    best_epoch, best_score, best_state = 0, math.inf, copy.deepcopy(head.state_dict())
    for epoch in range(1, config.epochs + 1):
        _train_one_epoch(
            head,
            optimizer,
            features,
            target_tensor,
            train_indices,
            config.prompt_batch_size,
            generator,
        )
        train_curve.append(
            _mse(head, features, target_tensor, train_indices, config.prompt_batch_size)
        )
        heldout_curve.append(
            _mse(head, features, target_tensor, heldout_indices, config.prompt_batch_size)
        )
        logger.debug(
            "value epoch %d/%d: train MSE %.5f, held-out MSE %.5f",
            epoch,
            config.epochs,
            train_curve[-1],
            heldout_curve[-1],
        )
        score = heldout_curve[-1] if heldout_indices else train_curve[-1]
        if score < best_score:
            best_epoch, best_score, best_state = epoch, score, copy.deepcopy(head.state_dict())
    if best_epoch == 0:
        raise FloatingPointError(
            "the value head's MSE was not finite in any epoch; lower ValueConfig.learning_rate"
        )

    head.load_state_dict(best_state)
    head.eval()
    heldout_predictions = _predict_features(
        head, features, heldout_indices, config.prompt_batch_size
    ).numpy()
    heldout_targets = target_tensor[heldout_indices].numpy()
    heldout_prompts = [prompts[i] for i in heldout_indices]
    report = {
        "train_mse": train_curve[best_epoch - 1],
        "heldout_mse": heldout_curve[best_epoch - 1],
        "best_epoch": best_epoch,
        "pearson": pearson(heldout_predictions, heldout_targets),
        "spearman": spearman(heldout_predictions, heldout_targets),
        "explained_variance": explained_variance(heldout_predictions, heldout_targets),
        "explained_variance_interval": _heldout_interval(
            heldout_predictions, heldout_targets, heldout_prompts
        ),
        "n_train": len(train_indices),
        "n_heldout": len(heldout_indices),
        "n_heldout_prompts": len(set(heldout_prompts)),
        "targets_constant": min(targets) == max(targets),
        "max_value": max_value,
        "train_mse_per_epoch": train_curve,
        "heldout_mse_per_epoch": heldout_curve,
        "heldout_indices": heldout_indices,
        "heldout_predictions": heldout_predictions.tolist(),
        "heldout_targets": heldout_targets.tolist(),
        "config": asdict(config),
    }
    report["warnings"] = fit_warnings(report)
    for warning in report["warnings"]:
        logger.warning("value head: %s", warning)
    return head, report


def predict_values(
    model: nn.Module,
    tokenizer,
    head: ValueHead,
    prompts: list[str],
    batch_size: int = 16,
    max_prompt_length: int = RecordSettings.max_prompt_length,
    show_progress: bool = False,
) -> list[float]:
    """V(x) for each rendered prompt, in order; deterministic (both modules in eval mode)."""
    values = [0.0] * len(prompts)
    head_device = device_of(head)
    with eval_mode(head), torch.no_grad():
        for indices, hidden, mask in _hidden_state_batches(
            model, tokenizer, prompts, batch_size, max_prompt_length, show_progress
        ):
            batch_values = head(hidden.to(head_device, torch.float32), mask.to(head_device))
            for index, value in zip(indices, batch_values.tolist(), strict=True):
                values[index] = value
    return values
